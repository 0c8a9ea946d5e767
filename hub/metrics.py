"""What the request path counts for the metrics: plain dictionaries and histogram buckets, nothing more.

Requests by era, method, tenant and outcome; the whole call's duration by method; refusals
by tenant; per tool only when ``hub.metrics.perTool`` is on. Labels are bounded: methods
outside the protocol's count as ``other``, tenants are the config's, tools the catalog's.
Everything else is read when the metrics are scraped (:mod:`hub.metrics_export`).
"""

from __future__ import annotations

from collections import Counter
from typing import Final

from connectors.histogram import Histogram

__all__ = ["Metrics"]

_METHODS: Final = frozenset(
    {
        "initialize", "ping", "tools/list", "tools/call", "prompts/list", "prompts/get", "resources/list",
        "resources/templates/list", "resources/read", "resources/subscribe", "resources/unsubscribe",
        "logging/setLevel", "completion/complete", "tasks/get", "tasks/result", "tasks/cancel", "tasks/list",
        "tasks/update", "server/discover", "subscriptions/listen",
    }
)  # fmt: skip


class Metrics:
    """What the request path counts; one per hub, kept across reloads."""

    def __init__(self, per_tool: bool = False) -> None:
        self.per_tool = per_tool
        self.requests: Counter[tuple[str, str, str, str]] = Counter()
        """(era, method, tenant, outcome) -> requests answered."""
        self.durations: dict[str, Histogram] = {}
        """method -> how long its requests took in the hub, from arrival to the answer."""
        self.refusals: Counter[tuple[str, str]] = Counter()
        """(tenant, reason) -> requests refused by a limit."""
        self.tools: Counter[tuple[str, str]] = Counter()
        """(tool, outcome) -> calls, when per-tool counts are on."""

    def request(self, era: str, method: str, tenant: str, outcome: str, seconds: float, tool: str = "") -> None:
        method = method if method in _METHODS else "other"
        self.requests[(era, method, tenant, outcome)] += 1
        histogram = self.durations.get(method)
        if histogram is None:
            histogram = self.durations[method] = Histogram()
        histogram.observe(seconds)
        if self.per_tool and tool:
            self.tools[(tool, outcome)] += 1

    def refused(self, tenant: str, reason: str) -> None:
        self.refusals[(tenant, reason)] += 1
