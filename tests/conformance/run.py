"""Run the official MCP conformance suite against the fixture, directly and through the hub.

Starts the fixture upstream and a hub in front of it (empty prefix), each as
its own process on 127.0.0.1, runs every server scenario of
``@modelcontextprotocol/conformance`` against both, and compares: every
scenario that passes directly must pass through the hub, and the hub's
expected failures may name only scenarios that also fail directly.

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
from pathlib import Path

from bench.processes import free_port, running

HERE = Path(__file__).parent
EXPECTED_FAILURES = HERE / "expected-failures.yml"
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
    command = [*cli, "server", "--url", url, "--suite", "all", "-o", str(results), *extra]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=SUITE_DEADLINE, check=False)
    return done.returncode, done.stdout + done.stderr


def expected_failures() -> set[str]:
    names = set()
    for line in EXPECTED_FAILURES.read_text().splitlines():
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
    fixture = [sys.executable, "-m", "tests.conformance.fixture", "--port", str(fixture_port)]
    hub = [sys.executable, "-m", "hub", "serve", "--config", str(work / "hub.json"), "--log-level", "warning"]

    with running(fixture, [fixture_port], work / "fixture.log"), running(hub, [hub_port], work / "hub.log"):
        _, direct_log = run_suite(cli, env, f"http://127.0.0.1:{fixture_port}/mcp", work / "direct")
        hub_code, hub_log = run_suite(
            cli,
            env,
            f"http://127.0.0.1:{hub_port}/mcp",
            work / "hub",
            "--expected-failures",
            str(EXPECTED_FAILURES),
        )
    direct, through = statuses(work / "direct"), statuses(work / "hub")

    problems = []
    if len(direct) < 30:
        problems.append(f"only {len(direct)} scenarios ran directly; see {work}")
    for scenario in sorted(direct):
        print(f"{scenario:34} direct: {direct[scenario]:8} hub: {through.get(scenario, 'missing')}")
        if direct[scenario] == "pass" and through.get(scenario) != "pass":
            problems.append(f"{scenario} passes directly but not through the hub")
    for scenario in sorted(expected_failures()):
        if direct.get(scenario) == "pass":
            problems.append(f"{scenario} is an expected hub failure but passes directly")
    if hub_code != 0:
        problems.append(f"the suite through the hub exited {hub_code}")
    passed = sum(status == "pass" for status in through.values())
    direct_passed = sum(status == "pass" for status in direct.values())
    print(f"\ndirectly: {direct_passed} of {len(direct)} scenarios pass (the rest warn or fail on the fixture)")
    print(f"conformance through the hub: {passed} passed, {len(through) - passed} failed")
    if problems:
        print("\n".join(["", *problems, "", "suite output through the hub:", hub_log[-4000:]]), file=sys.stderr)
        print(f"direct run output:\n{direct_log[-2000:]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
