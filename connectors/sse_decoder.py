"""An incremental decoder for ``text/event-stream`` bodies, fed raw bytes as they arrive.

It follows the HTML living standard's rules: lines end in CR, LF or CRLF;
``data``, ``event``, ``id`` and ``retry`` fields; comments start with ``:``;
a blank line dispatches the event (an event with no data is not dispatched,
but its ``id`` still moves the last event id, which is how priming events
work).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SseDecoder", "SseEvent"]


@dataclass(frozen=True)
class SseEvent:
    data: str
    event: str = "message"
    id: str | None = None


class SseDecoder:
    """Feed it chunks; it returns the complete events in them, in order."""

    def __init__(self) -> None:
        self.last_id: str | None = None
        self.retry_ms: int | None = None
        self._pending = b""
        self._data: list[str] = []
        self._event = ""
        self._skip_lf = False

    def feed(self, chunk: bytes) -> list[SseEvent]:
        if self._skip_lf and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._skip_lf = False
        buffer = self._pending + chunk
        events: list[SseEvent] = []
        start = 0
        length = len(buffer)
        while start < length:
            cr = buffer.find(b"\r", start)
            lf = buffer.find(b"\n", start)
            if cr < 0 and lf < 0:
                break
            end = lf if cr < 0 or (0 <= lf < cr) else cr
            line = buffer[start:end]
            start = end + 1
            if buffer[end : end + 1] == b"\r":
                if start < length and buffer[start : start + 1] == b"\n":
                    start += 1
                elif start == length:
                    self._skip_lf = True  # a CRLF split across chunks
            event = self._line(line.decode("utf-8", errors="replace"))
            if event is not None:
                events.append(event)
        self._pending = buffer[start:]
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
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> SseEvent | None:
        data, self._data = self._data, []
        event, self._event = self._event, ""
        if not data:
            return None
        return SseEvent("\n".join(data), event or "message", self.last_id)
