"""Run the official MCP conformance suite against the fixture, directly and through the hub.

Starts the fixture upstream and a hub in front of it (empty prefix), each as
its own process on 127.0.0.1, runs every server scenario of
``@modelcontextprotocol/conformance`` 0.1.16 (the session era) and the
2026-07-28 requirements of 0.2.0-alpha.12 against both, and compares: every
scenario that passes directly must pass through the hub (for 2026-07-28,
except the differences listed with their reasons), and the hub's expected
failures may name only scenarios that also fail directly.

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
    config = {
        "hub": {"host": "127.0.0.1", "port": hub_port, "storage": ":memory:"},
        "mcpServers": {"fixture": {"url": f"http://127.0.0.1:{fixture_port}/mcp", "prefix": ""}},
    }
    (work / "hub.json").write_text(json.dumps(config))
    # Two fixtures: the direct runs and the hub's runs go at the same time, and never share a server's state.
    direct_port = free_port()
    fixture = [sys.executable, "-m", "tests.conformance.fixture", "--port", str(fixture_port)]
    alone = [sys.executable, "-m", "tests.conformance.fixture", "--port", str(direct_port)]
    hub = [sys.executable, "-m", "hub", "serve", "--config", str(work / "hub.json"), "--log-level", "warning"]

    cli_2026 = [cli[0], str(modules / "conformance-2026/dist/index.js")]
    with (
        running(fixture, [fixture_port], work / "fixture.log"),
        running(alone, [direct_port], work / "fixture-direct.log"),
        running(hub, [hub_port], work / "hub.log"),
        ThreadPoolExecutor(max_workers=2) as pool,
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
        direct_2026.result()
        _, log_2026 = hub_2026.result()

    direct, through = statuses(work / "direct"), statuses(work / "hub")
    problems = compare("0.1.16, session era", direct, through, 30)
    for scenario in sorted(listed(EXPECTED_FAILURES)):
        if direct.get(scenario) == "pass":
            problems.append(f"{scenario} is an expected hub failure but passes directly")
    if hub_code != 0:
        problems.append(f"the 0.1.16 suite through the hub exited {hub_code}")
    problems += compare(
        "0.2.0-alpha.12, 2026-07-28 requirements",
        statuses(work / "direct-2026"),
        statuses(work / "hub-2026"),
        40,
        frozenset(listed(DIFFERENCES_2026)),
    )
    if problems:
        print(
            "\n".join(["", *problems, "", f"logs and results: {work}", "suite output through the hub:"]),
            file=sys.stderr,
        )
        print(hub_log[-3000:], log_2026[-3000:], file=sys.stderr)
        print(f"direct run output:\n{direct_log[-2000:]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
