"""Replicas on one Redis behind a load balancer: calls/s and hub CPU per call with 1, 2 and 3 replicas,
round robin and sticky, against one hub on SQLite and one on Redis reached directly, in one run.

The load balancer is HAProxy (Debian's ``haproxy``), configured as the README shows: round robin,
or sticky by learning each session's ``Mcp-Session-Id`` from the reply that gave it out (a stick
table), so a session's requests go to the replica that owns it. Round robin sends most requests
of a session to a replica that does not own it, which forwards them to the one that does: the
difference between the two is the cost of forwarding. Hub CPU is summed over every replica.

Forwarding goes straight to the owner over HTTP. Over Redis instead, a request and its reply would
each take a pub/sub hop (publish, Redis, the subscriber): the round trip of one such exchange is
measured here too (``pubsub_round_trip``), to compare with what direct forwarding adds. And the
progress relay (an upstream's notification to the client), which with replicas waits for each
event to be in Redis's log before it is sent: on one hub on SQLite, one on Redis, and through the
balancer to three.

Run on its own: ``python -m bench.replicas`` (``--smoke`` for a quick check). Needs redis-server and
haproxy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

from bench.client import RpcSession
from bench.processes import cpu_seconds, fast_upstream, free_port, hub_command, running
from bench.rounds import Round, call_round, percentile, summarize

__all__ = ["replica_costs"]

_SIZES = (1, 2, 3)


def _haproxy_config(frontends: dict[str, tuple[int, list[int], bool]]) -> str:
    lines = [
        "global",
        "    maxconn 8192",
        "defaults",
        "    mode http",
        "    option http-no-delay",
        "    timeout connect 2s",
        "    timeout client 1h",
        "    timeout server 1h",
    ]
    for name, (port, backends, sticky) in frontends.items():
        lines += [f"frontend {name}", f"    bind 127.0.0.1:{port}", f"    default_backend {name}"]
        lines += [f"backend {name}", "    balance roundrobin"]
        if sticky:
            lines += [
                "    stick-table type string len 64 size 1m expire 1h",
                "    stick store-response res.hdr(mcp-session-id)",
                "    stick match req.hdr(mcp-session-id)",
            ]
        lines += [f"    server r{i} 127.0.0.1:{backend}" for i, backend in enumerate(backends)]
    return "\n".join(lines) + "\n"


async def _pubsub_round_trip(url: str, count: int) -> dict[str, float]:
    """One request and its reply over Redis pub/sub (two channels), ``count`` times one after another."""
    payload = b"x" * 300  # about a tools/call request
    times: list[float] = []
    async with aioredis.Redis.from_url(url) as one, aioredis.Redis.from_url(url) as two:
        ask, answer = one.pubsub(), two.pubsub()
        await ask.subscribe("bench:answer")
        await answer.subscribe("bench:ask")
        for sub in (ask, answer):
            await sub.get_message(timeout=1.0)  # the subscribe confirmation

        async def echo_back() -> None:
            for _ in range(count):
                while (message := await answer.get_message(timeout=5.0)) is None:
                    pass
                await two.publish("bench:answer", message["data"])

        server = asyncio.create_task(echo_back())
        for _ in range(count):
            started = time.perf_counter()
            await one.publish("bench:ask", payload)
            while await ask.get_message(timeout=5.0) is None:
                pass
            times.append((time.perf_counter() - started) * 1000)
        await server
        await ask.aclose()
        await answer.aclose()
    return {"p50_ms": round(statistics.median(times), 3), "count": count}


async def _progress(url: str, calls: int) -> dict[str, float]:
    """Upstream notification to client arrival, 100 notifications per call: with replicas every event is
    in Redis's log before it is sent (so any replica can replay it), which this shows the price of."""
    delays: list[float] = []
    async with httpx.AsyncClient(timeout=30, trust_env=False) as http:
        session = await RpcSession(http, url).open()
        params = {"name": "bench__progress", "arguments": {"steps": 100}, "_meta": {"progressToken": "p"}}
        for _ in range(calls):
            async for arrived, message in session.events("tools/call", params):
                if message.get("method") == "notifications/progress":
                    delays.append((arrived - int(message["params"]["message"])) / 1e6)
        await session.close()
    return {"p50_ms": round(percentile(delays, 0.5), 3), "p99_ms": round(percentile(delays, 0.99), 3)}


def replica_costs(
    upstream: str, work: Path, *, sessions: int, calls: int, seconds: float, rounds: int
) -> dict[str, Any]:
    redis, haproxy = shutil.which("redis-server"), shutil.which("haproxy")
    if redis is None or haproxy is None:
        missing = " and ".join(name for name, path in (("redis-server", redis), ("haproxy", haproxy)) if path is None)
        return {"skipped": f"{missing} not installed (Debian packages redis-server, haproxy)"}
    redis_port = free_port()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    out: dict[str, Any] = {}
    with ExitStack() as stack:
        redis_command = [redis, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        stack.enter_context(running(redis_command, [redis_port], work / "replicas-redis.log"))
        hubs: dict[str, tuple[int, int]] = {}
        names = ["sqlite", *(f"replica{i}" for i in range(max(_SIZES)))]
        for name in names:
            port = free_port()
            storage = str(work / "replicas-hub.db") if name == "sqlite" else redis_url
            hub: dict[str, Any] = {"host": "127.0.0.1", "port": port, "storage": storage, "maxSessions": 10_000}
            if name != "sqlite":
                hub["replica"] = {"advertiseUrl": f"http://127.0.0.1:{port}"}
            command = hub_command({"hub": hub, "mcpServers": {"bench": {"url": upstream}}}, work, f"replicas-{name}")
            process = stack.enter_context(running(command, [port], work / f"replicas-{name}.log"))
            hubs[name] = (port, process.pid)
        replica_ports = [hubs[f"replica{i}"][0] for i in range(max(_SIZES))]
        frontends = {
            f"{kind}_{size}": (free_port(), replica_ports[:size], kind == "sticky")
            for kind in ("roundrobin", "sticky")
            for size in _SIZES
        }
        config = work / "haproxy.cfg"
        config.write_text(_haproxy_config(frontends))
        listening = [port for port, _, _ in frontends.values()]
        balancer = stack.enter_context(running([haproxy, "-f", str(config), "-db"], listening, work / "haproxy.log"))
        replica_pids = tuple(hubs[f"replica{i}"][1] for i in range(max(_SIZES)))
        targets: dict[str, tuple[str, tuple[int, ...]]] = {
            "sqlite_direct": (f"http://127.0.0.1:{hubs['sqlite'][0]}/mcp", (hubs["sqlite"][1],)),
            "redis_direct": (f"http://127.0.0.1:{hubs['replica0'][0]}/mcp", replica_pids),
            **{name: (f"http://127.0.0.1:{port}/mcp", replica_pids) for name, (port, _, _) in frontends.items()},
        }
        collected: dict[str, list[tuple[Round, float, float]]] = {name: [] for name in targets}
        order = list(targets)
        for index in range(rounds):
            for name in order if index % 2 == 0 else list(reversed(order)):
                url, pids = targets[name]
                before = cpu_seconds(balancer.pid)
                round_, spent, _ = asyncio.run(
                    call_round(url, "bench__echo", {"text": "hello"}, sessions, calls=calls, seconds=seconds, pids=pids)
                )
                collected[name].append((round_, sum(spent), cpu_seconds(balancer.pid) - before))
        for name, done in collected.items():
            total = sum(r.calls for r, _, _ in done)
            out[name] = {
                **summarize([r for r, _, _ in done]),
                "hub_cpu_ms_per_call": round(sum(cpu for _, cpu, _ in done) * 1000 / total, 3),
                "balancer_cpu_ms_per_call": round(sum(lb for _, _, lb in done) * 1000 / total, 3),
            }
        out["pubsub_round_trip"] = asyncio.run(_pubsub_round_trip(redis_url, 500 if calls >= 1000 else 50))
        progress_calls = 10 if calls >= 1000 else 2
        out["progress"] = {
            name: asyncio.run(_progress(targets[name][0], progress_calls))
            for name in ("sqlite_direct", "redis_direct", "roundrobin_3", "sticky_3")
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-replicas-"))
    calls, seconds, rounds = (100, 2.0, 1) if args.smoke else (2000, 6.0, 3)
    up_port = free_port()
    upstream = fast_upstream(up_port)
    with running(upstream, [up_port], work / "upstream.log"):
        result = replica_costs(
            f"http://127.0.0.1:{up_port}/mcp", work, sessions=8, calls=calls, seconds=seconds, rounds=rounds
        )
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
