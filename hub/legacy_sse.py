"""The 2024-11-05 HTTP+SSE transport, for clients that predate Streamable HTTP.

``GET /sse`` opens a connection whose first event names the URL to POST
messages to (``/messages?session_id=...``); every reply and notification of
the session comes back on that one stream. The session behind it is an
ordinary session actor: the same catalog, the same upstream sessions, the
same relays. It ends when the stream closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qs

from connectors import jsonrpc
from connectors.jsonrpc import Kind, Message
from hub.errors import HubError
from hub.runtime import Hub
from hub.session import EndReason, Session, SessionBusy, SessionClosed
from hub.streams import Stream
from hub.transport import ClientGone, Receive, Scope, Send, read_body, respond

__all__ = ["LegacySse"]

logger = logging.getLogger(__name__)

_QUEUE: Final = 1024
_SSE_HEADERS: Final = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache, no-transform")]


@dataclass
class _Connection:
    id: str
    out: asyncio.Queue[bytes] = field(default_factory=lambda: asyncio.Queue(_QUEUE))
    pumps: asyncio.Queue[Stream] = field(default_factory=lambda: asyncio.Queue(_QUEUE))
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    session: Session | None = None


class LegacySse:
    """The two endpoints of the legacy transport, as plain ASGI apps."""

    def __init__(self, hub: Hub, *, message_path: str = "/messages") -> None:
        self.hub = hub
        self.message_path = message_path
        self._connections: dict[str, _Connection] = {}
        self.max_body = hub.config.hub.max_body_bytes

    # -- GET /sse ----------------------------------------------------------------------------------

    async def stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "GET":
            await respond(send, 405, b"", [(b"allow", b"GET")])
            return
        connection = _Connection(secrets.token_hex(16))
        self._connections[connection.id] = connection
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        endpoint = f"event: endpoint\ndata: {self.message_path}?session_id={connection.id}\n\n"
        await send({"type": "http.response.body", "body": endpoint.encode(), "more_body": True})
        try:
            async with asyncio.TaskGroup() as tasks:
                connection.tasks.add(tasks.create_task(self._write(connection, send)))
                connection.tasks.add(tasks.create_task(self._start_pumps(connection, tasks)))
                await _disconnected(receive)
                for task in connection.tasks:
                    task.cancel()
        finally:
            del self._connections[connection.id]
            if connection.session is not None:
                connection.session.readers -= 1
                connection.session.close(EndReason.DELETED)
            with contextlib.suppress(Exception):
                await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _write(self, connection: _Connection, send: Send) -> None:
        while True:
            chunk = await connection.out.get()
            try:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except OSError:
                return  # the client is gone; the disconnect event ends the connection

    async def _start_pumps(self, connection: _Connection, tasks: asyncio.TaskGroup) -> None:
        while True:
            stream = await connection.pumps.get()
            task = tasks.create_task(self._pump(connection, stream))
            connection.tasks.add(task)
            task.add_done_callback(connection.tasks.discard)

    async def _pump(self, connection: _Connection, stream: Stream) -> None:
        async for _, message in stream.read(0, stream.claim()):
            await connection.out.put(b"event: message\ndata: " + jsonrpc.dumps(message) + b"\n\n")

    # -- POST /messages ----------------------------------------------------------------------------

    async def messages(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            await respond(send, 405, b"", [(b"allow", b"POST")])
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        connection = self._connections.get((query.get("session_id") or [""])[0])
        if connection is None:
            await respond(send, 404, b"unknown session_id")
            return
        try:
            body = await read_body(receive, self.max_body)
        except ClientGone:
            return  # nobody is left to answer
        if body is None:
            await respond(send, 413, b"request body too large")
            return
        try:
            message: Any = jsonrpc.loads(body)
        except ValueError:
            await respond(send, 400, b"the body is not valid JSON")
            return
        kind = jsonrpc.classify(message)
        if kind is None:
            await respond(send, 400, b"not a JSON-RPC 2.0 message")
            return
        await respond(send, 202, b"Accepted")
        await self._accept(connection, kind, message)

    async def _accept(self, connection: _Connection, kind: Kind, message: Message) -> None:
        if kind is Kind.REQUEST and message["method"] == "initialize":
            await self._initialize(connection, message)
            return
        session = connection.session
        if session is None:
            if kind is Kind.REQUEST:
                error = {"code": -32600, "message": "initialize first"}
                await connection.out.put(_event(jsonrpc.error_response(message["id"], error)))
            return
        try:
            stream = session.submit(kind, message)
        except (SessionClosed, SessionBusy) as exc:
            if kind is Kind.REQUEST:
                error = {"code": -32000, "message": f"session unavailable: {type(exc).__name__}"}
                await connection.out.put(_event(jsonrpc.error_response(message["id"], error)))
            return
        if stream is not None:
            try:
                connection.pumps.put_nowait(stream)
            except asyncio.QueueFull:
                error = {"code": -32000, "message": "too many requests in flight on this connection"}
                stream.finish(jsonrpc.error_response(message["id"], error))

    async def _initialize(self, connection: _Connection, message: Message) -> None:
        if connection.session is not None:
            error = {"code": -32600, "message": "this connection is already initialized"}
            await connection.out.put(_event(jsonrpc.error_response(message["id"], error)))
            return
        try:
            session, result = await self.hub.initialize(message.get("params") or {})
        except HubError as exc:
            await connection.out.put(_event(jsonrpc.error_response(message["id"], exc.to_error())))
            return
        connection.session = session
        session.readers += 1  # the connection is open: the session stays alive with it
        await connection.out.put(_event(jsonrpc.response(message["id"], result)))
        connection.pumps.put_nowait(session.get_stream)


def _event(message: Message) -> bytes:
    return b"event: message\ndata: " + jsonrpc.dumps(message) + b"\n\n"


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
