"""Run the official MCP conformance suite against the fixture, directly and through the hub.

Starts the fixture upstream and a hub in front of it (empty prefix), each as
its own process on 127.0.0.1, runs every server scenario of
``@modelcontextprotocol/conformance`` 0.1.16 (the session era) and the
2026-07-28 requirements of 0.2.0-alpha.12 against both, and compares: every
scenario that passes directly must pass through the hub (for 2026-07-28,
except the differences listed with their reasons), and the hub's expected
failures may name only scenarios that also fail directly.

The fixture speaks both eras, so the hub speaks the session era to it (its
default). The 2026-07-28 requirements also run through a second hub told to
speak 2026-07-28 to its fixture (``"protocol": "2026-07-28"``): the first
shows the bridge from a 2026-07-28 client to a session-era upstream, the
second the new era end to end.

Run by ``make conformance`` (which ``make test`` runs):
``python -m tests.conformance.run --node-modules .cache/node/node_modules``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.processes import free_port, running

HERE = Path(__file__).parent
EXPECTED_FAILURES = HERE / "expected-failures.yml"
DIFFERENCES_2026 = HERE / "differences-2026.yml"
DIFFERENCES_2026_MODERN = HERE / "differences-2026-modern.yml"
SUITE_DEADLINE = 600.0


def statuses(results: Path) -> dict[str, str]:
    """Scenario -> pass / warning / fail, from the suite's per-scenario checks.json files."""
    outcome: dict[str, str] = {}
    for checks in results.glob("*/checks.json"):
        scenario = re.sub(r"^server-|-\d{4}-\d\d-\d\dT.*$", "", checks.parent.name)
        seen = {check["status"] for check in json.loads(checks.read_text())}
        outcome[scenario] = "fail" if "FAILURE" in seen else "warning" if "WARNING" in seen else "pass"
    return outcome


def run_suite(cli: list[str], env: dict[str, str], url: str, results: Path, *extra: str) -> tuple[int, str]:
    command = [*cli, "server", "--url", url, "-o", str(results), *extra]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=SUITE_DEADLINE, check=False)
    return done.returncode, done.stdout + done.stderr


def compare(
    title: str, direct: dict[str, str], through: dict[str, str], minimum: int, allowed: frozenset[str] = frozenset()
) -> list[str]:
    """Print the two columns; the problems: a scenario that passes directly and not through the hub
    (unless ``allowed``, which must then still differ)."""
    problems = []
    if len(direct) < minimum:
        problems.append(f"{title}: only {len(direct)} scenarios ran directly")
    print(f"\n{title}")
    for scenario in sorted(direct):
        print(f"{scenario:46} direct: {direct[scenario]:8} hub: {through.get(scenario, 'missing')}")
        differs = direct[scenario] == "pass" and through.get(scenario) != "pass"
        if differs and scenario not in allowed:
            problems.append(f"{title}: {scenario} passes directly but not through the hub")
        elif scenario in allowed and not differs:
            problems.append(f"{title}: {scenario} is listed as a difference but no longer differs")
    passed = sum(status == "pass" for status in through.values())
    direct_passed = sum(status == "pass" for status in direct.values())
    print(f"{title}: directly {direct_passed} of {len(direct)} pass; through the hub {passed} of {len(through)}")
    return problems


def hub_command(work: Path, name: str, port: int, fixture: dict[str, str]) -> list[str]:
    """A hub on ``port`` in front of one fixture (its ``mcpServers`` entry), its config in ``work``."""
    config = {"hub": {"host": "127.0.0.1", "port": port, "storage": ":memory:"}, "mcpServers": {"fixture": fixture}}
    (work / f"{name}.json").write_text(json.dumps(config))
    return [sys.executable, "-m", "hub", "serve", "--config", str(work / f"{name}.json"), "--log-level", "warning"]


def listed(path: Path) -> set[str]:
    """The scenario names a YAML list file names (``- name`` lines)."""
    names = set()
    for line in path.read_text().splitlines():
        match = re.match(r"^\s*-\s*([\w-]+)", line)
        if match:
            names.add(match.group(1))
    return names


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--node-modules", required=True, type=Path)
    args = parser.parse_args()
    modules = args.node_modules.resolve()
    env = {**os.environ, "PATH": f"{modules / 'node' / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    cli = [str(modules / "node" / "bin" / "node"), str(modules / "@modelcontextprotocol/conformance/dist/index.js")]

    work = Path(tempfile.mkdtemp(prefix="conformance-"))
    fixture_port, hub_port = free_port(), free_port()
    modern_fixture_port, modern_port = free_port(), free_port()
    hub = hub_command(work, "hub", hub_port, {"url": f"http://127.0.0.1:{fixture_port}/mcp", "prefix": ""})
    modern_hub = hub_command(
        work,
        "hub-modern",
        modern_port,
        {"url": f"http://127.0.0.1:{modern_fixture_port}/mcp", "prefix": "", "protocol": "2026-07-28"},
    )
    # A fixture each: the direct runs and the hubs' runs go at the same time, and never share a server's state.
    direct_port = free_port()
    fixture = [sys.executable, "-m", "tests.conformance.fixture", "--port", str(fixture_port)]
    modern_fixture = [sys.executable, "-m", "tests.conformance.fixture", "--port", str(modern_fixture_port)]
    alone = [sys.executable, "-m", "tests.conformance.fixture", "--port", str(direct_port)]

    cli_2026 = [cli[0], str(modules / "conformance-2026/dist/index.js")]
    with (
        running(fixture, [fixture_port], work / "fixture.log"),
        running(modern_fixture, [modern_fixture_port], work / "fixture-modern.log"),
        running(alone, [direct_port], work / "fixture-direct.log"),
        running(hub, [hub_port], work / "hub.log"),
        running(modern_hub, [modern_port], work / "hub-modern.log"),
        ThreadPoolExecutor(max_workers=3) as pool,
    ):
        direct_url, hub_url = f"http://127.0.0.1:{direct_port}/mcp", f"http://127.0.0.1:{hub_port}/mcp"
        direct_run = pool.submit(run_suite, cli, env, direct_url, work / "direct", "--suite", "all")
        hub_run = pool.submit(
            run_suite, cli, env, hub_url, work / "hub", "--suite", "all", "--expected-failures", str(EXPECTED_FAILURES)
        )
        _, direct_log = direct_run.result()
        hub_code, hub_log = hub_run.result()
        # The 2026-07-28 requirements (0.2.0): no baseline file; the comparison is the check.
        direct_2026 = pool.submit(
            run_suite, cli_2026, env, direct_url, work / "direct-2026", "--requirements", "2026-07-28"
        )
        hub_2026 = pool.submit(run_suite, cli_2026, env, hub_url, work / "hub-2026", "--requirements", "2026-07-28")
        modern_url = f"http://127.0.0.1:{modern_port}/mcp"
        modern_2026 = pool.submit(
            run_suite, cli_2026, env, modern_url, work / "hub-modern-2026", "--requirements", "2026-07-28"
        )
        direct_2026.result()
        _, log_2026 = hub_2026.result()
        _, log_modern = modern_2026.result()

    direct, through = statuses(work / "direct"), statuses(work / "hub")
    problems = compare("0.1.16, session era", direct, through, 30)
    for scenario in sorted(listed(EXPECTED_FAILURES)):
        if direct.get(scenario) == "pass":
            problems.append(f"{scenario} is an expected hub failure but passes directly")
    if hub_code != 0:
        problems.append(f"the 0.1.16 suite through the hub exited {hub_code}")
    problems += compare(
        "0.2.0-alpha.12, 2026-07-28 requirements, the hub speaking the session era to the fixture",
        statuses(work / "direct-2026"),
        statuses(work / "hub-2026"),
        40,
        frozenset(listed(DIFFERENCES_2026)),
    )
    problems += compare(
        "0.2.0-alpha.12, 2026-07-28 requirements, the hub speaking 2026-07-28 to the fixture",
        statuses(work / "direct-2026"),
        statuses(work / "hub-modern-2026"),
        40,
        frozenset(listed(DIFFERENCES_2026_MODERN)),
    )
    if problems:
        print(
            "\n".join(["", *problems, "", f"logs and results: {work}", "suite output through the hub:"]),
            file=sys.stderr,
        )
        print(hub_log[-3000:], log_2026[-3000:], log_modern[-3000:], file=sys.stderr)
        print(f"direct run output:\n{direct_log[-2000:]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
