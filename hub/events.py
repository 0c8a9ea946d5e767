"""The SSE event log: events of persistent streams, written behind to the store in batches.

Live readers never wait for the log: a stream's own buffer serves them. The
log serves a client that comes back with a ``Last-Event-ID`` from an earlier
run of the hub, for a session the store let it take back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Self

from hub.store import EventRow, Store, StoreError
from hub.streams import Event

__all__ = ["EventLog"]

logger = logging.getLogger(__name__)

_FLUSH_SECONDS = 0.2
_FLUSH_AT = 500
_PENDING_MAX = 50_000  # events waiting for the store; past this the oldest are dropped
_PRUNE_SECONDS = 60.0


class EventLog:
    """Write-behind log of SSE events; an async context manager owning its flusher task."""

    def __init__(self, store: Store, *, max_age: float, max_events: int) -> None:
        self.max_age = max_age
        self.max_events = max_events
        self._store = store
        self._pending: list[EventRow] = []
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
            flusher = tg.create_task(self._run(), name="event-log")
            try:
                yield
            finally:
                flusher.cancel()
        await self.flush()

    @property
    def backlog(self) -> int:
        """Events waiting to be written."""
        return len(self._pending)

    def record(self, session_id: str, run: str, stream: int, event: Event) -> None:
        """Queue one event for the log; never blocks."""
        self._pending.append(EventRow(session_id, run, stream, event.seq, time.time(), event.data))
        if len(self._pending) >= _FLUSH_AT:
            self._due.set()
        if len(self._pending) > _PENDING_MAX:
            # The store is not keeping up: lose the oldest (live replay is served from memory anyway).
            dropped = len(self._pending) - _PENDING_MAX
            del self._pending[:dropped]
            logger.warning("event log behind: %d events not logged", dropped)

    async def flush(self) -> None:
        """Write every queued event now."""
        rows, self._pending = self._pending, []
        if not rows:
            return
        try:
            await self._store.append_events(rows)
        except StoreError as exc:
            logger.warning("%d events not logged: %s", len(rows), exc)

    async def replay(self, session_id: str, run: str, stream: int, after: int) -> list[tuple[int, bytes]]:
        """The logged events of one stream after ``after``."""
        await self.flush()
        try:
            return await self._store.events_after(session_id, run, stream, after)
        except StoreError as exc:
            logger.warning("%s", exc)
            return []

    async def forget(self, session_id: str) -> None:
        self._pending = [row for row in self._pending if row.session_id != session_id]
        try:
            await self._store.delete_events(session_id)
        except StoreError as exc:
            logger.warning("%s", exc)

    async def _run(self) -> None:
        last_prune = time.monotonic()
        while True:
            try:
                async with asyncio.timeout(_FLUSH_SECONDS):
                    await self._due.wait()
            except TimeoutError:
                pass
            self._due.clear()
            await self.flush()
            if time.monotonic() - last_prune >= _PRUNE_SECONDS:
                last_prune = time.monotonic()
                try:
                    await self._store.prune_events(time.time() - self.max_age, self.max_events)
                except StoreError as exc:
                    logger.warning("%s", exc)
