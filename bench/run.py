"""The benchmark: the hub against the direct call, measured in the same run, interleaved.

Starts a fast upstream (official SDK) and a hub in front of it, each as its
own process on 127.0.0.1, and measures: echo throughput and latency at 1, 8
and 32 sessions with a lean httpx client and with the SDK client; the hub's
CPU per call and its memory; time to first call; progress relay latency;
then a catalog of 50 upstreams x 100 tools (start-up and tools/list) and
memory with 1,000 and 10,000 idle sessions. Every loop is bounded in calls
and in seconds. Prints one table and writes it as JSON.

Run: ``make bench`` (``python -m bench.run``); ``--smoke`` for a quick check.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
from mcp import Client

from bench.auth import auth_costs, tenant_isolation
from bench.client import RpcSession
from bench.eras import COLLECTOR, LANES, SHARED_SESSIONS, era_costs, paired_costs
from bench.operations import metrics_costs, soak
from bench.processes import fast_upstream, free_port, free_ports, hub_command, resident_mb, running
from bench.replicas import replica_costs
from bench.rounds import Round, call_round, percentile, summarize
from bench.stdio import stdio_costs
from bench.store import store_costs

__all__ = ["main"]


@dataclass(frozen=True)
class Plan:
    calls: int  # per round, at most
    seconds: float  # per round, at most
    rounds: int  # interleaved rounds per target
    levels: tuple[int, ...]
    sdk_levels: tuple[int, ...]
    first_calls: int
    progress_calls: int
    farm: tuple[int, int]  # upstreams, tools each
    slow: tuple[int, int]  # sessions, milliseconds per call
    list_calls: int
    sessions: tuple[int, ...]
    soak: tuple[int, int]  # waves, sessions each


FULL = Plan(3000, 8.0, 2, (1, 8, 32), (1, 8, 32), 20, 10, (50, 100), (32, 100), 50, (1000, 10000), (10, 300))
SMOKE = Plan(150, 3.0, 1, (1, 8), (1,), 3, 2, (5, 20), (8, 20), 5, (50, 100), (2, 30))


class Bench:
    def __init__(self, plan: Plan, direct: str, hub: str, hub_pid: int, upstream_pid: int) -> None:
        self.plan = plan
        self.direct = direct
        self.hub = hub
        self.hub_pid = hub_pid
        self.upstream_pid = upstream_pid

    def target(self, through_hub: bool) -> tuple[str, str]:
        return (self.hub, "bench__") if through_hub else (self.direct, "")

    async def httpx_round(
        self, through_hub: bool, sessions: int, tool: str = "echo", arguments: dict[str, Any] | None = None
    ) -> tuple[Round, float, float, float]:
        """One bounded round of calls; returns it and the CPU the hub, upstream and client spent."""
        url, prefix = self.target(through_hub)
        round_, (hub_cpu, up_cpu), client_cpu = await call_round(
            url,
            f"{prefix}{tool}",
            arguments or {"text": "hello"},
            sessions,
            calls=self.plan.calls,
            seconds=self.plan.seconds,
            pids=(self.hub_pid, self.upstream_pid),
        )
        return round_, hub_cpu, up_cpu, client_cpu

    async def sdk_round(self, through_hub: bool, sessions: int) -> Round:
        url, prefix = self.target(through_hub)
        calls = max(self.plan.calls // 3, sessions)
        async with _clients(url, sessions) as clients:
            latencies: list[float] = []
            budget = [calls]
            deadline = time.monotonic() + self.plan.seconds

            async def worker(client: Client) -> None:
                while budget[0] > 0 and time.monotonic() < deadline:
                    budget[0] -= 1
                    started = time.perf_counter()
                    await client.call_tool(f"{prefix}echo", {"text": "hello"})
                    latencies.append((time.perf_counter() - started) * 1000)

            started = time.perf_counter()
            await asyncio.gather(*(worker(c) for c in clients))
            return Round(len(latencies), time.perf_counter() - started, latencies)

    async def throughput(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for level in self.plan.levels:
            direct: list[Round] = []
            hub: list[Round] = []
            hub_cpu = up_cpu = client_cpu = 0.0
            for _ in range(self.plan.rounds):  # interleaved: direct, hub, direct, hub
                direct.append((await self.httpx_round(False, level))[0])
                round_, cpu, upstream, client = await self.httpx_round(True, level)
                hub.append(round_)
                hub_cpu += cpu
                up_cpu += upstream
                client_cpu += client
            hub_calls = sum(r.calls for r in hub)
            out[f"httpx_{level}"] = {
                "direct": summarize(direct),
                "hub": summarize(hub),
                "hub_cpu_ms_per_call": round(hub_cpu * 1000 / hub_calls, 3),
                "upstream_cpu_ms_per_call": round(up_cpu * 1000 / hub_calls, 3),
                "client_cpu_ms_per_call": round(client_cpu * 1000 / hub_calls, 3),
            }
        for level in self.plan.sdk_levels:
            direct, hub = [], []
            for _ in range(self.plan.rounds):
                direct.append(await self.sdk_round(False, level))
                hub.append(await self.sdk_round(True, level))
            out[f"sdk_{level}"] = {"direct": summarize(direct), "hub": summarize(hub)}
        return out

    async def slow_tool(self) -> dict[str, Any]:
        """32 sessions each calling a 100 ms tool: the share of the ideal (32 / 0.1 s) each target reaches.

        The hub runs on its default caps, so this shows whether they queue an ordinary workload.
        """
        sessions, millis = self.plan.slow
        ideal = sessions / (millis / 1000)
        direct: list[Round] = []
        hub: list[Round] = []
        for _ in range(self.plan.rounds):
            direct.append((await self.httpx_round(False, sessions, "slow", {"ms": millis}))[0])
            hub.append((await self.httpx_round(True, sessions, "slow", {"ms": millis}))[0])
        out: dict[str, Any] = {"sessions": sessions, "ms": millis, "ideal_calls_per_s": ideal}
        for label, rounds in (("direct", direct), ("hub", hub)):
            summary = summarize(rounds)
            out[label] = {**summary, "share_of_ideal": round(summary["calls_per_s"] / ideal, 3)}
        return out

    async def first_call(self) -> dict[str, float]:
        """initialize, initialized, tools/list, first tools/call, on a fresh session (p50 ms)."""
        out: dict[str, float] = {}
        for label, through_hub in (("direct", False), ("hub", True)):
            url, prefix = self.target(through_hub)
            times = []
            for _ in range(self.plan.first_calls):
                async with httpx.AsyncClient(timeout=30, trust_env=False) as http:
                    started = time.perf_counter()
                    session = await RpcSession(http, url).open()
                    await session.call("tools/list")
                    await session.call("tools/call", {"name": f"{prefix}echo", "arguments": {"text": "first"}})
                    times.append((time.perf_counter() - started) * 1000)
                    await session.close()
            out[f"{label}_p50_ms"] = round(statistics.median(times), 3)
        return out

    async def progress(self) -> dict[str, float]:
        """Upstream notification to client arrival, at 100 notifications per call."""
        out: dict[str, float] = {}
        for label, through_hub in (("direct", False), ("hub", True)):
            url, prefix = self.target(through_hub)
            delays: list[float] = []
            async with httpx.AsyncClient(timeout=30, trust_env=False) as http:
                session = await RpcSession(http, url).open()
                params = {"name": f"{prefix}progress", "arguments": {"steps": 100}, "_meta": {"progressToken": "p"}}
                for _ in range(self.plan.progress_calls):
                    async for arrived, message in session.events("tools/call", params):
                        if message.get("method") == "notifications/progress":
                            delays.append((arrived - int(message["params"]["message"])) / 1e6)
                await session.close()
            out[f"{label}_p50_ms"] = round(percentile(delays, 0.5), 3)
            out[f"{label}_p99_ms"] = round(percentile(delays, 0.99), 3)
            out[f"{label}_notifications"] = len(delays)
        return out

    async def idle_sessions(self) -> dict[str, float]:
        out = {"rss_mb_before": round(resident_mb(self.hub_pid), 1)}
        opened = 0
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(timeout=60, limits=limits, trust_env=False) as http:
            gate = asyncio.Semaphore(50)

            async def one() -> None:
                async with gate:
                    await RpcSession(http, self.hub).open()

            for target in self.plan.sessions:
                await asyncio.gather(*(one() for _ in range(target - opened)))
                opened = target
                out[f"rss_mb_{target}_sessions"] = round(resident_mb(self.hub_pid), 1)
        return out


class _clients:
    """``count`` SDK clients (legacy mode, so direct and hub speak the same era), entered together."""

    def __init__(self, url: str, count: int) -> None:
        self.url = url
        self.count = count
        self.clients: list[Client] = []

    async def __aenter__(self) -> list[Client]:
        for _ in range(self.count):
            client = Client(self.url, mode="legacy")
            await client.__aenter__()
            self.clients.append(client)
        return self.clients

    async def __aexit__(self, *exc: object) -> None:
        for client in reversed(self.clients):
            await client.__aexit__(None, None, None)


def catalog_scale(plan: Plan, work: Path) -> dict[str, Any]:
    count, tools = plan.farm
    base, hub_port = free_ports(count), free_port()
    farm = [
        sys.executable,
        "-m",
        "bench.upstream",
        "farm",
        "--port",
        str(base),
        "--count",
        str(count),
        "--tools",
        str(tools),
    ]
    servers = {f"farm{i:02d}": {"url": f"http://127.0.0.1:{base + i}/mcp"} for i in range(count)}
    config = {
        "hub": {"host": "127.0.0.1", "port": hub_port, "storage": ":memory:", "pageSize": count * tools},
        "mcpServers": servers,
    }
    with running(farm, [base + i for i in range(count)], work / "farm.log"):
        started = time.perf_counter()
        with running(hub_command(config, work, "catalog"), [hub_port], work / "catalog-hub.log") as hub:
            listening = time.perf_counter() - started
            hub_url = f"http://127.0.0.1:{hub_port}"
            startup = asyncio.run(_until_full(hub_url, count * tools, started))
            result = asyncio.run(_list_tools(plan, hub_url, count * tools, startup, hub.pid))
            return {**result, "startup_to_listening_s": round(listening, 3)}


async def _until_full(base: str, expected: int, started: float, deadline: float = 30.0) -> float:
    """Seconds from the hub's spawn until its catalog holds every tool (polled, at most ``deadline``)."""
    async with httpx.AsyncClient(timeout=5, trust_env=False) as http:
        while time.perf_counter() - started < deadline:
            if (await http.get(f"{base}/health")).json()["tools"] >= expected:
                break
            await asyncio.sleep(0.01)
    return time.perf_counter() - started


async def _list_tools(plan: Plan, base: str, expected: int, startup: float, pid: int) -> dict[str, Any]:
    """tools/list through the hub: the round trip with the whole body received, and, apart, the
    client's own decoding of it (which any Python client pays, and which is not the hub's)."""
    async with httpx.AsyncClient(timeout=30, trust_env=False) as http:
        health = (await http.get(f"{base}/health")).json()
        session = await RpcSession(http, f"{base}/mcp").open()
        times, decode = [], []
        body = b""
        for _ in range(plan.list_calls):
            started = time.perf_counter()
            body = await session.raw("tools/list")
            times.append((time.perf_counter() - started) * 1000)
        for _ in range(min(plan.list_calls, 5)):
            started = time.perf_counter()
            reply = orjson.loads(body)
            decode.append((time.perf_counter() - started) * 1000)
        listed = len(reply["result"]["tools"])
        await session.close()
    return {
        "upstreams": len(health["upstreams"]),
        "tools_expected": expected,
        "tools_listed": listed,
        "tools_in_catalog_at_start": health["tools"],
        "startup_to_full_catalog_s": round(startup, 3),
        "tools_list_p50_ms": round(statistics.median(times), 3),
        "tools_list_p99_ms": round(percentile(times, 0.99), 3),
        "tools_list_bytes": len(body),
        "client_decode_p50_ms": round(statistics.median(decode), 3),
        "hub_rss_mb": round(resident_mb(pid), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="a quick run that checks the bench works")
    parser.add_argument("--json", type=Path, default=Path("bench/results/latest.json"))
    args = parser.parse_args(argv)
    plan = SMOKE if args.smoke else FULL
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    up_port, hub_port = free_port(), free_port()
    upstream = fast_upstream(up_port)
    config = {
        "hub": {
            "host": "127.0.0.1",
            "port": hub_port,
            "storage": str(work / "hub.db"),
            "maxSessions": max(plan.sessions) + 100,
        },
        # Default caps: the slow-tool round shows whether they queue an ordinary workload.
        "mcpServers": {"bench": {"url": f"http://127.0.0.1:{up_port}/mcp"}},
    }
    results: dict[str, Any] = {"plan": asdict(plan), "machine": _machine(), "date": time.strftime("%Y-%m-%d")}
    with (
        running(upstream, [up_port], work / "upstream.log") as up,
        running(hub_command(config, work, "hub"), [hub_port], work / "hub.log") as hub,
    ):
        bench = Bench(plan, f"http://127.0.0.1:{up_port}/mcp", f"http://127.0.0.1:{hub_port}/mcp", hub.pid, up.pid)
        results["hub_rss_mb_at_start"] = round(resident_mb(hub.pid), 1)
        results["echo"] = asyncio.run(bench.throughput())
        # Right after the echo rounds, before rounds whose after-effects (the event log being
        # written behind, for one) would land in its CPU figures.
        results["eras"] = asyncio.run(
            era_costs(
                f"http://127.0.0.1:{up_port}/mcp",
                f"http://127.0.0.1:{hub_port}/mcp",
                "bench__",
                hub.pid,
                levels=(1, 8),
                calls=plan.calls,
                seconds=plan.seconds,
                rounds=plan.rounds,
            )
        )
        for key, variants in (("eras_shared", SHARED_SESSIONS), ("eras_collector", COLLECTOR), ("eras_lanes", LANES)):
            results[key] = paired_costs(
                f"http://127.0.0.1:{up_port}/mcp", work, variants, clients=8, calls=plan.calls,
                seconds=plan.seconds, rounds=max(2, plan.rounds * 2),
            )  # fmt: skip
        results["slow_tool"] = asyncio.run(bench.slow_tool())
        results["hub_rss_mb_after_calls"] = round(resident_mb(hub.pid), 1)
        results["first_call"] = asyncio.run(bench.first_call())
        results["progress"] = asyncio.run(bench.progress())
        results["idle_sessions"] = asyncio.run(bench.idle_sessions())
        upstream_url = f"http://127.0.0.1:{up_port}/mcp"
        results["auth"] = auth_costs(
            upstream_url, work, sessions=8, calls=plan.calls, seconds=plan.seconds, rounds=plan.rounds
        )
        results["tenants"] = tenant_isolation(upstream_url, work, calls=plan.calls // 3, seconds=plan.seconds / 2)
        results["metrics"] = metrics_costs(
            upstream_url, work, sessions=8, calls=plan.calls, seconds=plan.seconds, rounds=max(2, plan.rounds * 2)
        )
        results["store"] = store_costs(
            upstream_url, work, sessions=8, calls=plan.calls, seconds=plan.seconds, rounds=max(2, plan.rounds),
            opens=max(20, plan.calls // 6),
        )  # fmt: skip
        results["replicas"] = replica_costs(
            upstream_url, work, sessions=8, calls=plan.calls, seconds=plan.seconds, rounds=max(1, plan.rounds)
        )
    waves, soak_sessions = plan.soak
    results["soak"] = soak(work, waves=waves, sessions=soak_sessions, seconds=300.0)
    results["stdio"] = stdio_costs(work, levels=(1, 8), calls=plan.calls, seconds=plan.seconds, rounds=plan.rounds)
    results["catalog"] = catalog_scale(plan, work)
    print(render(results))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {args.json}")
    return 0


def _machine() -> dict[str, Any]:
    import os
    import platform

    return {"cpus": os.cpu_count(), "python": platform.python_version(), "system": platform.platform()}


def render(results: dict[str, Any]) -> str:
    rows = [("measure", "direct", "hub", "hub vs direct")]
    for name, entry in results["echo"].items():
        direct, hub = entry["direct"], entry["hub"]
        client, sessions = name.split("_")
        label = f"echo, {client}, {sessions} session{'s' if sessions != '1' else ''}"
        rows.append(
            (
                f"{label}: calls/s",
                f"{direct['calls_per_s']}",
                f"{hub['calls_per_s']}",
                f"{hub['calls_per_s'] / direct['calls_per_s']:.0%}" if direct["calls_per_s"] else "-",
            )
        )
        for q in ("p50", "p90", "p99"):
            rows.append(
                (
                    f"{label}: {q} ms",
                    f"{direct[q + '_ms']}",
                    f"{hub[q + '_ms']}",
                    f"{hub[q + '_ms'] - direct[q + '_ms']:+.3f} ms",
                )
            )
        if "hub_cpu_ms_per_call" in entry:
            rows.append(
                (
                    f"{label}: hub CPU per call",
                    "-",
                    f"{entry['hub_cpu_ms_per_call']} ms",
                    f"upstream {entry['upstream_cpu_ms_per_call']} ms, client {entry['client_cpu_ms_per_call']} ms",
                )
            )
    slow = results["slow_tool"]
    rows.append(
        (
            f"slow tool, {slow['sessions']} sessions x {slow['ms']} ms: calls/s (share of ideal)",
            f"{slow['direct']['calls_per_s']} ({slow['direct']['share_of_ideal']:.0%})",
            f"{slow['hub']['calls_per_s']} ({slow['hub']['share_of_ideal']:.0%})",
            f"ideal {slow['ideal_calls_per_s']:g}",
        )
    )
    first, progress = results["first_call"], results["progress"]
    rows.append(
        (
            "first call (init, list, call) p50 ms",
            f"{first['direct_p50_ms']}",
            f"{first['hub_p50_ms']}",
            f"{first['hub_p50_ms'] - first['direct_p50_ms']:+.3f} ms",
        )
    )
    for q in ("p50", "p99"):
        rows.append(
            (
                f"progress relay {q} ms",
                f"{progress[f'direct_{q}_ms']}",
                f"{progress[f'hub_{q}_ms']}",
                f"{progress[f'hub_{q}_ms'] - progress[f'direct_{q}_ms']:+.3f} ms",
            )
        )
    metrics = results["metrics"]
    rows.append(
        (
            "metrics on / off, 8 sessions: hub CPU per call",
            "-",
            f"{metrics['on']['hub_cpu_ms_per_call']} / {metrics['off']['hub_cpu_ms_per_call']} ms",
            f"{metrics['added_cpu_ms_per_call']:+} ms; a scrape: {metrics['scrape_ms']} ms",
        )
    )
    store = results["store"]
    if "skipped" not in store:
        rows.append(
            (
                "store SQLite / Redis / Redis with rate limits, 8 sessions: hub CPU per call",
                "-",
                f"{store['sqlite']['hub_cpu_ms_per_call']} / {store['redis']['hub_cpu_ms_per_call']} / "
                f"{store['redis_limited']['hub_cpu_ms_per_call']} ms",
                f"open+close a session: {store['sqlite']['open_close_hub_cpu_ms']} / "
                f"{store['redis']['open_close_hub_cpu_ms']} ms of hub CPU",
            )
        )
    replicas = results["replicas"]
    if "skipped" not in replicas:
        for kind in ("roundrobin", "sticky"):
            rows.append(
                (
                    f"{kind} balancer, 1 / 2 / 3 replicas, 8 sessions: calls/s; hub CPU per call",
                    "-",
                    " / ".join(str(replicas[f"{kind}_{n}"]["calls_per_s"]) for n in (1, 2, 3)),
                    " / ".join(f"{replicas[f'{kind}_{n}']['hub_cpu_ms_per_call']}" for n in (1, 2, 3)) + " ms",
                )
            )
        rows.append(
            (
                "one hub on SQLite / on Redis, direct: calls/s; hub CPU per call",
                "-",
                f"{replicas['sqlite_direct']['calls_per_s']} / {replicas['redis_direct']['calls_per_s']}",
                f"{replicas['sqlite_direct']['hub_cpu_ms_per_call']} / "
                f"{replicas['redis_direct']['hub_cpu_ms_per_call']} ms; pub/sub round trip "
                f"{replicas['pubsub_round_trip']['p50_ms']} ms",
            )
        )
        progress = replicas["progress"]
        rows.append(
            (
                "progress relay p50: SQLite / Redis (logged before sent) / round robin 3 / sticky 3",
                "-",
                " / ".join(str(progress[k]["p50_ms"]) for k in progress) + " ms",
                "",
            )
        )
    soaked = results["soak"]
    before, after = (
        "/".join(str(sample[key]) for key in ("rss_mb", "fds", "tasks"))
        for sample in (soaked["samples"][0], soaked["samples"][-1])
    )
    rows.append(
        (
            f"soak, {soaked['waves']} waves x {soaked['sessions_per_wave']} sessions: RSS MB, fds, tasks",
            "-",
            f"{before} -> {after}",
            f"{soaked['errors']} errors (the upstream restarted between waves)",
        )
    )
    stdio = results["stdio"]
    for level in ("level_1", "level_8"):
        entry = stdio[level]
        direct, sandboxed, bare = entry["direct"], entry["sandboxed"], entry["unsandboxed"]
        rows.append(
            (
                f"local server echo, {level[6:]} session(s): calls/s (hub: sandboxed / not)",
                f"{direct['calls_per_s']}",
                f"{sandboxed['calls_per_s']} / {bare['calls_per_s']}",
                f"hub CPU per call {entry['sandboxed_hub_cpu_ms_per_call']} / "
                f"{entry['unsandboxed_hub_cpu_ms_per_call']} ms",
            )
        )
    starts = stdio["start_ms_p50"]
    rows.append(
        (
            "local server start to initialize p50 ms (sandboxed / not)",
            "-",
            f"{starts['sandboxed']} / {starts['unsandboxed']}",
            "",
        )
    )
    catalog = results["catalog"]
    rows.append(
        (
            f"catalog: {catalog['tools_listed']} tools, tools/list p50 ms",
            "-",
            f"{catalog['tools_list_p50_ms']}",
            f"{catalog['tools_list_bytes'] // 1000} kB; the client's decode: {catalog['client_decode_p50_ms']} ms",
        )
    )
    rows.append(
        (
            f"catalog: start-up to {catalog['tools_in_catalog_at_start']} tools, s",
            "-",
            f"{catalog['startup_to_full_catalog_s']}",
            f"{catalog['upstreams']} upstreams; listening after {catalog['startup_to_listening_s']} s",
        )
    )
    rows.append(
        (
            "hub RSS at start / after calls MB",
            "-",
            f"{results['hub_rss_mb_at_start']} / {results['hub_rss_mb_after_calls']}",
            "",
        )
    )
    auth = results["auth"]
    for name in ("off", "api_key", "jwt"):
        entry = auth[name]
        added = f"+{entry['added_cpu_ms_per_call']} ms vs off" if "added_cpu_ms_per_call" in entry else ""
        rows.append(
            (
                f"auth {name.replace('_', ' ')}, 8 sessions: hub CPU per call (calls/s)",
                "-",
                f"{entry['hub_cpu_ms_per_call']} ms ({entry['calls_per_s']})",
                added,
            )
        )
    for level, entry in results["eras"].items():
        n = level.split("_")[1]
        direct, modern, session = entry["stateless_direct"], entry["stateless_hub"], entry["session_hub"]
        rows.append(
            (
                f"2026-07-28 echo, {n} client{'s' if n != '1' else ''}: calls/s (p50 ms)",
                f"{direct['calls_per_s']} ({direct['p50_ms']})",
                f"{modern['calls_per_s']} ({modern['p50_ms']})",
                f"{modern['calls_per_s'] / direct['calls_per_s']:.0%}" if direct["calls_per_s"] else "-",
            )
        )
        rows.append(
            (
                f"hub CPU per call, {n} client{'s' if n != '1' else ''}: 2026-07-28 / session era",
                "-",
                f"{entry['stateless_hub_cpu_ms_per_call']} / {entry['session_hub_cpu_ms_per_call']} ms",
                f"session era {session['calls_per_s']} calls/s",
            )
        )
    shared = results["eras_shared"]
    rows.append(
        (
            "hub CPU per call, 8 clients, session era / 2026-07-28: an upstream session each / one shared",
            "-",
            f"{shared['isolated_session_cpu_ms_per_call']} / {shared['isolated_stateless_cpu_ms_per_call']} ms; "
            f"{shared['shared_session_cpu_ms_per_call']} / {shared['shared_stateless_cpu_ms_per_call']} ms",
            "two hubs, rounds alternated",
        )
    )
    collector = results["eras_collector"]
    rows.append(
        (
            "hub CPU per call, 8 clients, session era / 2026-07-28: gen-0 threshold 700 / the hub's",
            "-",
            f"{collector['python_default_session_cpu_ms_per_call']} / "
            f"{collector['python_default_stateless_cpu_ms_per_call']} ms; "
            f"{collector['hub_default_session_cpu_ms_per_call']} / "
            f"{collector['hub_default_stateless_cpu_ms_per_call']} ms",
            f"RSS {collector['python_default_rss_mb']} / {collector['hub_default_rss_mb']} MB",
        )
    )
    lanes = results["eras_lanes"]
    rows.append(
        (
            "hub CPU per call, 8 clients, session era / 2026-07-28: stateless lanes 1 / the hub's",
            "-",
            f"{lanes['one_lane_session_cpu_ms_per_call']} / {lanes['one_lane_stateless_cpu_ms_per_call']} ms; "
            f"{lanes['lanes_session_cpu_ms_per_call']} / {lanes['lanes_stateless_cpu_ms_per_call']} ms",
            "two hubs, rounds alternated",
        )
    )
    tenants = results["tenants"]
    rows.append(
        (
            "quiet tenant p50 ms: alone / while another floods past its limit",
            "-",
            f"{tenants['quiet_alone']['p50_ms']} / {tenants['quiet_while_noisy_floods']['p50_ms']}",
            f"noisy refused {tenants['quiet_while_noisy_floods']['noisy_refused']} times",
        )
    )
    for key, value in results["idle_sessions"].items():
        rows.append((f"hub {key.replace('_', ' ')}", "-", f"{value}", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows)


if __name__ == "__main__":
    sys.exit(main())
