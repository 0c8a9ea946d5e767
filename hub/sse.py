"""SSE framing for every stream the hub writes (``/mcp`` and the legacy ``/sse``), and keep-alive."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from typing import Final, TypeVar

from hub.asgi import Send

__all__ = ["KEEPALIVE", "SSE_HEADERS", "SseWriter", "event", "priming", "with_keepalive"]

SSE_HEADERS: Final = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
]
KEEPALIVE: Final = b": keepalive\n\n"
KEEPALIVE_SECONDS: Final = 15.0

T = TypeVar("T")


def event(data: bytes, event_id: str | None = None, name: str = "message") -> bytes:
    """One event; ``data`` is a JSON message (one line: orjson never writes a line break)."""
    head = f"id: {event_id}\nevent: {name}\ndata: " if event_id is not None else f"event: {name}\ndata: "
    return head.encode() + data + b"\n\n"


def priming(event_id: str, retry_ms: int) -> bytes:
    """An event with an id and no data: lets a client resume even if it gets nothing more."""
    return f"id: {event_id}\nretry: {retry_ms}\ndata: \n\n".encode()


class SseWriter:
    """Writes one SSE response: the head once, then chunks, then the end (also after a failure)."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False
        self.ended = False

    async def start(self) -> None:
        if not self.started:
            self.started = True
            await self._send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})

    async def write(self, chunk: bytes) -> None:
        await self._send({"type": "http.response.body", "body": chunk, "more_body": True})

    async def end(self) -> None:
        if self.started and not self.ended:
            self.ended = True
            with contextlib.suppress(Exception):  # the client may be gone already
                await self._send({"type": "http.response.body", "body": b"", "more_body": False})


async def with_keepalive(
    items: AsyncGenerator[T, None], idle: float = KEEPALIVE_SECONDS
) -> AsyncGenerator[T | None, None]:
    """Pass items through; yield ``None`` after each quiet spell of ``idle`` seconds (write a comment)."""
    pending: asyncio.Future[T] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(items))
            done, _ = await asyncio.wait({pending}, timeout=idle)
            if not done:
                yield None
                continue
            try:
                item = pending.result()
            except StopAsyncIteration:
                return
            pending = None
            yield item
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await pending
        await items.aclose()
