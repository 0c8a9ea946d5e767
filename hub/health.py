"""What ``GET /health`` says, to admins, of each upstream and of the hub process itself."""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

from connectors.processes import Processes
from connectors.sandbox import loosened
from connectors.upstream import Upstream
from hub.catalog import Catalog
from hub.redis_store import RedisStore, redacted
from hub.store import Store

__all__ = ["process_facts", "store_report", "upstream_report"]


def store_report(store: Store, storage: str) -> dict[str, Any]:
    """Which store the hub uses and, for Redis, whether it answers."""
    if isinstance(store, RedisStore):
        return {
            "kind": "redis",
            "url": redacted(store.url),
            "reachable": store.reachable,
            "lastError": store.last_error or None,
        }
    return {"kind": "sqlite", "path": storage}


def upstream_report(upstream: Upstream, catalog: Catalog, processes: Processes) -> dict[str, Any]:
    """One upstream: its state, latency, what it offers, its breaker and caps (and a local one's processes)."""
    status = upstream.status
    report: dict[str, Any] = {
        "name": status.name,
        "transport": status.transport,
        "protocol": status.protocol or None,
        "state": status.state.value,
        "latencyMs": None if status.latency_ms is None else round(status.latency_ms, 2),
        "tools": catalog.count(status.name, "tools"),
        "prompts": catalog.count(status.name, "prompts"),
        "resources": catalog.count(status.name, "resources"),
        "lastError": status.last_error,
        "since": status.since,
        "reconnects": status.reconnects,
        "breaker": upstream.breaker.snapshot(),
        "inFlight": upstream.limiter.in_use,
        "waiting": upstream.limiter.waiting,
        "server": {k: status.server_info.get(k) for k in ("name", "version") if k in status.server_info},
    }
    stdio = upstream.spec.stdio
    if stdio is not None:
        report["processes"] = processes.snapshot(status.name)
        report["sandbox"] = {"on": stdio.sandbox is not None, "loosened": loosened(stdio)}
    return report


def process_facts() -> dict[str, Any]:
    """The hub process itself: its pid, asyncio tasks, open file descriptors and resident memory."""
    facts: dict[str, Any] = {"pid": os.getpid(), "tasks": len(asyncio.all_tasks())}
    with contextlib.suppress(OSError):
        facts["openFiles"] = len(os.listdir("/proc/self/fd"))
    with contextlib.suppress(OSError), open("/proc/self/statm") as statm:
        facts["rssBytes"] = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return facts
