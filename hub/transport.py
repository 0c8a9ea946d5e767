"""The Streamable HTTP endpoint (``/mcp``) as a plain ASGI app.

It checks the HTTP request (method, headers, body size and depth, JSON-RPC
shape), hands one message to its session, and writes the reply: as one JSON
body when the reply is all there is, or as an SSE stream when notifications
come first. It holds no MCP logic of its own and writes no session state:
the session opens streams and counts their readers (:mod:`hub.session_streams`).
Every refusal is an exception of the one tree, written by one function.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Final

from connectors import jsonrpc, tracing
from connectors.jsonrpc import Kind, Message
from hub.affinity import Affinity
from hub.asgi import Receive, Scope, Send, header_map, read_body, respond, respond_error
from hub.config import HubSettings
from hub.context import Caller
from hub.envelope import duplicated_routing_header
from hub.errors import (
    BadEventId,
    BodyTooLarge,
    HeaderMismatch,
    HubError,
    InvalidRequest,
    MethodNotAllowed,
    MissingSession,
    NotAcceptable,
    SessionLimit,
    SessionNotFound,
    ShuttingDown,
    StreamGone,
    UnsupportedMediaType,
    to_wire,
)
from hub.events import EventLog
from hub.forward import FORWARDED_HEADER
from hub.gate import Gate
from hub.mcp_request import (
    SESSION_HEADER,
    accepts,
    check_version,
    decode_message,
    is_modern,
    request_id_of,
    wears_envelope,
)
from hub.modern import ModernEndpoint
from hub.replay import logged_events
from hub.session import Session
from hub.sessions import SessionManager
from hub.sse import KEEPALIVE, SseWriter, event, priming, with_keepalive
from hub.streams import Event, EventId, Stream, resumable

__all__ = ["McpEndpoint"]

logger = logging.getLogger(__name__)

_SPLIT_AT: Final = 64 * 1024  # events larger than this are written in three pieces, not copied into one


class McpEndpoint:
    """ASGI app serving POST, GET and DELETE on the MCP endpoint (POST only for the stateless era)."""

    def __init__(
        self,
        sessions: SessionManager,
        events: EventLog,
        *,
        run: str,
        settings: Callable[[], HubSettings],
        accepting: Callable[[], bool],
        gate: Callable[[], Gate],
        modern: ModernEndpoint | None = None,
        affinity: Affinity | None = None,
    ) -> None:
        self.modern = modern
        self.affinity = affinity
        self.sessions = sessions
        self.events = events
        self.run = run
        self.settings = settings
        self.accepting = accepting
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = header_map(scope)
        method = scope["method"]
        try:
            # Credentials before anything else: a stranger learns nothing, not even what is wrong with the rest.
            caller = await self.gate().caller(headers, f"{method} /mcp")
            session_id = headers.get(SESSION_HEADER)
            affinity = self.affinity
            taken = False
            if affinity is not None and session_id and not is_modern(headers) and self.sessions.get(session_id) is None:
                # Another replica's session goes there; one whose owner is gone is taken over here.
                routed = await affinity.route(scope, session_id, receive, send)
                if routed is None:
                    return
                receive, taken = routed
            try:
                await self._serve(method, scope, headers, caller, receive, send)
            finally:
                if taken and affinity is not None and session_id and self._left_nothing(session_id):
                    await affinity.replicas.release(session_id)  # taken over for a request that left nothing
        except HubError as exc:
            await respond_error(send, to_wire(exc))

    def _left_nothing(self, session_id: str) -> bool:
        claims = self.sessions.claims
        return self.sessions.get(session_id) is None and not (claims is not None and claims.busy(session_id))

    async def _serve(
        self, method: str, scope: Scope, headers: dict[str, str], caller: Caller, receive: Receive, send: Send
    ) -> None:
        if method == "POST":
            await self._post(scope, headers, caller, receive, send)
        elif self.modern is not None and is_modern(headers):
            # The stateless era has no GET stream and no session to delete.
            raise MethodNotAllowed("Method Not Allowed: 2026-07-28 requests are POSTs", headers={"allow": "POST"})
        elif method == "GET":
            await self._get(headers, caller, receive, send)
        elif method == "DELETE":
            await self._delete(headers, caller, send)
        else:
            raise MethodNotAllowed("Method Not Allowed", headers={"allow": "GET, POST, DELETE"})

    async def _session(self, headers: dict[str, str], caller: Caller) -> Session:
        """The caller's session the request names; another principal's answers like none.

        Raises: MissingSession, SessionNotFound, SessionLimit, ShuttingDown.
        """
        session_id = headers.get(SESSION_HEADER)
        if not session_id:
            raise MissingSession("Bad Request: missing Mcp-Session-Id header")
        session = self.sessions.find(session_id, caller)
        if session is None and self.sessions.get(session_id) is None:
            session = await self.sessions.restore(session_id, caller, self.gate().tenant(caller))
        if session is None:
            raise SessionNotFound()
        return session

    # -- POST --------------------------------------------------------------------------------------

    async def _post(self, scope: Scope, headers: dict[str, str], caller: Caller, receive: Receive, send: Send) -> None:
        settings = self.settings()
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise UnsupportedMediaType("Unsupported Media Type: Content-Type must be application/json")
        accept = headers.get("accept", "")
        if not (accepts(accept, "application/json") and accepts(accept, "text/event-stream")):
            raise NotAcceptable("Not Acceptable: Accept must list application/json and text/event-stream")
        length = headers.get("content-length", "")
        if length.isdigit() and len(length) < 20 and int(length) > settings.max_body_bytes:
            raise BodyTooLarge(f"request body larger than {settings.max_body_bytes} bytes")
        body = await read_body(receive, settings.max_body_bytes, settings.request_read_timeout)
        message = decode_message(body, settings.max_json_depth)
        kind = jsonrpc.classify(message)
        try:
            if kind is None:
                raise InvalidRequest("Invalid Request: not a JSON-RPC 2.0 message")
            if self.modern is not None and (is_modern(headers) or wears_envelope(headers, message)):
                # The header map keeps one value per name: as long as the raw list, nothing was sent twice.
                raw = scope["headers"]
                duplicated = None if len(headers) == len(raw) else duplicated_routing_header(raw)
                if duplicated is not None:
                    raise HeaderMismatch(f"the {duplicated} header is sent more than once")
                if self.affinity is not None:
                    holder = self._holder(kind, message, caller, headers)
                    if holder is not None:
                        await self.affinity.forward_call(holder, scope, body, receive, send)
                        return
                await self.modern.post(headers, caller, kind, message, len(body), receive, send)
                return
            check_version(headers)
            await self._message(headers, caller, kind, message, len(body), receive, send)
        except HubError as exc:
            await respond_error(send, to_wire(exc), request_id_of(message))

    def _holder(self, kind: Kind, message: Message, caller: Caller, headers: dict[str, str]) -> str | None:
        """Another replica, where the call a stateless retry's ``requestState`` names waits (never for a
        request forwarded here already: it is served here, where its call is found or is not). Asked only
        with replicas."""
        if self.modern is None or kind is not Kind.REQUEST or FORWARDED_HEADER in headers:
            return None
        params = message.get("params")
        state = params.get("requestState") if isinstance(params, dict) else None
        if state is None:
            return None
        holder = self.modern.services.calls.holder(state, caller)
        return holder if holder and holder != self.run else None

    async def _message(
        self,
        headers: dict[str, str],
        caller: Caller,
        kind: Kind,
        message: Message,
        size: int,
        receive: Receive,
        send: Send,
    ) -> None:
        release = None
        if kind is Kind.REQUEST:
            release = await self.gate().admit(caller, message["method"], message.get("params") or {})
            if tracing.enabled() and "traceparent" in headers:
                message = tracing.with_trace_context(message, headers)
        try:
            if kind is Kind.REQUEST and message["method"] == "initialize" and SESSION_HEADER not in headers:
                if not self.accepting():
                    raise ShuttingDown()  # a draining hub takes no new sessions; existing ones finish their work
                if self.affinity is not None:
                    await self.affinity.check_store()  # a session no other replica can find is no session
                await self._initialize(caller, message, send)
                return
            session = await self._session(headers, caller)
            stream = session.submit(kind, message, size)
        except BaseException:
            if release is not None:
                release()
            raise
        if stream is None:
            await respond(send, 202, b"")
            return
        if release is not None:
            stream.on_finish(release)
        await self._reply(session, stream, receive, send)

    async def _initialize(self, caller: Caller, message: Message, send: Send) -> None:
        session = self.sessions.open(caller, self.gate().tenant(caller))
        stream = session.submit(Kind.REQUEST, message)
        assert stream is not None
        claim = stream.claim()
        async with contextlib.aclosing(stream.read(0, claim)) as events:
            reply = await anext(events, None)
        decoded = jsonrpc.loads(reply.data) if reply is not None else None
        if decoded is None or "error" in decoded:
            self.sessions.discard(session)
            if decoded is None:
                raise SessionLimit("the session closed before its initialize completed; try again")
            body = jsonrpc.dumps(decoded)
            # -32000 is the hub refusing for now (no room, no store): 503, as the same refusals are elsewhere.
            if decoded["error"].get("code") == -32000:
                headers = [(b"content-type", b"application/json"), (b"retry-after", b"1")]
                await respond(send, 503, body, headers)
            else:
                await respond(send, 400, body, [(b"content-type", b"application/json")])
            return
        headers = [(b"content-type", b"application/json"), (SESSION_HEADER.encode(), session.id.encode())]
        await respond(send, 200, reply.data if reply is not None else b"", headers)

    async def _reply(self, session: Session, stream: Stream, receive: Receive, send: Send) -> None:
        claim = stream.claim()
        async with contextlib.aclosing(stream.read(0, claim)) as events:
            first = await anext(events, None)
            if first is not None and first.reply:
                # The reply came before any notification: the reply is all there is, and without an
                # event id nobody can come back for it.
                session.streams.forget(stream)
                await respond(send, 200, first.data, [(b"content-type", b"application/json")])
                return
            with session.streams.reading(stream, claim):
                await self._pump(session, stream, claim, events, receive, SseWriter(send), prime=0, first=first)

    async def _pump(
        self,
        session: Session,
        stream: Stream,
        claim: int,
        events: AsyncIterator[Event | None],
        receive: Receive,
        writer: SseWriter,
        *,
        prime: int | None,
        first: Event | None = None,
    ) -> None:
        """Write a stream's events to one connection until the stream ends or the client goes."""
        watcher = asyncio.get_running_loop().create_task(_watch_disconnect(receive, stream, claim))
        streams = session.streams
        log = self.events
        try:
            await writer.start()
            if prime is not None and resumable(session.protocol_version):
                # An event id before anything else lets the client resume even if it gets nothing more.
                await writer.write(priming(streams.event_id(stream, prime), self.settings().events.retry_ms))
            if first is not None:
                if first.logged:
                    await log.settle(first.logged)
                await _write_event(writer, first.data, streams.event_id(stream, first.seq))
            async for item in events:
                if item is None:
                    await writer.write(KEEPALIVE)
                else:
                    if item.logged:
                        await log.settle(item.logged)  # in the log before the client sees it: any replica can replay
                    await _write_event(writer, item.data, streams.event_id(stream, item.seq))
        finally:
            watcher.cancel()
            await writer.end()

    # -- GET ---------------------------------------------------------------------------------------

    async def _get(self, headers: dict[str, str], caller: Caller, receive: Receive, send: Send) -> None:
        if not accepts(headers.get("accept", ""), "text/event-stream"):
            raise NotAcceptable("Not Acceptable: Accept must list text/event-stream")
        check_version(headers)
        if not self.accepting():
            raise ShuttingDown()
        session = await self._session(headers, caller)
        session.touch()
        last_event = headers.get("last-event-id")
        if last_event is None:
            with session.streams.listening() as start:
                await self._listen(session, start, receive, SseWriter(send), prime=True)
            return
        position = EventId.parse(last_event)
        if position is None:
            raise BadEventId("Bad Request: malformed Last-Event-ID")
        if position.run != self.run:
            await self._replay_logged(session, position, receive, send)
            return
        stream = session.streams.find(position.stream)
        if stream is None:
            raise StreamGone("the events of that stream are no longer kept")
        if stream is session.streams.get:
            with session.streams.listening(position.seq) as start:
                await self._listen(session, start, receive, SseWriter(send), prime=False)
            return
        writer = SseWriter(send)
        with session.streams.reading(stream) as claim:
            async with contextlib.aclosing(stream.read(position.seq, claim)) as events:
                await self._pump(session, stream, claim, events, receive, writer, prime=None)

    async def _listen(self, session: Session, start: int, receive: Receive, writer: SseWriter, *, prime: bool) -> None:
        stream = session.streams.get
        with session.streams.reading(stream) as claim:
            async with contextlib.aclosing(with_keepalive(stream.read(start, claim))) as events:
                await self._pump(session, stream, claim, events, receive, writer, prime=start if prime else None)

    async def _replay_logged(self, session: Session, position: EventId, receive: Receive, send: Send) -> None:
        # The id comes from an earlier run of the hub: replay what the log kept, then go on live.
        logged = await logged_events(self.events, session.id, position)
        writer = SseWriter(send)
        await writer.start()
        for seq, data in logged:
            await _write_event(writer, data, str(EventId(position.run, position.stream, seq)))
        if position.stream == 0:
            with session.streams.listening(0) as start:
                await self._listen(session, start, receive, writer, prime=False)
        else:
            await writer.end()

    # -- DELETE ------------------------------------------------------------------------------------

    async def _delete(self, headers: dict[str, str], caller: Caller, send: Send) -> None:
        session = await self._session(headers, caller)
        session.close()
        await respond(send, 200, b"")


async def _write_event(writer: SseWriter, data: bytes, event_id: str) -> None:
    if len(data) <= _SPLIT_AT:
        await writer.write(event(data, event_id))
    else:
        head = event(b"", event_id)
        await writer.write(head[:-2])
        await writer.write(data)
        await writer.write(b"\n\n")


async def _watch_disconnect(receive: Receive, stream: Stream, claim: int) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            stream.release(claim)  # this connection's reader stops; the stream and its events stay
            return
