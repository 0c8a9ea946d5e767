"""A write-behind queue: items added on the hot path without waiting, written to the store in batches.

A flusher task writes what is queued every ``interval`` seconds (sooner once
``batch`` items wait) and prunes old rows every ``prune_every`` seconds.
Past ``max_pending`` items the oldest are dropped and the loss is logged: the
request path never waits for the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Generic, Self, TypeVar

from hub.store import StoreError

__all__ = ["WriteBehind"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class WriteBehind(Generic[T]):
    """Queue items, write them behind; an async context manager owning its flusher task."""

    def __init__(
        self,
        name: str,
        write: Callable[[list[T]], Awaitable[None]],
        prune: Callable[[], Awaitable[object]],
        *,
        interval: float = 0.2,
        batch: int = 500,
        max_pending: int = 50_000,
        prune_every: float = 60.0,
    ) -> None:
        self.name = name
        self._write = write
        self._prune = prune
        self.interval = interval
        self.batch = batch
        self.max_pending = max_pending
        self.prune_every = prune_every
        self.pending: list[T] = []
        self.dropped = 0
        self._added = 0  # items added so far: an item's place is the count once it is in
        self._settled = 0  # every item at or before this place is written, given up on, or dropped
        self._progress = asyncio.Event()
        self._writing = asyncio.Lock()  # one write at a time, so items settle in order
        self._due = asyncio.Event()
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Self:
        await self._stack.enter_async_context(self._running())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    @contextlib.asynccontextmanager
    async def _running(self) -> AsyncIterator[None]:
        async with asyncio.TaskGroup() as tg:
            flusher = tg.create_task(self._run(), name=self.name)
            try:
                yield
            finally:
                flusher.cancel()
        await self.flush()

    def add(self, item: T) -> int:
        """Queue one item; never blocks. Returns its place (for :meth:`settle`)."""
        pending = self.pending
        pending.append(item)
        self._added += 1
        if len(pending) >= self.batch:
            self._due.set()
        if len(pending) > self.max_pending:
            # The store is not keeping up: lose the oldest rather than slow the requests down.
            lost = len(pending) - self.max_pending
            del pending[:lost]
            self.dropped += lost
            logger.warning("%s behind: %d records not written", self.name, lost)
        return self._added

    async def flush(self) -> None:
        """Write everything queued now."""
        async with self._writing:
            # Every item up to ``upto`` is in this batch, in one written before it, or was taken out
            # of the queue (dropped when behind, or forgotten): once the batch is written, all are settled.
            upto = self._added
            items, self.pending = self.pending, []
            try:
                if items:
                    await self._write(items)
            except StoreError as exc:
                self.dropped += len(items)
                logger.warning("%s: %d records not written: %s", self.name, len(items), exc)
            finally:
                self._settled = max(self._settled, upto)
                self._progress.set()
                self._progress = asyncio.Event()

    async def settle(self, time_limit: float, place: int | None = None) -> bool:
        """Wait until the item at ``place`` (by default every item added so far) and those before it
        are written (or given up on), within ``time_limit`` seconds; the flusher writes at once.
        Returns whether they were."""
        target = self._added if place is None else place
        if self._settled >= target:
            return True
        self._due.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(time_limit):
                while self._settled < target:
                    await self._progress.wait()
        return self._settled >= target

    async def _run(self) -> None:
        last_prune = time.monotonic()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._due.wait()
            self._due.clear()
            await self.flush()
            if time.monotonic() - last_prune >= self.prune_every:
                last_prune = time.monotonic()
                try:
                    await self._prune()
                except StoreError as exc:
                    logger.warning("%s: %s", self.name, exc)
