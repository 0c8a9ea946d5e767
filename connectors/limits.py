"""Concurrency caps with a bounded waiting line and a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

__all__ = ["LimitExceeded", "Limiter"]


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

    @property
    def in_use(self) -> int:
        return self._held

    @property
    def waiting(self) -> int:
        return self._waiting

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
        try:
            yield
        finally:
            self._held -= 1
            self._semaphore.release()
