"""What operating the hub costs and whether it holds up: metrics and traces on against off, and a soak.

Metrics: three hubs in front of the same upstream, one with ``hub.metrics.enabled``, one
without, and one with metrics and traces (the console exporter, into its log), rounds
interleaved, hub CPU per call from /proc; then the time and CPU of one scrape.

Soak: one hub in front of an upstream that is killed and started again between waves; each
wave opens and closes sessions (half of them calling a tool) and makes stateless calls. The
hub's RSS, open file descriptors and asyncio tasks (from ``/health``'s process figures) are
sampled before and after. Bounded in waves, sessions and seconds.

Run on its own: ``python -m bench.operations`` (``--smoke`` for a quick check).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from bench.client import RpcSession
from bench.eras import ModernClient
from bench.processes import cpu_seconds, fast_upstream, free_port, hub_command, resident_mb, running
from bench.rounds import Round, call_round, summarize

__all__ = ["metrics_costs", "soak"]


def _config(port: int, upstream: str, **hub: Any) -> dict[str, Any]:
    return {
        "hub": {"host": "127.0.0.1", "port": port, "storage": ":memory:", **hub},
        "mcpServers": {"bench": {"url": upstream}},
    }


def metrics_costs(
    upstream: str, work: Path, *, sessions: int, calls: int, seconds: float, rounds: int
) -> dict[str, Any]:
    """Hub CPU per call with metrics on and off, in the same run; and one scrape's cost."""
    out: dict[str, Any] = {}
    with ExitStack() as stack:
        hubs = {}
        for name, enabled in (("on", True), ("off", False), ("traced", True)):
            port = free_port()
            config = _config(port, upstream, metrics={"enabled": enabled})
            if name == "traced":  # spans made and written out (to its log) for every call
                os.environ["OTEL_TRACES_EXPORTER"] = "console"
            try:
                process = stack.enter_context(
                    running(hub_command(config, work, f"metrics-{name}"), [port], work / f"m-{name}.log")
                )
            finally:
                os.environ.pop("OTEL_TRACES_EXPORTER", None)
            hubs[name] = (f"http://127.0.0.1:{port}", process.pid)
        collected: dict[str, tuple[list[Round], float]] = {name: ([], 0.0) for name in hubs}
        for index in range(rounds):
            order = list(hubs) if index % 2 == 0 else list(reversed(hubs))
            for name in order:
                base, pid = hubs[name]
                round_, (cpu,), _ = asyncio.run(
                    call_round(f"{base}/mcp", "bench__echo", {"text": "hello"}, sessions, calls=calls, seconds=seconds,
                               pids=(pid,))
                )  # fmt: skip
                done, spent = collected[name]
                collected[name] = ([*done, round_], spent + cpu)
        for name, (done, spent) in collected.items():
            out[name] = {**summarize(done), "hub_cpu_ms_per_call": round(spent * 1000 / sum(r.calls for r in done), 3)}
        out["added_cpu_ms_per_call"] = round(out["on"]["hub_cpu_ms_per_call"] - out["off"]["hub_cpu_ms_per_call"], 3)
        out["tracing_added_cpu_ms_per_call"] = round(
            out["traced"]["hub_cpu_ms_per_call"] - out["on"]["hub_cpu_ms_per_call"], 3
        )
        base, pid = hubs["on"]
        with httpx.Client(trust_env=False, timeout=30) as http:
            before, started = cpu_seconds(pid), time.perf_counter()
            scrapes = 20
            for _ in range(scrapes):
                size = len(http.get(f"{base}/metrics").content)
            out["scrape_ms"] = round((time.perf_counter() - started) * 1000 / scrapes, 2)
            out["scrape_hub_cpu_ms"] = round((cpu_seconds(pid) - before) * 1000 / scrapes, 2)
            out["scrape_bytes"] = size
    return out


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def _wave(url: str, sessions: int) -> int:
    """Open ``sessions`` sessions (half call a tool), close them; make as many stateless calls. Returns errors."""
    errors = 0
    async with httpx.AsyncClient(timeout=30, trust_env=False) as http:

        async def one(index: int) -> None:
            nonlocal errors
            try:
                session = await RpcSession(http, url).open()
            except Exception:
                errors += 1
                return
            try:
                if index % 2 == 0:
                    await session.call("tools/call", {"name": "bench__echo", "arguments": {"text": "soak"}})
                await ModernClient(http, url).call("bench__echo", {"text": "soak"})
            except Exception:
                errors += 1  # a call while the hub reconnects to the restarted upstream
            finally:
                await session.close()

        for start in range(0, sessions, 50):  # 50 at a time
            await asyncio.gather(*(one(i) for i in range(start, min(start + 50, sessions))))
    return errors


def soak(work: Path, *, waves: int, sessions: int, seconds: float) -> dict[str, Any]:
    """Sessions opened and closed in waves while the upstream is killed and restarted between them."""
    up_port, hub_port = free_port(), free_port()
    upstream = fast_upstream(up_port)
    config = _config(hub_port, f"http://127.0.0.1:{up_port}/mcp", maxSessions=sessions * 2 + 100)
    config["hub"]["reconnect"] = {"initialDelay": 0.05, "maxDelay": 0.5}
    url, base = f"http://127.0.0.1:{hub_port}/mcp", f"http://127.0.0.1:{hub_port}"
    samples: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    errors = 0
    with running(hub_command(config, work, "soak"), [hub_port], work / "soak.log") as hub:

        def sample(label: str) -> None:
            with httpx.Client(trust_env=False, timeout=30) as http:
                health = http.get(f"{base}/health").json()
            samples.append(
                {"at": label, "rss_mb": round(resident_mb(hub.pid), 1), "fds": _open_fds(hub.pid),
                 "sessions": health["sessions"], "tasks": health["process"]["tasks"]}
            )  # fmt: skip

        with running(upstream, [up_port], work / "soak-upstream-0.log"):
            asyncio.run(_wave(url, min(sessions, 100)))  # warm up
            sample("before")
        done = 0
        for wave in range(waves):
            if time.monotonic() > deadline:
                break
            # The upstream is killed (SIGTERM, then SIGKILL) at the end of each wave and started again.
            with running(upstream, [up_port], work / f"soak-upstream-{wave + 1}.log"):
                errors += asyncio.run(_wave(url, sessions))
            done += 1
        with running(upstream, [up_port], work / "soak-upstream-last.log"):
            asyncio.run(_wave(url, 10))
            sample("after")
    return {"waves": done, "sessions_per_wave": sessions, "errors": errors, "samples": samples}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-ops-"))
    calls, seconds, rounds = (150, 3.0, 2) if args.smoke else (3000, 8.0, 6)
    waves, sessions, limit = (2, 50, 60.0) if args.smoke else (10, 500, 600.0)
    up_port = free_port()
    upstream = fast_upstream(up_port)
    with running(upstream, [up_port], work / "upstream.log"):
        costs = metrics_costs(
            f"http://127.0.0.1:{up_port}/mcp", work, sessions=8, calls=calls, seconds=seconds, rounds=rounds
        )
    result = {"metrics": costs, "soak": soak(work, waves=waves, sessions=sessions, seconds=limit)}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
