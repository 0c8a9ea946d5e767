"""An incremental, bounded decoder for ``text/event-stream`` bodies, fed raw bytes as they arrive.

It follows the HTML living standard's rules: lines end in CR, LF or CRLF;
``data``, ``event``, ``id`` and ``retry`` fields; comments start with ``:``;
a blank line dispatches the event (an event with no data is not dispatched,
but its ``id`` still moves the last event id, which is how priming events
work).

One event (its data lines together, plus any line still incomplete) may not
pass ``max_event`` bytes: an upstream that sends one endless event, or a line
that never ends, is stopped there instead of growing the hub's memory. Each
byte is scanned once, however the stream is cut into chunks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

__all__ = ["DEFAULT_MAX_EVENT", "EventTooLarge", "SseDecoder", "SseEvent"]

DEFAULT_MAX_EVENT: Final = 128 * 1024 * 1024
_LINE_END: Final = re.compile(rb"\r\n|\r|\n")


class EventTooLarge(ValueError):
    """One event of the stream passed the decoder's limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"an event-stream event larger than {limit} bytes")
        self.limit = limit


@dataclass(frozen=True)
class SseEvent:
    data: bytes
    event: str = "message"
    id: str | None = None


class SseDecoder:
    """Feed it chunks; it returns the complete events in them, in order.

    Raises ``EventTooLarge`` from :meth:`feed` once one event passes ``max_event`` bytes.
    """

    def __init__(self, max_event: int = DEFAULT_MAX_EVENT) -> None:
        self.max_event = max_event
        self.last_id: str | None = None
        self.retry_ms: int | None = None
        self._pending = bytearray()
        self._data: list[bytes] = []
        self._size = 0
        self._event = ""
        self._started = False
        self._skip_lf = False

    def feed(self, chunk: bytes) -> list[SseEvent]:
        if self._skip_lf and chunk.startswith(b"\n"):
            chunk = chunk[1:]  # the second half of a CRLF split across chunks
        self._skip_lf = False
        buffer = self._pending
        scan = len(buffer)  # what is already buffered holds no line end
        buffer += chunk
        if not self._started and len(buffer) >= 3:
            self._started = True
            if buffer.startswith(b"\xef\xbb\xbf"):
                del buffer[:3]  # a byte order mark opens the stream; it is not part of a line
                scan = 0
        events: list[SseEvent] = []
        start = 0
        while (match := _LINE_END.search(buffer, scan)) is not None:
            if match.end() == len(buffer) and buffer[match.start()] == 0x0D and match.end() - match.start() == 1:
                self._skip_lf = True  # a CR ends the line; an LF in the next chunk belongs to it
            event = self._line(bytes(memoryview(buffer)[start : match.start()]))  # one copy, not two
            start = scan = match.end()
            if event is not None:
                events.append(event)
        del buffer[:start]
        if len(buffer) + self._size > self.max_event:
            raise EventTooLarge(self.max_event)
        return events

    def _line(self, line: bytes) -> SseEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(b":"):
            return None
        name, colon, value = line.partition(b":")
        if colon and value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            self._size += len(value) + 1
            if self._size > self.max_event:
                raise EventTooLarge(self.max_event)
            self._data.append(value)
        elif name == b"event":
            self._event = value.decode("utf-8", errors="replace")
        elif name == b"id":
            if b"\0" not in value:
                self.last_id = value.decode("utf-8", errors="replace")
        elif name == b"retry" and value.isdigit() and len(value) <= 9:
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> SseEvent | None:
        data, self._data = self._data, []
        self._size = 0
        event, self._event = self._event, ""
        if not data:
            return None
        return SseEvent(data[0] if len(data) == 1 else b"\n".join(data), event or "message", self.last_id)
