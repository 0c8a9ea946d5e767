"""Bounded rounds of calls against one target, and their summaries; shared by every part of the bench."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx

from bench.client import RpcSession
from bench.processes import cpu_seconds

__all__ = ["Round", "call_round", "percentile", "summarize"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


@dataclass
class Round:
    calls: int
    seconds: float
    latencies_ms: list[float]

    @property
    def throughput(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0


def summarize(rounds: list[Round]) -> dict[str, float]:
    latencies = [v for r in rounds for v in r.latencies_ms]
    calls = sum(r.calls for r in rounds)
    seconds = sum(r.seconds for r in rounds)
    return {
        "calls": calls,
        "calls_per_s": round(calls / seconds, 1) if seconds else 0.0,
        "p50_ms": round(percentile(latencies, 0.5), 3),
        "p90_ms": round(percentile(latencies, 0.9), 3),
        "p99_ms": round(percentile(latencies, 0.99), 3),
    }


async def call_round(
    url: str,
    name: str,
    arguments: dict[str, Any],
    sessions: int,
    *,
    calls: int,
    seconds: float,
    pids: tuple[int, ...] = (),
    headers: dict[str, str] | None = None,
) -> tuple[Round, list[float], float]:
    """One bounded round of ``tools/call`` from ``sessions`` concurrent sessions.

    Returns the round, the CPU seconds each of ``pids`` spent during it, and the client's own.
    """
    limits = httpx.Limits(max_connections=sessions * 2, max_keepalive_connections=sessions * 2)
    async with httpx.AsyncClient(timeout=30, limits=limits, trust_env=False) as http:
        opened = [await RpcSession(http, url, headers).open() for _ in range(sessions)]
        latencies: list[float] = []
        budget = [calls]
        deadline = time.monotonic() + seconds
        params = {"name": name, "arguments": arguments}

        async def worker(session: RpcSession) -> None:
            while budget[0] > 0 and time.monotonic() < deadline:
                budget[0] -= 1
                started = time.perf_counter()
                await session.call("tools/call", params)
                latencies.append((time.perf_counter() - started) * 1000)

        before = [cpu_seconds(pid) for pid in pids]
        client_cpu = time.process_time()
        started = time.perf_counter()
        await asyncio.gather(*(worker(s) for s in opened))
        elapsed = time.perf_counter() - started
        spent = [cpu_seconds(pid) - b for pid, b in zip(pids, before, strict=True)]
        client_cpu = time.process_time() - client_cpu
        for session in opened:
            await session.close()
    return Round(len(latencies), elapsed, latencies), spent, client_cpu
