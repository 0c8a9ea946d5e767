"""The Redis store against SQLite: calls/s and hub CPU per call, and the cost of opening a session.

Three hubs in front of the same upstream, one on a SQLite file and two on a local
``redis-server`` (started here on a loopback port, without persistence), rounds
interleaved; the third serves a tenant with rate limits (so high they never refuse),
which it counts in Redis: one round trip per request. A proxied call does not touch the store (records are written at
``initialize`` and kept fresh in the background, events only for SSE streams), so
the call figures should match; opening a session writes its record, so that part is
timed apart: ``opens`` sessions opened one after another, their wall time and the
hub's CPU.

Run on its own: ``python -m bench.store`` (``--smoke`` for a quick check). Needs redis-server.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from bench.processes import cpu_seconds, fast_upstream, free_port, hub_command, running
from bench.rounds import Round, call_round, summarize

__all__ = ["store_costs"]

_INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}},
}
_KEY = "bench-key-0123456789"
_KEY_SHA = hashlib.sha256(_KEY.encode()).hexdigest()
_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


async def _opens(url: str, count: int, pid: int) -> dict[str, float]:
    async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
        before, started = cpu_seconds(pid), time.perf_counter()
        for _ in range(count):
            reply = await http.post(url, json=_INIT, headers=_HEADERS)
            reply.raise_for_status()
            await http.delete(url, headers={**_HEADERS, "mcp-session-id": reply.headers["mcp-session-id"]})
        wall = time.perf_counter() - started
        return {
            "open_close_ms": round(wall * 1000 / count, 3),
            "open_close_hub_cpu_ms": round((cpu_seconds(pid) - before) * 1000 / count, 3),
        }


def store_costs(
    upstream: str, work: Path, *, sessions: int, calls: int, seconds: float, rounds: int, opens: int
) -> dict[str, Any]:
    redis = shutil.which("redis-server")
    if redis is None:
        return {"skipped": "redis-server is not installed"}
    redis_port = free_port()
    out: dict[str, Any] = {}
    with ExitStack() as stack:
        stack.enter_context(
            running(
                [redis, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                [redis_port],
                work / "redis.log",
            )
        )
        hubs = {}
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        for name, storage in (("sqlite", str(work / "hub.db")), ("redis", redis_url), ("redis_limited", redis_url)):
            port = free_port()
            document: dict[str, Any] = {
                "hub": {"host": "127.0.0.1", "port": port, "storage": storage},
                "mcpServers": {"bench": {"url": upstream}},
            }
            if name.endswith("limited"):  # limits so high they never refuse: the cost of counting in Redis
                document["auth"] = {"apiKeys": [{"name": "bench", "sha256": _KEY_SHA, "tenant": "bench"}]}
                document["tenants"] = {"bench": {"limits": {"requestsPerMinute": 10**9, "toolCallsPerMinute": 10**9}}}
            command = hub_command(document, work, f"store-{name}")
            process = stack.enter_context(running(command, [port], work / f"store-{name}.log"))
            hubs[name] = (f"http://127.0.0.1:{port}/mcp", process.pid)
        collected: dict[str, tuple[list[Round], float]] = {name: ([], 0.0) for name in hubs}
        for index in range(rounds):
            for name in list(hubs) if index % 2 == 0 else list(reversed(hubs)):
                url, pid = hubs[name]
                headers = {"authorization": f"Bearer {_KEY}"} if name.endswith("limited") else None
                round_, (cpu,), _ = asyncio.run(
                    call_round(url, "bench__echo", {"text": "hello"}, sessions, calls=calls, seconds=seconds,
                               pids=(pid,), headers=headers)
                )  # fmt: skip
                done, spent = collected[name]
                collected[name] = ([*done, round_], spent + cpu)
        for name, (done, spent) in collected.items():
            url, pid = hubs[name]
            out[name] = {**summarize(done), "hub_cpu_ms_per_call": round(spent * 1000 / sum(r.calls for r in done), 3)}
            if not name.endswith("limited"):
                out[name].update(asyncio.run(_opens(url, opens, pid)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-store-"))
    calls, seconds, rounds, opens = (150, 3.0, 2, 50) if args.smoke else (3000, 8.0, 4, 500)
    up_port = free_port()
    upstream = fast_upstream(up_port)
    with running(upstream, [up_port], work / "upstream.log"):
        result = store_costs(
            f"http://127.0.0.1:{up_port}/mcp",
            work,
            sessions=8,
            calls=calls,
            seconds=seconds,
            rounds=rounds,
            opens=opens,
        )
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
