"""ASGI plumbing shared by every endpoint: types, headers, bounded body reads, plain replies."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from connectors import jsonrpc
from hub.errors import BodyTooLarge, InvalidRequest, RequestTimeout, WireError

__all__ = ["Receive", "Scope", "Send", "header_map", "read_body", "respond", "respond_error", "watch_disconnect"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def header_map(scope: Scope) -> dict[str, str]:
    """The request's headers, names lower-cased (the server already does), values as text."""
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}


async def read_body(receive: Receive, limit: int, time_limit: float) -> bytes:
    """A request's whole body.

    Raises:
        BodyTooLarge: it passed ``limit`` bytes.
        RequestTimeout: it did not all arrive within ``time_limit`` seconds.
        InvalidRequest: the client disconnected first.
    """
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(time_limit):
            while True:
                event = await receive()
                if event["type"] == "http.disconnect":
                    raise InvalidRequest("client disconnected")
                chunk = event.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge(f"request body larger than {limit} bytes")
                chunks.append(chunk)
                if not event.get("more_body", False):
                    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    except TimeoutError:
        message = f"the request body did not arrive within {time_limit:g}s"
        raise RequestTimeout(message, headers={"connection": "close"}) from None  # the rest may still come


async def respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers or []})
    await send({"type": "http.response.body", "body": body})


async def respond_error(send: Send, wire: WireError, request_id: Any = None) -> None:
    """A JSON-RPC error as the whole HTTP reply, with the error's status and headers."""
    headers = [(b"content-type", b"application/json")]
    headers += [(name.encode("latin-1"), value.encode("latin-1")) for name, value in wire.headers.items()]
    body = jsonrpc.dumps(jsonrpc.error_response(request_id, wire.error))
    await respond(send, wire.status, body, headers)


async def watch_disconnect(receive: Receive, gone: asyncio.Event, on_gone: Callable[[], object]) -> None:
    """Wait for the client to go (after the body was read); then set ``gone`` and call ``on_gone``."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            gone.set()
            on_gone()
            return
