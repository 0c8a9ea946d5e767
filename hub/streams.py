"""One SSE stream of a session: numbered events, a bounded replay buffer, one live reader.

A stream's events are numbered from 1; event ids are ``<run>-<stream>-<seq>``,
where ``run`` names this run of the hub, so ids stay unique across restarts.
Each event is encoded once, when it is added, and kept as bytes: every reader
and the store's log write those bytes. A reader reads from a position and may
be replaced by a new reader resuming from its ``Last-Event-ID``: events
produced while nobody is connected wait in the buffer, so a dropped
connection loses nothing that still fits in it (``retain`` events and
``retain_bytes`` bytes; the newest event is always kept).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Final, NamedTuple

from connectors import jsonrpc
from connectors.jsonrpc import Message

__all__ = ["Event", "EventId", "EventSink", "Stream", "resumable"]

_MAX_NUMBER_DIGITS: Final = 18  # more than any stream or sequence number of a real run


def resumable(version: str) -> bool:
    """Whether a client on ``version`` understands priming events (an id and empty data): 2025-11-25 on."""
    return version >= "2025-11-25"


@dataclass(frozen=True)
class EventId:
    run: str
    stream: int
    seq: int

    def __str__(self) -> str:
        return f"{self.run}-{self.stream}-{self.seq}"

    @classmethod
    def parse(cls, text: str) -> EventId | None:
        """The id, or None when ``text`` is not one this hub could have made."""
        run, _, rest = text.strip().partition("-")
        stream, _, seq = rest.partition("-")
        if not run or len(run) > 64 or not (stream + seq).isascii() or not stream.isdigit() or not seq.isdigit():
            return None
        if len(stream) > _MAX_NUMBER_DIGITS or len(seq) > _MAX_NUMBER_DIGITS:
            return None
        return cls(run, int(stream), int(seq))


class Event(NamedTuple):
    seq: int
    data: bytes
    reply: bool
    """Whether this is the response that ends a request's stream."""
    logged: int = 0
    """Where a log written through holds the event: a reader waits for that place to be written
    before it sends the event (0: nothing to wait for)."""


EventSink = Callable[["Stream", Event], int | None]
"""Told of every event of a stream once it is persistent (the store's log); may answer where the
log holds it (:attr:`Event.logged`)."""


class Stream:
    """One stream of one session."""

    def __init__(
        self, number: int, *, retain: int = 1000, retain_bytes: int = 16 * 1024 * 1024, request_id: object = None
    ) -> None:
        self.number = number
        self.request_id = request_id
        """The id of the request whose reply ends the stream (None for the GET stream)."""
        self.finished_at: float | None = None
        self._retain_bytes = retain_bytes
        self._events: deque[Event] = deque(maxlen=retain)
        self._bytes = 0
        self._seq = 0
        self._wake = asyncio.Event()
        self._reader = 0
        self._sink: EventSink | None = None
        self._finished: asyncio.Event | None = None
        self._on_finish: tuple[Callable[[], None], ...] = ()

    @property
    def finished(self) -> bool:
        return self.finished_at is not None

    @property
    def last_seq(self) -> int:
        return self._seq

    @property
    def size(self) -> int:
        """Bytes of the events kept."""
        return self._bytes

    @property
    def persistent(self) -> bool:
        return self._sink is not None

    def buffered(self) -> list[Event]:
        """The events still kept for replay, oldest first."""
        return list(self._events)

    def persist(self, sink: EventSink) -> None:
        """From now on, tell ``sink`` of every event, starting with those already buffered."""
        if self._sink is not None:
            return
        self._sink = sink
        events = self._events
        for index, event in enumerate(events):
            logged = sink(self, event)
            if logged:
                events[index] = event._replace(logged=logged)

    def push(self, message: Message) -> bool:
        """Add an event; False once the stream is finished. Never blocks: the oldest event makes room."""
        if self.finished_at is not None:
            return False
        self._append(jsonrpc.dumps(message), False)
        return True

    def finish(self, message: Message | None = None) -> int:
        """Add the last event (if any: the reply) and end the stream after it; returns the reply's size."""
        if self.finished_at is not None:
            return 0
        size = 0
        if message is not None:
            data = jsonrpc.dumps(message)
            size = len(data)
            self._append(data, True)
        self.finished_at = time.monotonic()
        self._wake.set()
        if self._finished is not None:
            self._finished.set()
        for callback in self._on_finish:
            callback()
        self._on_finish = ()
        return size

    def on_finish(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the stream ends (at once if it has)."""
        if self.finished_at is not None:
            callback()
        else:
            self._on_finish = (*self._on_finish, callback)

    async def wait_finished(self) -> None:
        """Return once the stream has ended (without reading it)."""
        if self.finished_at is None:
            if self._finished is None:
                self._finished = asyncio.Event()
            await self._finished.wait()

    def _append(self, data: bytes, reply: bool) -> None:
        self._seq += 1
        events = self._events
        if len(events) == events.maxlen:
            self._bytes -= len(events[0].data)
        event = Event(self._seq, data, reply)
        if self._sink is not None:
            logged = self._sink(self, event)
            if logged:
                event = Event(self._seq, data, reply, logged)
        events.append(event)
        self._bytes += len(data)
        while self._bytes > self._retain_bytes and len(events) > 1:
            self._bytes -= len(events.popleft().data)
        self._wake.set()

    def release(self, claim: int | None = None) -> None:
        """End the current reader's connection (only if it still holds ``claim``, when given);
        the stream goes on for the next one to resume."""
        if claim is None or claim == self._reader:
            self.claim()

    def claim(self) -> int:
        """Become the stream's reader; an earlier reader stops at its next event."""
        self._reader += 1
        self._wake.set()
        return self._reader

    async def read(self, after: int, claim: int) -> AsyncGenerator[Event, None]:
        """Events after ``after``, then live ones, until the stream ends or another reader claims it."""
        cursor = after
        events = self._events
        while claim == self._reader:
            if events and events[-1].seq > cursor:
                # Seqs in the buffer are contiguous, so the next one is found by arithmetic; events
                # evicted before anyone read them are gone, and reading goes on from the oldest kept.
                event = events[max(cursor + 1 - events[0].seq, 0)]
                cursor = event.seq
                yield event
                continue
            if self.finished_at is not None:
                return
            self._wake.clear()
            await self._wake.wait()
