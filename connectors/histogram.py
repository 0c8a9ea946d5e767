"""A latency histogram cheap enough for the request path: fixed buckets, a bisect and two additions.

It is read (and exported, see :mod:`hub.metrics`) only when metrics are scraped.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Final

__all__ = ["BUCKETS", "Histogram"]

BUCKETS: Final[tuple[float, ...]] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
)  # fmt: skip
"""Upper bounds in seconds (an implicit +Inf bucket follows)."""


class Histogram:
    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper bound, observations at or below it) for every bucket, +Inf last, as Prometheus has them."""
        out, running = [], 0
        for bound, count in zip((*BUCKETS, float("inf")), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return out

    @property
    def count(self) -> int:
        return sum(self.counts)
