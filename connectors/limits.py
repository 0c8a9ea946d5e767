"""Concurrency caps with a bounded waiting line and a deadline, and the pool's settings for them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

__all__ = ["LimitExceeded", "Limiter", "PoolLimits"]


class LimitExceeded(Exception):
    """The waiting line is full, or the wait passed its deadline. ``reason`` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Limiter:
    """At most ``capacity`` holders at once; at most ``queue_size`` callers waiting, each for at most ``wait``."""

    def __init__(self, capacity: int, *, queue_size: int, wait: float) -> None:
        if capacity < 1 or queue_size < 0 or wait <= 0:
            raise ValueError("capacity must be >= 1, queue_size >= 0 and wait > 0")
        self.capacity = capacity
        self.queue_size = queue_size
        self.wait = wait
        self._semaphore = asyncio.Semaphore(capacity)
        self._waiting = 0
        self._held = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def in_use(self) -> int:
        return self._held

    @property
    def waiting(self) -> int:
        return self._waiting

    async def wait_idle(self) -> None:
        """Return once no slot is held (at once if none is)."""
        await self._idle.wait()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot for the body of the ``async with``.

        Raises:
            LimitExceeded: the line is full, or no slot freed up within ``wait`` seconds.
        """
        if self._semaphore.locked():
            if self._waiting >= self.queue_size:
                raise LimitExceeded(f"{self.capacity} requests in flight and {self._waiting} waiting")
            self._waiting += 1
            try:
                async with asyncio.timeout(self.wait):
                    await self._semaphore.acquire()
            except TimeoutError:
                raise LimitExceeded(f"no free slot within {self.wait:g}s") from None
            finally:
                self._waiting -= 1
        else:
            await self._semaphore.acquire()
        self._held += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._held -= 1
            if not self._held:
                self._idle.set()
            self._semaphore.release()


@dataclass(frozen=True)
class PoolLimits:
    """Caps and timings shared by every upstream of a pool."""

    max_in_flight: int = 1024
    queue_size: int = 512
    queue_timeout: float = 10.0
    health_interval: float = 15.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    max_processes: int = 64
    """Local (stdio) server processes the pool may run at once, over all upstreams."""
