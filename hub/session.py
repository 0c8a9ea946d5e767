"""The session actor: one asyncio task that owns one client session of the session era.

Everything that changes a session's state runs in its actor. Requests run
as child tasks of the actor, so a slow call never holds up the next message;
``notifications/cancelled`` cancels the child, which cancels the upstream
request. The actor's alarm is the idle deadline, moved by every message; when
it passes with no call in flight and no stream being read, the session
expires: its upstream sessions are closed and its id is forgotten. A session
that was opened and never used expires after the shorter ``unused_timeout``.

The session provides each request's :class:`~hub.context.RequestContext`:
its upstream sessions, its view of the catalog, its streams
(:mod:`hub.session_streams`) and its relay of server-to-client requests
(:mod:`hub.relay`). ``initialize`` is one request like the others: the
dispatcher negotiates and calls back :meth:`Session.negotiated`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from connectors import jsonrpc, log_context, tracing
from connectors.engine import CallHooks
from connectors.jsonrpc import Kind, Message
from connectors.upstream_sessions import UpstreamSessions
from hub.audit import AUDITED
from hub.context import ANONYMOUS, Caller, RequestContext, held_by_none
from hub.dispatcher import dispatch
from hub.errors import SessionBusy, SessionNotFound, ShuttingDown, to_wire
from hub.outbound import for_client
from hub.relay import RELAYED_CAPABILITIES, Relay
from hub.session_services import NOT_YET, EndReason, SessionServices, SessionState
from hub.session_streams import SessionStreams
from hub.streams import Stream, resumable
from hub.tasks import TaskTable
from hub.views import CatalogView

__all__ = ["Session"]

logger = logging.getLogger(__name__)

_INBOX_SIZE: Final = 1024


@dataclass(frozen=True)
class _Envelope:
    kind: Kind | None  # None: close the session
    message: Message
    stream: Stream | None = None
    reason: EndReason = EndReason.DELETED
    size: int = 0


class Session:
    """One client session; ``run`` is its actor."""

    def __init__(
        self,
        session_id: str,
        services: SessionServices,
        view: CatalogView,
        *,
        caller: Caller = ANONYMOUS,
        created: float = 0.0,
        headers: Mapping[str, Mapping[str, str]] | None = None,
        fixed_view: bool = False,
    ) -> None:
        self.id = session_id
        self.caller = caller
        self._headers = headers or {}
        self.view = view
        self.fixed_view = fixed_view
        """Opened with a view of its own (not its tenant's): a reload leaves it as it is."""
        self.created = created
        self.services = services
        self.protocol_version = ""
        self.client_info: Message = {}
        self.client_capabilities: Message = {}
        self.state = SessionState.STARTING
        self.end_reason = EndReason.EXPIRED
        self.used = False  # a request other than initialize came, or a stream was read
        self.ended = asyncio.Event()
        self.subscriptions: set[str] = set()
        self.tasks = TaskTable()
        log_event = services.log_event
        log = None if log_event is None else (lambda stream, event: log_event(self.id, stream, event))
        self.streams = SessionStreams(services.run, services.streams, log)
        self.relay = Relay({}, services.ask_timeout)
        self.upstreams: UpstreamSessions | None = None
        self._inbox: asyncio.Queue[_Envelope] = asyncio.Queue(_INBOX_SIZE)
        self._calls: dict[Any, asyncio.Task[None]] = {}
        self._last_activity = 0.0
        self._children: asyncio.TaskGroup | None = None
        self._background: set[asyncio.Task[None]] = set()

    # -- the handshake -----------------------------------------------------------------------------

    @property
    def initialized(self) -> bool:
        return bool(self.protocol_version)

    async def negotiated(self, version: str, client_info: Message, capabilities: Message) -> None:
        """Settle what initialize agreed, open the upstream access, and record the session."""
        self.adopt(version, client_info, capabilities)
        if self.services.record is not None:
            await self.services.record(self)

    def adopt(self, version: str, client_info: Message, capabilities: Message) -> None:
        """Take on a negotiated version and client facts (a new handshake, or a record taken back)."""
        self.protocol_version = version
        self.client_info = client_info
        self.client_capabilities = capabilities
        self.relay.client_capabilities = capabilities
        self.upstreams = self.services.open_upstreams(
            capabilities={k: v for k, v in capabilities.items() if k in RELAYED_CAPABILITIES},
            on_message=self._upstream_message,
            on_request=self._upstream_request,
            key=self.caller.tenant,
            headers=self._headers,
        )

    # -- called from the transport -----------------------------------------------------------------

    @property
    def calls_in_flight(self) -> int:
        return len(self._calls)

    def submit(self, kind: Kind, message: Message, size: int = 0) -> Stream | None:
        """Hand one client message to the session; a request gets the stream its reply will go on.

        A request starts at once as a child task of the actor (the hot path takes no trip through
        the inbox); everything else goes through the inbox, in order.

        ``size`` is the message's size on the wire (for the audit trail).

        Raises:
            SessionNotFound: the session has ended.
            SessionBusy: the actor's inbox is full.
        """
        if self.state is SessionState.CLOSED:
            raise SessionNotFound()
        self._last_activity = asyncio.get_running_loop().time()
        if kind is Kind.REQUEST and message["method"] != "initialize":
            self.used = True
        direct = kind is Kind.REQUEST and self._children is not None
        if not direct and self._inbox.full():
            raise SessionBusy("session busy: too many messages queued")
        stream = self.streams.open(message["id"]) if kind is Kind.REQUEST else None
        if direct:
            assert self._children is not None and stream is not None
            self._start_call(self._children, message, stream, size)
        else:
            self._inbox.put_nowait(_Envelope(kind, message, stream, size=size))
        return stream

    def touch(self) -> None:
        """A client read one of the session's streams: it is in use."""
        self.used = True
        self._last_activity = asyncio.get_running_loop().time()

    def close(self, reason: EndReason = EndReason.DELETED) -> None:
        """Ask the actor to end the session (DELETE, or the hub shutting down)."""
        if self.state is SessionState.CLOSED:
            return
        try:
            self._inbox.put_nowait(_Envelope(None, {}, reason=reason))
        except asyncio.QueueFull:
            self.end_reason = reason
            self.state = SessionState.CLOSED  # the actor sees this at its next message

    def send(self, message: Message) -> bool:
        """Send a message that belongs to no request on the GET stream (kept for replay if none is open)."""
        return self.streams.get.push(message)

    def stop_calls(self) -> None:
        """End every call in flight with an error saying the hub is shutting down (drain ran out)."""
        for task in self._calls.values():
            task.cancel(msg="drain")

    # -- the actor ---------------------------------------------------------------------------------

    async def run(self, on_end: Callable[[Session], Awaitable[None]]) -> None:
        """The actor loop; returns when the session ends for any reason."""
        loop = asyncio.get_running_loop()
        self._last_activity = loop.time()
        if self.state is SessionState.STARTING and self.initialized:
            self.state = SessionState.ACTIVE
        try:
            async with asyncio.TaskGroup() as children:
                self._children = children
                try:
                    await self._serve_inbox(children, loop)
                finally:
                    # No call may start on a task group that is closing.
                    self.state = SessionState.CLOSED
                    self._children = None
                    for task in (*self._calls.values(), *self._background):
                        task.cancel()
        except asyncio.CancelledError:
            self.end_reason = EndReason.SHUTDOWN
            raise
        finally:
            self.state = SessionState.CLOSED
            self._drain_inbox()
            self.streams.finish_all()
            try:
                if self.upstreams is not None:
                    await self.upstreams.aclose()
            finally:
                try:
                    await on_end(self)
                finally:
                    self.ended.set()

    def _deadline(self) -> float:
        timeout = (
            self.services.idle_timeout if self.used else min(self.services.unused_timeout, self.services.idle_timeout)
        )
        return self._last_activity + timeout

    async def _serve_inbox(self, children: asyncio.TaskGroup, loop: asyncio.AbstractEventLoop) -> None:
        while self.state is not SessionState.CLOSED:
            try:
                # The alarm: the idle deadline, moved by every message (requests move it
                # without waking the actor; it looks again when the old deadline passes).
                async with asyncio.timeout_at(self._deadline()):
                    envelope = await self._inbox.get()
            except TimeoutError:
                if self._calls or len(self.relay) or self.streams.readers:
                    self._last_activity = loop.time()
                if self._deadline() > loop.time():
                    continue
                logger.info("session %s expired (%s)", self.id, "idle" if self.used else "never used")
                return
            self._last_activity = loop.time()
            if envelope.kind is None:
                self.end_reason = envelope.reason
                return
            self._handle(children, envelope)

    def _drain_inbox(self) -> None:
        # Requests that arrived after the end get an answer instead of silence.
        while not self._inbox.empty():
            envelope = self._inbox.get_nowait()
            if envelope.stream is not None:
                error = {"code": -32600, "message": "session closed"}
                envelope.stream.finish(jsonrpc.error_response(envelope.message.get("id"), error))

    def _handle(self, children: asyncio.TaskGroup, envelope: _Envelope) -> None:
        message = envelope.message
        if envelope.kind is Kind.REQUEST:
            assert envelope.stream is not None
            self._start_call(children, message, envelope.stream, envelope.size)
        elif envelope.kind is Kind.NOTIFICATION:
            self._notified(children, message)
        else:
            self.relay.answer(message)

    def _start_call(self, children: asyncio.TaskGroup, message: Message, stream: Stream, size: int = 0) -> None:
        key = message["id"]
        if key in self._calls:
            error = {"code": -32600, "message": f"request id {key!r} is already in flight"}
            stream.finish(jsonrpc.error_response(key, error))
            return
        task = children.create_task(self._serve(message, stream, size))
        self._calls[key] = task
        self.services.calls.up()
        task.add_done_callback(lambda done: self._forget(key, done))

    def _forget(self, key: Any, task: asyncio.Task[None]) -> None:
        self.services.calls.down()
        if self._calls.get(key) is task:
            del self._calls[key]

    def _notified(self, children: asyncio.TaskGroup, message: Message) -> None:
        method = message["method"]
        params = message.get("params") or {}
        if method == "notifications/initialized":
            if self.initialized:
                self.state = SessionState.ACTIVE
        elif method == "notifications/cancelled":
            task = self._calls.get(params.get("requestId"))
            if task is not None:
                logger.debug("session %s: cancelling request %r", self.id, params.get("requestId"))
                task.cancel()
        elif method == "notifications/roots/list_changed" and self.upstreams is not None:
            task = children.create_task(self.upstreams.notify_all(method, message.get("params")))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    def _context(self, stream: Stream) -> RequestContext:
        services = self.services
        return RequestContext(
            caller=self.caller,
            era="session",
            protocol_version=self.protocol_version,
            client_capabilities=self.client_capabilities,
            view=self.view,
            upstreams=self.upstreams or NOT_YET,
            emit=stream.push,
            hooks=lambda upstream, params: self._hooks(stream, upstream, params),
            subscriptions=self.subscriptions,
            still_held=services.still_held or held_by_none,
            tasks=self.tasks,
            server=services.server,
            handshake=self,
        )

    async def _serve(self, message: Message, stream: Stream, size: int) -> None:
        request_id = message["id"]
        method = message["method"]
        if not self.initialized and method not in ("initialize", "ping"):
            error = {"code": -32600, "message": "initialize first"}
            stream.finish(jsonrpc.error_response(request_id, error))
            return
        params = message.get("params") or {}
        started = time.perf_counter()
        log_context.REQUEST.set(str(request_id))  # this request's own task: its log lines say whose they are
        log_context.SESSION.set(self.id)
        log_context.TENANT.set(self.caller.tenant)
        try:
            with tracing.client_span(method, params, **{"mcp.session": self.id, "mcp.tenant": self.caller.tenant}):
                result = await dispatch(self._context(stream), method, params)
        except asyncio.CancelledError as exc:
            if exc.args == ("drain",):
                error = ShuttingDown().to_error()
                sent = stream.finish(jsonrpc.error_response(request_id, error))
                self._audit(method, params, started, "error", ShuttingDown.code, size, sent)
                return  # the hub cut the call short; the client still gets its one response
            stream.finish()  # a cancelled request gets no response
            self._audit(method, params, started, "cancelled", None, size, 0)
            raise
        except Exception as exc:
            error = to_wire(exc).error
            sent = stream.finish(jsonrpc.error_response(request_id, error))
            code = error.get("code")
            self._audit(method, params, started, "error", code if isinstance(code, int) else None, size, sent)
        else:
            sent = stream.finish(jsonrpc.response(request_id, result))
            outcome = "isError" if method == "tools/call" and result.get("isError") is True else "ok"
            self._audit(method, params, started, outcome, None, size, sent)

    def _audit(
        self, method: str, params: Message, started: float, outcome: str, code: int | None, size: int, sent: int
    ) -> None:
        services = self.services
        if services.metrics is not None:
            tool = params.get("name") if method == "tools/call" else None
            elapsed = time.perf_counter() - started
            services.metrics.request("session", method, self.caller.tenant, outcome, elapsed, str(tool or ""))
        if services.audit is not None and method in AUDITED:
            services.audit.call(self.caller, self.id, self.view, method, params, started, outcome, code, size, sent)

    # -- what upstreams send -----------------------------------------------------------------------

    def _hooks(self, stream: Stream, upstream: str, params: Message) -> CallHooks:
        meta = params.get("_meta")
        progress = None
        if isinstance(meta, dict) and "progressToken" in meta:

            def progress(update: Message) -> None:
                stream.push(jsonrpc.notification("notifications/progress", update))

        async def request(message: Message) -> Message:
            return await self.relay.ask(upstream, self._question(upstream, message), stream)

        def notify(message: Message) -> None:
            stream.push(self.tasks.notification(upstream, for_client(self.view.catalog, upstream, message)))

        interrupted = None
        if resumable(self.protocol_version):

            def interrupted() -> None:
                # The upstream polls: let the client poll too, rather than hold its connection open.
                stream.release()

        return CallHooks(progress=progress, request=request, message=notify, interrupted=interrupted)

    def _upstream_message(self, upstream: str, message: Message) -> None:
        out = self.tasks.notification(upstream, for_client(self.view.catalog, upstream, message))
        if out["method"] == "notifications/resources/updated" and out["params"].get("uri") not in self.subscriptions:
            return
        self.send(out)

    async def _upstream_request(self, upstream: str, message: Message) -> Message:
        return await self.relay.ask(upstream, self._question(upstream, message), self.streams.get)

    def _question(self, upstream: str, message: Message) -> Message:
        """An upstream's request as the client gets it: the task it is asked for under its public id."""
        params = message.get("params")
        if not isinstance(params, dict) or "_meta" not in params:
            return message
        return {**message, "params": self.tasks.name_related(upstream, params)}
