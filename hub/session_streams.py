"""The streams of one session and their bookkeeping: numbering, readers, the GET stream, pruning.

Stream 0 is the session's GET stream (messages that belong to no request);
every request gets the next number. The transport asks for what it needs
(:meth:`SessionStreams.reading` around a connection that writes a stream,
:meth:`SessionStreams.listening` around the GET stream) and this module keeps
the counts: how many connections read the session now (the idle alarm waits
for them), whether a GET stream is open, which streams are logged to the
store for replay after a restart.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

from connectors import jsonrpc
from hub.errors import StreamConflict
from hub.streams import Event, EventId, Stream

__all__ = ["SessionStreams", "StreamSettings"]


def _too_large(request_id: object, size: int, limit: int) -> bytes:
    error = {
        "code": -32603,
        "message": f"the reply ({size} bytes) was larger than events.perStreamBytes ({limit}) and was not kept "
        "for replay; make the request again",
    }
    return jsonrpc.dumps(jsonrpc.error_response(request_id, error))


_GET_STREAM: Final = 0


@dataclass(frozen=True)
class StreamSettings:
    retain: int = 1000
    retain_bytes: int = 16 * 1024 * 1024
    retention: float = 300.0
    max_finished: int = 64


class SessionStreams:
    """Every stream of one session."""

    def __init__(
        self,
        run: str,
        settings: StreamSettings,
        log: Callable[[int, Event], int | None] | None = None,
    ) -> None:
        self.run = run
        self.settings = settings
        self._log = log
        self._streams: dict[int, Stream] = {}
        self._numbers = itertools.count()
        self.readers = 0  # connections writing one of these streams right now
        self._get_open = 0
        self._get_served = False
        self._settled: dict[int, int] = {}  # finished streams kept for replay, and their bytes
        self._settled_bytes = 0
        self.get = self.open()
        self._persist(self.get)

    def __len__(self) -> int:
        return len(self._streams)

    def open(self, request_id: object = None) -> Stream:
        """A new stream, for one request's related messages and reply."""
        if len(self._streams) > 2 * self.settings.max_finished:
            self._prune()  # amortized: not on every request
        settings = self.settings
        stream = Stream(
            next(self._numbers), retain=settings.retain, retain_bytes=settings.retain_bytes, request_id=request_id
        )
        self._streams[stream.number] = stream
        return stream

    def find(self, number: int) -> Stream | None:
        return self._streams.get(number)

    def forget(self, stream: Stream) -> None:
        """Drop a finished stream nobody can resume: its reply went out as one JSON body, with no event id."""
        if stream.number != _GET_STREAM:
            self._streams.pop(stream.number, None)

    def event_id(self, stream: Stream, seq: int) -> str:
        return str(EventId(self.run, stream.number, seq))

    @contextlib.contextmanager
    def reading(self, stream: Stream, claim: int | None = None) -> Iterator[int]:
        """Around a connection that writes ``stream`` as SSE: logs the stream for replay and counts
        the reader; yields the reader's claim (``claim``, when it has one already)."""
        self._persist(stream)
        self.readers += 1
        try:
            yield stream.claim() if claim is None else claim
        finally:
            self.readers -= 1
            if stream.finished and stream.number != _GET_STREAM:
                self._settle(stream)

    def _settle(self, stream: Stream) -> None:
        """Keep a finished stream for replay within the byte budget; the oldest go first."""
        if stream.number in self._settled or stream.number not in self._streams:
            return
        self._settled[stream.number] = stream.size
        self._settled_bytes += stream.size
        while self._settled_bytes > self.settings.retain_bytes and len(self._settled) > 1:
            number, size = next(iter(self._settled.items()))
            del self._settled[number]
            self._settled_bytes -= size
            self._streams.pop(number, None)

    @contextlib.contextmanager
    def listening(self, after: int | None = None) -> Iterator[int]:
        """Around a connection serving the session's GET stream; yields where reading starts.

        A fresh GET (``after`` is None) may not join one that is open. The first GET stream of a
        session starts at the beginning (so nothing sent between initialize and the client's
        first GET is lost); later ones start from now. A resumption starts after ``after``.

        Raises:
            StreamConflict: a fresh GET while a GET stream is open.
        """
        if after is None:
            if self._get_open:
                raise StreamConflict("Conflict: this session already has a GET stream open")
            start = 0 if not self._get_served else self.get.last_seq
        else:
            start = after
        self._get_served = True
        self._get_open += 1
        try:
            yield start
        finally:
            self._get_open -= 1

    @property
    def get_open(self) -> bool:
        return self._get_open > 0

    def release_all(self) -> None:
        """End every connection reading an unfinished stream (it goes on, for clients to resume);
        readers of finished streams still deliver what is left and end by themselves."""
        for stream in self._streams.values():
            if not stream.finished:
                stream.release()

    def finish_all(self) -> None:
        for stream in self._streams.values():
            stream.finish()

    def _persist(self, stream: Stream) -> None:
        log = self._log
        if log is not None and not stream.persistent:
            limit = self.settings.retain_bytes
            if stream.request_id is not None:
                # Event 0 of a logged stream names its request: a replay after the hub serving it died
                # can answer it with an error rather than leave the client waiting for ever.
                log(stream.number, Event(0, jsonrpc.dumps({"id": stream.request_id}), False))

            # An event past the replay budget is not written to the store either (a 100 MB result); a
            # reply that is, is logged as an error saying so, so a replay does not end in silence.
            def sink(s: Stream, event: Event) -> int | None:
                if len(event.data) <= limit:
                    return log(s.number, event)
                if event.reply and s.request_id is not None:
                    return log(s.number, Event(event.seq, _too_large(s.request_id, len(event.data), limit), True))
                return None

            stream.persist(sink)

    def _prune(self) -> None:
        # Finished streams are kept a while for clients that come back with Last-Event-ID.
        settings = self.settings
        finished = sorted((s.finished_at, n) for n, s in self._streams.items() if s.finished_at is not None)
        cutoff = time.monotonic() - settings.retention
        excess = len(finished) - settings.max_finished
        for index, (finished_at, number) in enumerate(finished):
            if number != _GET_STREAM and (finished_at < cutoff or index < excess):
                del self._streams[number]
                self._settled_bytes -= self._settled.pop(number, 0)
