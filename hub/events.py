"""The SSE event log: events of persistent streams, written behind to the store in batches.

Live readers never wait for the log: a stream's own buffer serves them. The
log serves a client that comes back with a ``Last-Event-ID`` from an earlier
run of the hub, for a session the store let it take back.
"""

from __future__ import annotations

import contextlib
import logging
import time
from types import TracebackType
from typing import Self

from hub.store import EventRow, Store, StoreError
from hub.streams import Event
from hub.write_behind import WriteBehind

__all__ = ["EventLog"]

logger = logging.getLogger(__name__)


class EventLog:
    """Write-behind log of SSE events; an async context manager owning its flusher task."""

    def __init__(self, store: Store, *, max_age: float, max_events: int, durable: float | None = None) -> None:
        self.max_age = max_age
        self.max_events = max_events
        self.durable = durable
        """With replicas: seconds a stream's reader waits for its events to be logged before it writes
        them, so whatever a client saw, another replica can replay after it (None: write behind)."""
        self._store = store
        self._queue: WriteBehind[EventRow] = WriteBehind("event log", store.append_events, self._prune)
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Self:
        await self._stack.enter_async_context(self._queue)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    @property
    def backlog(self) -> int:
        """Events waiting to be written."""
        return len(self._queue.pending)

    def record(self, session_id: str, run: str, stream: int, event: Event) -> int | None:
        """Queue one event for the log; never blocks. Written through (:attr:`durable`): returns
        its place, for :meth:`settle`."""
        place = self._queue.add(EventRow(session_id, run, stream, event.seq, time.time(), event.data))
        return place if self.durable is not None else None

    async def settle(self, place: int) -> None:
        """Wait (up to :attr:`durable` seconds) until the event recorded at ``place`` is in the store."""
        if self.durable is not None:
            await self._queue.settle(self.durable, place)

    async def flush(self) -> None:
        """Write every queued event now."""
        await self._queue.flush()

    async def replay(
        self, session_id: str, run: str, stream: int, after: int, upto: int | None = None
    ) -> list[tuple[int, bytes]]:
        """The logged events of one stream after ``after`` (up to ``upto``), one per number."""
        await self.flush()
        try:
            rows = await self._store.events_after(session_id, run, stream, after, upto)
        except StoreError as exc:
            logger.warning("%s", exc)
            return []
        # Two runs may both have logged a number (a takeover while the old owner still ran): one stays,
        # the same one for every replay (rows come in order of number, then of bytes).
        once: list[tuple[int, bytes]] = []
        for seq, data in rows:
            if not once or once[-1][0] != seq:
                once.append((seq, data))
        return once

    async def forget(self, session_id: str) -> None:
        queue = self._queue
        queue.pending = [row for row in queue.pending if row.session_id != session_id]
        try:
            await self._store.delete_events(session_id)
        except StoreError as exc:
            logger.warning("%s", exc)

    async def _prune(self) -> None:
        await self._store.prune_events(time.time() - self.max_age, self.max_events)
