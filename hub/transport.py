"""The Streamable HTTP endpoint (``/mcp``) as a plain ASGI app.

It checks the HTTP request (method, headers, body size, JSON-RPC shape),
hands one message to its session, and writes the reply: as one JSON body
when the reply is all there is, or as an SSE stream when notifications come
first. It holds no MCP logic of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

from connectors import jsonrpc
from connectors.jsonrpc import Kind, Message
from connectors.spec import SUPPORTED_VERSIONS
from hub.errors import HubError, ParseError
from hub.outbox import Outbox
from hub.runtime import Hub
from hub.session import Session, SessionBusy, SessionClosed

__all__ = ["McpEndpoint"]

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

SESSION_HEADER: Final = "mcp-session-id"
VERSION_HEADER: Final = "mcp-protocol-version"
_KEEPALIVE_SECONDS: Final = 15.0
_SSE_HEADERS: Final = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
]


class _Reject(Exception):
    """Answer the HTTP request with ``status`` and a JSON-RPC error body."""

    def __init__(self, status: int, code: int, message: str, *, data: Any = None, request_id: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.error: Message = {"code": code, "message": message}
        if data is not None:
            self.error["data"] = data
        self.request_id = request_id


def _accepts(accept: str, media: str) -> bool:
    kind = media.split("/")[0]
    for part in accept.split(","):
        value = part.split(";")[0].strip().lower()
        if value in (media, "*/*", f"{kind}/*"):
            return True
    return False


def _event(message: Message) -> bytes:
    return b"event: message\ndata: " + jsonrpc.dumps(message) + b"\n\n"


class McpEndpoint:
    """ASGI app serving POST, GET and DELETE on the MCP endpoint."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.max_body = hub.config.hub.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        method = scope["method"]
        try:
            if method == "POST":
                await self._post(headers, receive, send)
            elif method == "GET":
                await self._get(headers, receive, send)
            elif method == "DELETE":
                await self._delete(headers, send)
            else:
                await _respond(send, 405, b"", [(b"allow", b"GET, POST, DELETE")])
        except _Reject as reject:
            body = jsonrpc.dumps(jsonrpc.error_response(reject.request_id, reject.error))
            await _respond(send, reject.status, body, [(b"content-type", b"application/json")])

    # -- checks ------------------------------------------------------------------------------------

    def _check_version(self, headers: dict[str, str]) -> None:
        version = headers.get(VERSION_HEADER)
        if version is not None and version not in SUPPORTED_VERSIONS:
            # -32022 with the versions we speak lets a client that probed a newer era fall back.
            raise _Reject(
                400,
                -32022,
                f"unsupported protocol version: {version}",
                data={"supported": list(SUPPORTED_VERSIONS), "requested": version},
            )

    async def _session(self, headers: dict[str, str], request_id: Any = None) -> Session:
        session_id = headers.get(SESSION_HEADER)
        if not session_id:
            raise _Reject(400, -32600, "Bad Request: missing Mcp-Session-Id header", request_id=request_id)
        session = self.hub.sessions.get(session_id)
        if session is None:
            try:
                session = await self.hub.sessions.restore(session_id)
            except HubError as exc:
                raise _Reject(503, exc.code, exc.message, request_id=request_id) from None
        if session is None:
            raise _Reject(404, -32600, "Session not found", request_id=request_id)
        return session

    async def _read_body(self, headers: dict[str, str], receive: Receive) -> bytes:
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            raise _Reject(413, -32600, f"request body larger than {self.max_body} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            event = await receive()
            if event["type"] == "http.disconnect":
                raise _Reject(400, -32600, "client disconnected")
            chunk = event.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise _Reject(413, -32600, f"request body larger than {self.max_body} bytes")
            chunks.append(chunk)
            if not event.get("more_body", False):
                return b"".join(chunks)

    # -- POST --------------------------------------------------------------------------------------

    async def _post(self, headers: dict[str, str], receive: Receive, send: Send) -> None:
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise _Reject(415, -32600, "Unsupported Media Type: Content-Type must be application/json")
        accept = headers.get("accept", "")
        if not (_accepts(accept, "application/json") and _accepts(accept, "text/event-stream")):
            raise _Reject(406, -32600, "Not Acceptable: Accept must list application/json and text/event-stream")
        self._check_version(headers)
        body = await self._read_body(headers, receive)
        try:
            message = jsonrpc.loads(body)
        except ValueError:
            raise _Reject(400, ParseError.code, "Parse error: the body is not valid JSON") from None
        if isinstance(message, list):
            raise _Reject(400, -32600, "Invalid Request: batches are not supported; send one message per POST")
        kind = jsonrpc.classify(message)
        if kind is None:
            request_id = message.get("id") if isinstance(message, dict) else None
            if not isinstance(request_id, str | int):
                request_id = None
            raise _Reject(400, -32600, "Invalid Request: not a JSON-RPC 2.0 message", request_id=request_id)
        if kind is Kind.REQUEST and message["method"] == "initialize":
            await self._initialize(message, send)
            return
        session = await self._session(headers, message.get("id"))
        if kind is not Kind.REQUEST:
            self._submit(session, kind, message)
            await _respond(send, 202, b"")
            return
        outbox = Outbox()
        self._submit(session, kind, message, outbox)
        await self._reply(outbox, receive, send)

    def _submit(self, session: Session, kind: Kind, message: Message, outbox: Outbox | None = None) -> None:
        try:
            session.submit(kind, message, outbox)
        except SessionClosed:
            raise _Reject(404, -32600, "Session not found", request_id=message.get("id")) from None
        except SessionBusy:
            raise _Reject(503, -32000, "session busy: too many messages queued", request_id=message.get("id")) from None

    async def _initialize(self, message: Message, send: Send) -> None:
        try:
            session, result = await self.hub.initialize(message.get("params") or {})
        except HubError as exc:
            status = 503 if exc.code == -32000 else 400
            raise _Reject(status, exc.code, exc.message, request_id=message["id"]) from None
        body = jsonrpc.dumps(jsonrpc.response(message["id"], result))
        await _respond(
            send,
            200,
            body,
            [(b"content-type", b"application/json"), (SESSION_HEADER.encode(), session.id.encode())],
        )

    async def _reply(self, outbox: Outbox, receive: Receive, send: Send) -> None:
        first = await outbox.get()
        if first is not None and "method" not in first:
            # The reply came before any notification: the reply is all there is.
            await _respond(send, 200, jsonrpc.dumps(first), [(b"content-type", b"application/json")])
            return
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        disconnected = asyncio.Event()
        watcher = asyncio.get_running_loop().create_task(_watch_disconnect(receive, disconnected, outbox))
        try:
            message = first
            while message is not None and not disconnected.is_set():
                await send({"type": "http.response.body", "body": _event(message), "more_body": True})
                message = await outbox.get()
        finally:
            watcher.cancel()
            with contextlib.suppress(Exception):
                await send({"type": "http.response.body", "body": b"", "more_body": False})

    # -- GET ---------------------------------------------------------------------------------------

    async def _get(self, headers: dict[str, str], receive: Receive, send: Send) -> None:
        if not _accepts(headers.get("accept", ""), "text/event-stream"):
            raise _Reject(406, -32600, "Not Acceptable: Accept must list text/event-stream")
        self._check_version(headers)
        session = await self._session(headers)
        outbox = Outbox()
        if not session.attach_stream(outbox):
            raise _Reject(409, -32600, "Conflict: this session already has a GET stream open")
        disconnected = asyncio.Event()
        watcher = asyncio.get_running_loop().create_task(_watch_disconnect(receive, disconnected, outbox))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
            while True:
                try:
                    async with asyncio.timeout(_KEEPALIVE_SECONDS):
                        message = await outbox.get()
                except TimeoutError:
                    await send({"type": "http.response.body", "body": b": keepalive\n\n", "more_body": True})
                    continue
                if message is None or disconnected.is_set():
                    break
                await send({"type": "http.response.body", "body": _event(message), "more_body": True})
        finally:
            watcher.cancel()
            session.detach_stream(outbox)
            with contextlib.suppress(Exception):
                await send({"type": "http.response.body", "body": b"", "more_body": False})

    # -- DELETE ------------------------------------------------------------------------------------

    async def _delete(self, headers: dict[str, str], send: Send) -> None:
        session = await self._session(headers)
        session.close()
        await _respond(send, 200, b"")


async def _watch_disconnect(receive: Receive, disconnected: asyncio.Event, outbox: Outbox | None = None) -> None:
    while True:
        event = await receive()
        if event["type"] == "http.disconnect":
            disconnected.set()
            if outbox is not None:
                outbox.finish()
            return


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers or []})
    await send({"type": "http.response.body", "body": body})
