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
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any, Final

from connectors import jsonrpc
from connectors.jsonrpc import Kind, Message
from connectors.spec import SUPPORTED_VERSIONS
from hub.errors import HubError, ParseError
from hub.runtime import Hub
from hub.session import Session, SessionBusy, SessionClosed
from hub.streams import EventId, Stream, resumable

__all__ = ["ClientGone", "McpEndpoint", "Receive", "Scope", "Send", "read_body", "respond"]

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
        self.retry_ms = hub.config.hub.events.retry_ms

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
                await respond(send, 405, b"", [(b"allow", b"GET, POST, DELETE")])
        except _Reject as reject:
            body = jsonrpc.dumps(jsonrpc.error_response(reject.request_id, reject.error))
            await respond(send, reject.status, body, [(b"content-type", b"application/json")])

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
        too_large = _Reject(413, -32600, f"request body larger than {self.max_body} bytes")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            raise too_large
        try:
            body = await read_body(receive, self.max_body)
        except ClientGone:
            raise _Reject(400, -32600, "client disconnected") from None
        if body is None:
            raise too_large
        return body

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
            await respond(send, 202, b"")
            return
        stream = self._submit(session, kind, message)
        assert stream is not None
        await self._reply(session, stream, receive, send)

    def _submit(self, session: Session, kind: Kind, message: Message) -> Stream | None:
        try:
            return session.submit(kind, message)
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
        await respond(
            send,
            200,
            body,
            [(b"content-type", b"application/json"), (SESSION_HEADER.encode(), session.id.encode())],
        )

    async def _reply(self, session: Session, stream: Stream, receive: Receive, send: Send) -> None:
        claim = stream.claim()
        async with contextlib.aclosing(stream.read(0, claim)) as events:
            first = await anext(events, None)
            if first is not None and "method" not in first[1]:
                # The reply came before any notification: the reply is all there is.
                await respond(send, 200, jsonrpc.dumps(first[1]), [(b"content-type", b"application/json")])
                return
            session.persist(stream)
            await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
            await self._pump(session, stream, claim, events, first, receive, send, prime=0)

    async def _pump(
        self,
        session: Session,
        stream: Stream,
        claim: int,
        events: AsyncIterator[tuple[int, Message]],
        first: tuple[int, Message] | None,
        receive: Receive,
        send: Send,
        *,
        prime: int | None,
    ) -> None:
        """Write a stream's events to one connection until the stream ends or the client goes."""
        session.readers += 1
        watcher = asyncio.get_running_loop().create_task(_watch_disconnect(receive, stream, claim))
        try:
            if prime is not None and resumable(session.protocol_version):
                # An event id before anything else lets the client resume even if it gets nothing more.
                priming = f"id: {session.event_id(stream, prime)}\nretry: {self.retry_ms}\ndata: \n\n"
                await send({"type": "http.response.body", "body": priming.encode(), "more_body": True})
            if first is not None:
                await send(
                    {"type": "http.response.body", "body": self._event(session, stream, first), "more_body": True}
                )
            async for event in events:
                await send(
                    {"type": "http.response.body", "body": self._event(session, stream, event), "more_body": True}
                )
        finally:
            watcher.cancel()
            session.readers -= 1
            with contextlib.suppress(Exception):
                await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _event(self, session: Session, stream: Stream, event: tuple[int, Message]) -> bytes:
        seq, message = event
        if seq < 0:
            return b": keepalive\n\n"
        return (
            f"id: {session.event_id(stream, seq)}\nevent: message\ndata: ".encode() + jsonrpc.dumps(message) + b"\n\n"
        )

    # -- GET ---------------------------------------------------------------------------------------

    async def _get(self, headers: dict[str, str], receive: Receive, send: Send) -> None:
        if not _accepts(headers.get("accept", ""), "text/event-stream"):
            raise _Reject(406, -32600, "Not Acceptable: Accept must list text/event-stream")
        self._check_version(headers)
        session = await self._session(headers)
        last_event = headers.get("last-event-id")
        if last_event is None:
            if session.get_streams_open:
                raise _Reject(409, -32600, "Conflict: this session already has a GET stream open")
            await self._listen(session, receive, send)
            return
        position = EventId.parse(last_event)
        if position is None:
            raise _Reject(400, -32600, "Bad Request: malformed Last-Event-ID")
        if position.run != self.hub.run:
            await self._replay_logged(session, position, receive, send)
            return
        stream = session.streams.get(position.stream)
        if stream is None:
            raise _Reject(404, -32600, "the events of that stream are no longer kept")
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        if stream is session.get_stream:
            await self._listen(session, receive, send, after=position.seq, started=True)
        else:
            claim = stream.claim()
            async with contextlib.aclosing(stream.read(position.seq, claim)) as events:
                await self._pump(session, stream, claim, events, None, receive, send, prime=None)

    async def _listen(
        self, session: Session, receive: Receive, send: Send, *, after: int | None = None, started: bool = False
    ) -> None:
        """Serve the session's GET stream from ``after``.

        Without ``after``, a session's first GET stream starts at the beginning (so nothing sent
        between initialize and the client's first GET is lost); later ones start from now.
        """
        stream = session.get_stream
        fresh = 0 if not session.get_stream_served else stream.last_seq
        position = fresh if after is None else after
        session.get_stream_served = True
        if not started:
            await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        session.get_streams_open += 1
        try:
            claim = stream.claim()
            async with contextlib.aclosing(_with_keepalive(stream.read(position, claim))) as events:
                await self._pump(
                    session, stream, claim, events, None, receive, send, prime=position if after is None else None
                )
        finally:
            session.get_streams_open -= 1

    async def _replay_logged(self, session: Session, position: EventId, receive: Receive, send: Send) -> None:
        # The id comes from an earlier run of the hub: replay what the log kept, then go on live.
        logged = await self.hub.events.replay(session.id, position.run, position.stream, position.seq)
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        for seq, message in logged:
            event_id = EventId(position.run, position.stream, seq)
            chunk = f"id: {event_id}\nevent: message\ndata: ".encode() + jsonrpc.dumps(message) + b"\n\n"
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        if position.stream == 0:
            await self._listen(session, receive, send, after=0, started=True)
        else:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    # -- DELETE ------------------------------------------------------------------------------------

    async def _delete(self, headers: dict[str, str], send: Send) -> None:
        session = await self._session(headers)
        session.close()
        await respond(send, 200, b"")


async def _watch_disconnect(receive: Receive, stream: Stream, claim: int) -> None:
    while True:
        event = await receive()
        if event["type"] == "http.disconnect":
            stream.release(claim)  # this connection's reader stops; the stream and its events stay
            return


async def _with_keepalive(
    events: AsyncGenerator[tuple[int, Message], None],
) -> AsyncGenerator[tuple[int, Message], None]:
    """Pass events through; yield ``(-1, {})`` after each quiet spell so idle streams get a comment."""
    iterator = events
    pending: asyncio.Task[tuple[int, Message]] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(iterator))
            done, _ = await asyncio.wait({pending}, timeout=_KEEPALIVE_SECONDS)
            if not done:
                yield (-1, {})
                continue
            try:
                event = pending.result()
            except StopAsyncIteration:
                return
            pending = None
            yield event
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await pending
        await events.aclose()


class ClientGone(Exception):
    """The client disconnected before its request body was in."""


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """A request's whole body, or ``None`` once it passes ``limit`` bytes.

    Raises:
        ClientGone: the client disconnected first.
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        event = await receive()
        if event["type"] == "http.disconnect":
            raise ClientGone
        chunk = event.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not event.get("more_body", False):
            return b"".join(chunks)


async def respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers or []})
    await send({"type": "http.response.body", "body": body})
