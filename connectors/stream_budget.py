"""A bound on the long-lived streams held open to one upstream.

Every upstream session may hold a stream beside its requests (the GET
stream of Streamable HTTP, the event stream that *is* a legacy HTTP+SSE
session). HTTP/1.1 gives each its own connection, so sessions times
upstreams would run into the file-descriptor limit. The budget caps them per
upstream: when it is full, the stream idle the longest makes room.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["StreamBudget", "StreamHolder"]


class StreamHolder(Protocol):
    """Something that holds one stream of the budget."""

    @property
    def last_active(self) -> float:
        """Loop time of its last request."""
        ...

    def evictable(self) -> bool:
        """Whether its stream may be closed now (nothing in flight depends on it)."""
        ...

    def evict(self) -> None:
        """Close the stream (it gives its place back with :meth:`StreamBudget.release`)."""


class StreamBudget:
    """At most ``capacity`` streams; the least recently active evictable one makes room for a new one."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._holders: set[StreamHolder] = set()

    def __len__(self) -> int:
        return len(self._holders)

    def acquire(self, holder: StreamHolder) -> bool:
        """Take a place for ``holder``; False when the budget is full of streams that cannot be closed."""
        if holder in self._holders:
            return True
        if len(self._holders) >= self.capacity:
            idle = [h for h in self._holders if h.evictable()]
            if not idle:
                return False
            oldest = min(idle, key=lambda h: h.last_active)
            self._holders.discard(oldest)
            oldest.evict()
        self._holders.add(holder)
        return True

    def release(self, holder: StreamHolder) -> None:
        self._holders.discard(holder)
