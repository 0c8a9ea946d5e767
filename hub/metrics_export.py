"""``GET /metrics``: the request path's counts and the hub's state, as Prometheus families, made at scrape time.

Besides what :class:`~hub.metrics.Metrics` counted, a scrape reads the hub as it is then:
sessions by era and tenant, open streams, parked calls, each upstream's state, breaker,
reconnects, calls in flight and waiting, the upstream part of its calls' duration, local
processes, the catalog's size, the event-log and audit backlogs, with replicas this one's place
among them, and the process itself (CPU, memory, open files, the garbage collector's passes).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any, Final

from prometheus_client import CollectorRegistry, GCCollector, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from connectors.status import BreakerState, UpstreamState
from hub.runtime import Hub

__all__ = ["CONTENT_TYPE", "HubCollector", "render"]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"


def _histogram(name: str, documentation: str, *labels: str) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, documentation, labels=list(labels))


def _gauge(name: str, documentation: str, *labels: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=list(labels))


def _counter(name: str, documentation: str, *labels: str) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, labels=list(labels))


def _replica(report: dict[str, Any]) -> Iterator[Metric]:
    info = _gauge("manifold_replica_info", "This replica: its id and where others reach it (1).", "replica", "url")
    info.add_metric([report["id"], report["url"]], 1)
    yield info
    seen = len(report["replicas"])
    yield GaugeMetricFamily("manifold_replicas", "Replicas whose heartbeat this one saw last.", value=seen)
    yield GaugeMetricFamily("manifold_replica_sessions", "Sessions this replica owns.", value=report["owned"])
    forwarded = report["forwarded"]
    yield CounterMetricFamily("manifold_replica_forwarded", "Requests forwarded to their owner.", value=forwarded)
    takeovers = report["takeovers"]
    yield CounterMetricFamily("manifold_replica_takeovers", "Sessions taken over from a gone replica.", value=takeovers)


class HubCollector(Collector):
    """Reads a hub's metrics when they are scraped."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def collect(self) -> Iterator[Metric]:
        hub, metrics = self.hub, self.hub.metrics
        requests = _counter(
            "manifold_requests", "Requests answered, by era, method, tenant and outcome.", "era", "method", "tenant",
            "outcome",
        )  # fmt: skip
        for (era, method, tenant, outcome), count in sorted(metrics.requests.items()):
            requests.add_metric([era, method, tenant, outcome], count)
        yield requests
        durations = _histogram(
            "manifold_request_duration_seconds", "Time from a request's arrival to its answer, in the hub.", "method"
        )
        for method, histogram in sorted(metrics.durations.items()):
            durations.add_metric([method], histogram.cumulative(), histogram.total)
        yield durations
        refusals = _counter(
            "manifold_refusals", "Requests refused by a tenant's or principal's limits.", "tenant", "reason"
        )
        for (tenant, reason), count in sorted(metrics.refusals.items()):
            refusals.add_metric([tenant, reason], count)
        yield refusals
        if metrics.per_tool:
            tools = CounterMetricFamily(
                "manifold_tool_calls", "Tool calls by tool and outcome.", labels=["tool", "outcome"]
            )
            for (tool, outcome), count in sorted(metrics.tools.items()):
                tools.add_metric([tool, outcome], count)
            yield tools
        yield from self._sessions()
        yield from self._upstreams()
        backlog = GaugeMetricFamily(
            "manifold_write_backlog", "Records waiting to be written to the store.", labels=["log"]
        )
        backlog.add_metric(["events"], hub.events.backlog)
        backlog.add_metric(["audit"], hub.audit.backlog)
        yield backlog
        store = hub.store_report()
        reachable = GaugeMetricFamily(
            "manifold_store_reachable", "Whether the store answers (1) or not (0).", labels=["kind"]
        )
        reachable.add_metric([store["kind"]], 0 if store.get("reachable") is False else 1)
        yield reachable
        if hub.scale is not None:
            yield from _replica(hub.scale.report())
        yield GaugeMetricFamily(
            "manifold_catalog_tools", "Tools in the merged catalog.", value=len(hub.catalog.items("tools"))
        )

    def _sessions(self) -> Iterator[Metric]:
        hub = self.hub
        sessions = _gauge(
            "manifold_sessions", "Client sessions (stateless: callers' upstream-session sets), by era and tenant.",
            "era", "tenant",
        )  # fmt: skip
        by_tenant = Counter(session.caller.tenant for session in hub.sessions)
        for tenant, count in sorted(by_tenant.items()):
            sessions.add_metric(["session", tenant], count)
        for tenant, count in sorted(hub.modern.upstreams.tenants().items()):
            sessions.add_metric(["stateless", tenant], count)
        yield sessions
        streams = _gauge("manifold_open_streams", "Streams open to clients.", "kind")
        streams.add_metric(["session"], sum(session.streams.readers for session in hub.sessions))
        streams.add_metric(["listen"], len(hub.modern.listeners))
        yield streams
        parked = GaugeMetricFamily("manifold_parked_calls", "2026-07-28 calls waiting for their client's input.")
        parked.add_metric([], hub.modern.calls.parked)
        yield parked

    def _upstreams(self) -> Iterator[Metric]:
        pool = self.hub.pool
        up = _gauge("manifold_upstream_up", "Whether an upstream is up (1) or not (0).", "upstream")
        state = _gauge("manifold_upstream_state", "An upstream's state (1 for the current one).", "upstream", "state")
        breaker = _gauge("manifold_upstream_breaker", "An upstream's breaker (1 for its state).", "upstream", "state")
        reconnects = _counter("manifold_upstream_reconnects", "Reconnections to an upstream.", "upstream")
        in_flight = _gauge("manifold_upstream_in_flight", "Requests in flight to an upstream.", "upstream")
        waiting = _gauge("manifold_upstream_waiting", "Requests waiting for an upstream's slot.", "upstream")
        latency = _histogram(
            "manifold_upstream_request_duration_seconds",
            "The upstream's part of a request: sent to answered.",
            "upstream",
        )
        processes = _gauge("manifold_local_processes", "Processes of a local upstream.", "upstream")
        for name in pool.names:
            upstream = pool.upstream(name)
            if upstream is None:
                continue
            current = upstream.status.state
            up.add_metric([name], 1 if current is UpstreamState.UP else 0)
            for each in UpstreamState:
                state.add_metric([name, each.value], 1 if each is current else 0)
            snapshot = upstream.breaker.snapshot()
            for mode in BreakerState:
                breaker.add_metric([name, mode.value], 1 if snapshot.get("state") == mode.value else 0)
            reconnects.add_metric([name], upstream.status.reconnects)
            in_flight.add_metric([name], upstream.limiter.in_use)
            waiting.add_metric([name], upstream.limiter.waiting)
            latency.add_metric([name], upstream.latency.cumulative(), upstream.latency.total)
            if upstream.spec.stdio is not None:
                processes.add_metric([name], len(pool.processes.of(name)))
        yield from (up, state, breaker, reconnects, in_flight, waiting, latency, processes)


def render(hub: Hub) -> bytes:
    """The hub's metrics in the Prometheus text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HubCollector(hub))
    # The process as Prometheus' own client shows it: CPU seconds, memory, open files, and the
    # cyclic collector's passes by generation (what ``MANIFOLD_GC_THRESHOLD`` changes).
    ProcessCollector(registry=registry)
    GCCollector(registry=registry)
    return generate_latest(registry)
