"""The SSE streams of a session: numbered events, a bounded replay buffer, one live reader.

A stream's events are numbered from 1; event ids are ``<run>-<stream>-<seq>``,
where ``run`` names this run of the hub, so ids stay unique across restarts.
Stream 0 is the session's GET stream; every request answered over SSE gets
the next number. A reader reads from a position and may be replaced by a new
reader resuming from its ``Last-Event-ID``: events produced while nobody is
connected wait in the buffer, so a dropped connection loses nothing that
still fits in it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass

from connectors.jsonrpc import Message

__all__ = ["EventId", "Stream", "resumable"]


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
        run, _, rest = text.strip().partition("-")
        stream, _, seq = rest.partition("-")
        if not run or not (stream + seq).isascii() or not stream.isdigit() or not seq.isdigit():
            return None
        return cls(run, int(stream), int(seq))


EventSink = Callable[["Stream", int, Message], None]
"""Told of every event of a stream once it is persistent (the store's write-behind log)."""


class Stream:
    """One stream of one session."""

    def __init__(self, number: int, *, retain: int = 1000) -> None:
        self.number = number
        self.finished_at: float | None = None
        self._retain = retain
        self._events: deque[tuple[int, Message]] = deque(maxlen=retain)
        self._seq = 0
        self._wake = asyncio.Event()
        self._reader = 0
        self._sink: EventSink | None = None

    @property
    def finished(self) -> bool:
        return self.finished_at is not None

    @property
    def last_seq(self) -> int:
        return self._seq

    def persist(self, sink: EventSink) -> None:
        """From now on, tell ``sink`` of every event, starting with those already buffered."""
        self._sink = sink
        for seq, message in self._events:
            sink(self, seq, message)

    def push(self, message: Message) -> bool:
        """Add an event; False once the stream is finished. Never blocks: the oldest event makes room."""
        if self.finished_at is not None:
            return False
        self._append(message)
        return True

    def finish(self, message: Message | None = None) -> None:
        """Add the last event (if any) and end the stream after it."""
        if self.finished_at is not None:
            return
        if message is not None:
            self._append(message)
        self.finished_at = time.monotonic()
        self._wake.set()

    def _append(self, message: Message) -> None:
        self._seq += 1
        self._events.append((self._seq, message))
        if self._sink is not None:
            self._sink(self, self._seq, message)
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

    async def read(self, after: int, claim: int) -> AsyncGenerator[tuple[int, Message], None]:
        """Events after ``after``, then live ones, until the stream ends or another reader claims it."""
        cursor = after
        while claim == self._reader:
            if self._events and self._events[-1][0] > cursor:
                # Seqs in the buffer are contiguous, so the next one is found by arithmetic; events
                # evicted before anyone read them are gone, and reading goes on from the oldest kept.
                seq, message = self._events[max(cursor + 1 - self._events[0][0], 0)]
                cursor = seq
                yield seq, message
                continue
            if self.finished_at is not None:
                return
            self._wake.clear()
            await self._wake.wait()
