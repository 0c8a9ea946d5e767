"""The two protocol eras side by side: a 2026-07-28 ``tools/call`` against the same call in the session era.

Each stateless call is one self-contained POST (the envelope in ``_meta``, the
routing headers), made by a lean httpx client, directly to the upstream (the
official SDK serves both eras) and through the hub; the session-era calls are
the usual ones (one session per worker). Rounds are interleaved and bounded
in calls and seconds; the hub's CPU per call is read from its process.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
import orjson

from bench.processes import cpu_seconds, free_port, hub_command, resident_mb, running
from bench.rounds import Round, call_round, summarize
from hub.schema import HubSettings, ProcessSettings

__all__ = ["COLLECTOR", "LANES", "SHARED_SESSIONS", "HubVariant", "ModernClient", "era_costs", "paired_costs"]

VERSION: Final = "2026-07-28"
_META: Final = {
    "io.modelcontextprotocol/protocolVersion": VERSION,
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "0"},
}


class ModernClient:
    """Stateless requests over one httpx client."""

    def __init__(self, http: httpx.AsyncClient, url: str) -> None:
        self.http = http
        self.url = url
        self.ids = itertools.count(1)

    async def call(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        body = {
            "jsonrpc": "2.0",
            "id": next(self.ids),
            "method": "tools/call",
            "params": {"name": name, "arguments": arguments, "_meta": _META},
        }
        headers = {
            "content-type": "application/json",
            "accept": "application/json, text/event-stream",
            "mcp-protocol-version": VERSION,
            "mcp-method": "tools/call",
            "mcp-name": name,
        }
        response = await self.http.post(self.url, content=orjson.dumps(body), headers=headers)
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            lines = [line[5:] for line in response.text.splitlines() if line.startswith("data:") and line[5:].strip()]
            reply: dict[str, Any] = orjson.loads(lines[-1])
        else:
            reply = orjson.loads(response.content)
        if "result" not in reply:
            raise RuntimeError(f"stateless call failed: {reply}")
        return reply


async def modern_round(
    url: str, name: str, arguments: dict[str, Any], clients: int, *, calls: int, seconds: float, pids: tuple[int, ...]
) -> tuple[Round, list[float]]:
    limits = httpx.Limits(max_connections=clients * 2, max_keepalive_connections=clients * 2)
    async with httpx.AsyncClient(timeout=30, limits=limits, trust_env=False) as http:
        workers = [ModernClient(http, url) for _ in range(clients)]
        await asyncio.gather(*(w.call(name, arguments) for w in workers))  # warm the connections
        latencies: list[float] = []
        budget = [calls]
        deadline = time.monotonic() + seconds

        async def work(client: ModernClient) -> None:
            while budget[0] > 0 and time.monotonic() < deadline:
                budget[0] -= 1
                started = time.perf_counter()
                await client.call(name, arguments)
                latencies.append((time.perf_counter() - started) * 1000)

        before = [cpu_seconds(pid) for pid in pids]
        started = time.perf_counter()
        await asyncio.gather(*(work(c) for c in workers))
        elapsed = time.perf_counter() - started
        spent = [cpu_seconds(pid) - b for pid, b in zip(pids, before, strict=True)]
        return Round(len(latencies), elapsed, latencies), spent


async def era_costs(
    direct: str,
    hub: str,
    prefix: str,
    hub_pid: int,
    *,
    levels: tuple[int, ...],
    calls: int,
    seconds: float,
    rounds: int,
) -> dict[str, Any]:
    """Per level: stateless direct, stateless through the hub, session era through the hub (interleaved)."""
    out: dict[str, Any] = {}
    arguments = {"text": "hello"}
    for level in levels:
        direct_rounds: list[Round] = []
        modern: list[Round] = []
        session: list[Round] = []
        modern_cpu = session_cpu = 0.0
        for _ in range(rounds):
            direct_rounds.append(
                (await modern_round(direct, "echo", arguments, level, calls=calls, seconds=seconds, pids=()))[0]
            )
            round_, (cpu,) = await modern_round(
                hub, f"{prefix}echo", arguments, level, calls=calls, seconds=seconds, pids=(hub_pid,)
            )
            modern.append(round_)
            modern_cpu += cpu
            round_, (cpu,), _ = await call_round(
                hub, f"{prefix}echo", arguments, level, calls=calls, seconds=seconds, pids=(hub_pid,)
            )
            session.append(round_)
            session_cpu += cpu
        out[f"level_{level}"] = {
            "stateless_direct": summarize(direct_rounds),
            "stateless_hub": summarize(modern),
            "session_hub": summarize(session),
            "stateless_hub_cpu_ms_per_call": round(modern_cpu * 1000 / max(1, sum(r.calls for r in modern)), 3),
            "session_hub_cpu_ms_per_call": round(session_cpu * 1000 / max(1, sum(r.calls for r in session)), 3),
        }
    return out


@dataclass(frozen=True)
class HubVariant:
    """One of the hubs a paired comparison runs: what its ``hub`` section, its upstream entry and its
    environment add."""

    hub: dict[str, Any] = field(default_factory=dict)
    upstream: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)


SHARED_SESSIONS: Final = {
    "isolated": HubVariant(upstream={"sessionMode": "isolated"}),
    "shared": HubVariant(upstream={"sessionMode": "shared"}),
}
"""An upstream session per client session (the default), and one for all: the stateless calls of one
principal always share its upstream session; this says how much of what they cost more is that sharing."""

COLLECTOR: Final = {
    "python_default": HubVariant(env={"MANIFOLD_GC_THRESHOLD": "700"}),
    "hub_default": HubVariant(env={"MANIFOLD_GC_THRESHOLD": str(ProcessSettings.model_fields["gc_threshold"].default)}),
}
"""Python's own first threshold of the cyclic collector, and the hub's (``MANIFOLD_GC_THRESHOLD``)."""

LANES: Final = {
    "one_lane": HubVariant(hub={"statelessLanes": 1}),
    "lanes": HubVariant(hub={"statelessLanes": HubSettings.model_fields["stateless_lanes"].default}),
}
"""A stateless principal's calls all on one upstream session, and spread over the hub's default lanes."""


def paired_costs(
    upstream: str,
    work: Path,
    variants: dict[str, HubVariant],
    *,
    clients: int,
    calls: int,
    seconds: float,
    rounds: int,
) -> dict[str, Any]:
    """Hub CPU per call of both eras on one hub per variant in front of one upstream, rounds
    alternated, and each hub's resident memory after its rounds."""
    out: dict[str, Any] = {}
    with ExitStack() as stack:
        hubs: dict[str, tuple[str, int]] = {}
        for name, variant in variants.items():
            port = free_port()
            config = {
                "hub": {"host": "127.0.0.1", "port": port, "storage": str(work / f"paired-{name}.db"), **variant.hub},
                "mcpServers": {"bench": {"url": upstream, **variant.upstream}},
            }
            command = hub_command(config, work, f"paired-{name}")
            log = work / f"paired-{name}.log"
            process = stack.enter_context(running(command, [port], log, env=variant.env))
            hubs[name] = (f"http://127.0.0.1:{port}/mcp", process.pid)
        spent = {(name, era): [0.0, 0] for name in hubs for era in ("session", "stateless")}
        arguments = {"text": "hello"}
        for index in range(rounds):
            order = [(name, era) for name in hubs for era in ("session", "stateless")]
            for name, era in order if index % 2 == 0 else reversed(order):
                url, pid = hubs[name]
                if era == "stateless":
                    round_, (cpu,) = asyncio.run(
                        modern_round(url, "bench__echo", arguments, clients, calls=calls, seconds=seconds, pids=(pid,))
                    )
                else:
                    round_, (cpu,), _ = asyncio.run(
                        call_round(url, "bench__echo", arguments, clients, calls=calls, seconds=seconds, pids=(pid,))
                    )
                spent[(name, era)][0] += cpu
                spent[(name, era)][1] += round_.calls
        for name, (_, pid) in hubs.items():
            out[f"{name}_rss_mb"] = round(resident_mb(pid), 1)
    for (name, era), (cpu, count) in spent.items():
        out[f"{name}_{era}_cpu_ms_per_call"] = round(cpu * 1000 / max(1, int(count)), 3)
    return out
