"""An incremental decoder for ``text/event-stream`` bodies, fed raw bytes as they arrive.

It follows the HTML living standard's rules: lines end in CR, LF or CRLF;
``data``, ``event``, ``id`` and ``retry`` fields; comments start with ``:``;
a blank line dispatches the event (an event with no data is not dispatched,
but its ``id`` still moves the last event id, which is how priming events
work).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["MAX_LINE", "SseDecoder", "SseEvent"]


@dataclass(frozen=True)
class SseEvent:
    data: str
    event: str = "message"
    id: str | None = None


_LINE_END = re.compile(rb"\r\n|\r|\n")
MAX_LINE = 16 * 1024 * 1024


class SseDecoder:
    """Feed it chunks; it returns the complete events in them, in order.

    Raises ``ValueError`` from :meth:`feed` for a line longer than ``MAX_LINE`` bytes.
    """

    def __init__(self) -> None:
        self.last_id: str | None = None
        self.retry_ms: int | None = None
        self._pending = bytearray()
        self._data: list[str] = []
        self._event = ""
        self._started = False
        self._skip_lf = False

    def feed(self, chunk: bytes) -> list[SseEvent]:
        if self._skip_lf and chunk.startswith(b"\n"):
            chunk = chunk[1:]  # the second half of a CRLF split across chunks
        self._skip_lf = False
        self._pending += chunk
        if not self._started and len(self._pending) >= 3:
            self._started = True
            if self._pending.startswith(b"\xef\xbb\xbf"):
                del self._pending[:3]  # a byte order mark opens the stream; it is not part of a line
        events: list[SseEvent] = []
        start = 0
        buffer = self._pending
        for match in _LINE_END.finditer(buffer):
            if match.group() == b"\r" and match.end() == len(buffer):
                self._skip_lf = True  # a CR ends the line; an LF in the next chunk belongs to it
            event = self._line(bytes(buffer[start : match.start()]).decode("utf-8", errors="replace"))
            start = match.end()
            if event is not None:
                events.append(event)
        del self._pending[:start]
        if len(self._pending) > MAX_LINE:
            raise ValueError(f"an event-stream line longer than {MAX_LINE} bytes")
        return events

    def _line(self, line: str) -> SseEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self.last_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> SseEvent | None:
        data, self._data = self._data, []
        event, self._event = self._event, ""
        if not data:
            return None
        return SseEvent("\n".join(data), event or "message", self.last_id)
