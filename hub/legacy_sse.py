"""The 2024-11-05 HTTP+SSE transport, for clients that predate Streamable HTTP.

``GET /sse`` opens a connection whose first event names the URL to POST
messages to (``/messages?session_id=...``); every reply and notification of
the session comes back on that one stream. The session behind it is an
ordinary session actor: the same dispatch (``initialize`` included), the same
catalog, upstream sessions and relays. It ends when the stream closes, when
the session ends, or when the hub drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import parse_qs

from connectors import jsonrpc
from connectors.jsonrpc import Kind, Message
from hub.asgi import Receive, Scope, Send, header_map, read_body, respond, respond_error
from hub.config import HubSettings
from hub.errors import HubError, InvalidRequest, ShuttingDown, to_wire
from hub.gate import Gate
from hub.mcp_request import decode_message
from hub.session import Session
from hub.session_services import EndReason
from hub.sessions import SessionManager
from hub.sse import SseWriter, event
from hub.streams import Stream

__all__ = ["LegacySse"]

logger = logging.getLogger(__name__)

_QUEUE: Final = 1024


@dataclass
class _Connection:
    id: str
    session: Session
    out: asyncio.Queue[bytes] = field(default_factory=lambda: asyncio.Queue(_QUEUE))
    pumps: asyncio.Queue[Stream] = field(default_factory=lambda: asyncio.Queue(_QUEUE))
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class LegacySse:
    """The two endpoints of the legacy transport, as plain ASGI apps."""

    def __init__(
        self,
        sessions: SessionManager,
        *,
        settings: Callable[[], HubSettings],
        accepting: Callable[[], bool],
        stopped: asyncio.Event,
        gate: Callable[[], Gate],
        message_path: str = "/messages",
    ) -> None:
        self.sessions = sessions
        self.gate = gate
        self.settings = settings
        self.accepting = accepting
        self.stopped = stopped
        self.message_path = message_path
        self._connections: dict[str, _Connection] = {}

    # -- GET /sse ----------------------------------------------------------------------------------

    async def stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "GET":
            await respond(send, 405, b"", [(b"allow", b"GET")])
            return
        try:
            gate = self.gate()
            caller = await gate.caller(header_map(scope), "GET /sse")
            if not self.accepting():
                raise ShuttingDown()
            session = self.sessions.open(caller, gate.tenant(caller))
        except HubError as exc:
            await respond_error(send, to_wire(exc))
            return
        connection = _Connection(secrets.token_hex(16), session)
        self._connections[connection.id] = connection
        writer = SseWriter(send)
        await writer.start()
        await writer.write(f"event: endpoint\ndata: {self.message_path}?session_id={connection.id}\n\n".encode())
        try:
            # The open connection keeps the session alive: it counts as a reader of its streams.
            with session.streams.reading(session.streams.get):
                async with asyncio.TaskGroup() as tasks:
                    connection.tasks.add(tasks.create_task(self._write(connection, writer)))
                    connection.tasks.add(tasks.create_task(self._start_pumps(connection, tasks)))
                    await _until_over(receive, session, self.stopped)
                    for task in connection.tasks:
                        task.cancel()
        finally:
            del self._connections[connection.id]
            session.close(EndReason.DELETED)
            await writer.end()

    async def _write(self, connection: _Connection, writer: SseWriter) -> None:
        while True:
            chunk = await connection.out.get()
            try:
                await writer.write(chunk)
            except OSError:
                return  # the client is gone; the disconnect event ends the connection

    async def _start_pumps(self, connection: _Connection, tasks: asyncio.TaskGroup) -> None:
        while True:
            stream = await connection.pumps.get()
            task = tasks.create_task(self._pump(connection, stream))
            connection.tasks.add(task)
            task.add_done_callback(connection.tasks.discard)

    async def _pump(self, connection: _Connection, stream: Stream) -> None:
        async with contextlib.aclosing(stream.read(0, stream.claim())) as events:
            async for item in events:
                await connection.out.put(event(item.data))

    # -- POST /messages ----------------------------------------------------------------------------

    async def messages(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            await respond(send, 405, b"", [(b"allow", b"POST")])
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        try:
            caller = await self.gate().caller(header_map(scope), "POST /messages")
        except HubError as exc:
            await respond_error(send, to_wire(exc))
            return
        connection = self._connections.get((query.get("session_id") or [""])[0])
        owner = None if connection is None else connection.session.caller
        if connection is None or owner is None or (owner.principal, owner.tenant) != (caller.principal, caller.tenant):
            await respond(send, 404, b"unknown session_id")  # someone else's answers like none
            return
        settings = self.settings()
        try:
            body = await read_body(receive, settings.max_body_bytes, settings.request_read_timeout)
            message = decode_message(body, settings.max_json_depth)
            kind = jsonrpc.classify(message)
            if kind is None:
                raise InvalidRequest("not a JSON-RPC 2.0 message")
        except HubError as exc:
            await respond(send, exc.http_status or 400, exc.message.encode())
            return
        await respond(send, 202, b"Accepted")
        await self._accept(connection, kind, message)

    async def _accept(self, connection: _Connection, kind: Kind, message: Message) -> None:
        session = connection.session
        release = None
        try:
            if kind is Kind.REQUEST:
                release = await self.gate().admit(session.caller, message["method"], message.get("params") or {})
            stream = session.submit(kind, message)
        except HubError as exc:
            if release is not None:
                release()
            if kind is Kind.REQUEST:
                await connection.out.put(event(jsonrpc.dumps(jsonrpc.error_response(message["id"], exc.to_error()))))
            return
        if stream is None:
            return
        if release is not None:
            stream.on_finish(release)
        if kind is Kind.REQUEST and message["method"] == "initialize" and not session.initialized:
            # Once initialized, the session's own stream (messages that belong to no request) flows too.
            connection.pumps.put_nowait(stream)
            await stream.wait_finished()
            if session.protocol_version:  # it succeeded
                connection.pumps.put_nowait(session.streams.get)
            return
        try:
            connection.pumps.put_nowait(stream)
        except asyncio.QueueFull:
            error = {"code": -32000, "message": "too many requests in flight on this connection"}
            stream.finish(jsonrpc.error_response(message["id"], error))


async def _until_over(receive: Receive, session: Session, stopped: asyncio.Event) -> None:
    """Return when the client disconnects, the session ends, or the hub has drained."""

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    waits = [
        asyncio.ensure_future(disconnected()),
        asyncio.ensure_future(session.ended.wait()),
        asyncio.ensure_future(stopped.wait()),
    ]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
