"""The session actor: one asyncio task that owns one client session.

Everything that changes a session's state runs in its actor. Requests run
as child tasks of the actor, so a slow call never holds up the next message;
``notifications/cancelled`` cancels the child, which cancels the upstream
request. The actor's alarm is the idle deadline, moved by every message; when
it passes with no call in flight and no stream being read, the session
expires: its upstream sessions are closed and its id is forgotten.

The session also relays what its upstream sessions send: server-to-client
requests go to the client on the stream of the call they belong to (or the
GET stream) under a hub id that names the upstream, and the client's answer
goes back to the upstream that asked.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from connectors import jsonrpc
from connectors.base import CallHooks
from connectors.jsonrpc import Kind, Message
from connectors.pool import ConnectorPool
from hub.catalog import Catalog
from hub.dispatcher import RequestContext, dispatch
from hub.errors import ClientError, ClientTimeout, MethodNotFound, to_wire_error
from hub.streams import EventId, Stream, resumable
from hub.tasks import TaskTable

__all__ = ["EndReason", "Session", "SessionBusy", "SessionClosed", "SessionServices", "SessionState", "for_client"]

logger = logging.getLogger(__name__)

_INBOX_SIZE: Final = 1024
_RELAYED_CAPABILITIES: Final = ("roots", "sampling", "elicitation")
_CAPABILITY_OF: Final = {
    "sampling/createMessage": "sampling",
    "elicitation/create": "elicitation",
    "roots/list": "roots",
}


def for_client(catalog: Catalog, upstream: str, message: Message) -> Message:
    """An upstream's notification as a client should see it: the upstream named, URIs public."""
    method = message["method"]
    params = message.get("params")
    if not isinstance(params, dict):
        return message
    if method == "notifications/message":
        logger_name = params.get("logger")
        params = {**params, "logger": f"{upstream}/{logger_name}" if logger_name else upstream}
    elif method == "notifications/resources/updated" and isinstance(params.get("uri"), str):
        params = {**params, "uri": catalog.public_uri_of(upstream, params["uri"])}
    else:
        return message
    return {**message, "params": params}


class SessionState(enum.Enum):
    STARTING = "starting"
    ACTIVE = "active"
    CLOSED = "closed"


class EndReason(enum.Enum):
    DELETED = "deleted"  # the client said DELETE
    EXPIRED = "expired"  # the idle alarm went off
    SHUTDOWN = "shutdown"  # the hub is stopping; the session may be taken back after a restart


class SessionClosed(Exception):
    """The session has ended; its id answers 404 from now on."""


class SessionBusy(Exception):
    """The session's inbox is full."""


@dataclass(frozen=True)
class SessionServices:
    """What every session of one hub shares."""

    pool: ConnectorPool
    catalog: Catalog
    run: str
    idle_timeout: float
    ask_timeout: float = 300.0
    stream_events: int = 1000
    stream_retention: float = 300.0
    max_finished_streams: int = 64
    log_event: Callable[[str, int, int, Message], None] | None = None
    subscribers: Callable[[str], int] | None = None


@dataclass(frozen=True)
class _Envelope:
    kind: Kind | None  # None: close the session
    message: Message
    stream: Stream | None = None
    reason: EndReason = EndReason.DELETED


class Session:
    """One client session; ``run`` is its actor."""

    def __init__(
        self,
        session_id: str,
        services: SessionServices,
        *,
        protocol_version: str,
        client_info: Message,
        client_capabilities: Message,
    ) -> None:
        self.id = session_id
        self.protocol_version = protocol_version
        self.client_info = client_info
        self.client_capabilities = client_capabilities
        self.state = SessionState.STARTING
        self.end_reason = EndReason.EXPIRED
        self.initialized = False
        self.ended = asyncio.Event()
        self.subscriptions: set[str] = set()
        self.tasks = TaskTable()
        self.readers = 0  # connections reading one of this session's streams right now
        self.get_streams_open = 0
        self.get_stream_served = False
        self.services = services
        self.upstreams = services.pool.open_session(
            capabilities={k: v for k, v in client_capabilities.items() if k in _RELAYED_CAPABILITIES},
            on_message=self._upstream_message,
            on_request=self._upstream_request,
        )
        self.streams: dict[int, Stream] = {}
        self._next_stream = itertools.count()
        self.get_stream = self._new_stream()
        self.persist(self.get_stream)
        self._inbox: asyncio.Queue[_Envelope] = asyncio.Queue(_INBOX_SIZE)
        self._calls: dict[Any, asyncio.Task[None]] = {}
        self._asks: dict[str, asyncio.Future[Message]] = {}
        self._ask_ids = itertools.count(1)
        self._last_activity = 0.0
        self._children: asyncio.TaskGroup | None = None
        self._background: set[asyncio.Task[None]] = set()

    # -- called from the transport -----------------------------------------------------------------

    def submit(self, kind: Kind, message: Message) -> Stream | None:
        """Hand one client message to the session; a request gets the stream its reply will go on.

        A request starts at once as a child task of the actor (the hot path takes no trip through
        the inbox); everything else goes through the inbox, in order.

        Raises:
            SessionClosed: the session has ended.
            SessionBusy: the actor's inbox is full.
        """
        if self.state is SessionState.CLOSED:
            raise SessionClosed(self.id)
        self._last_activity = asyncio.get_running_loop().time()
        direct = kind is Kind.REQUEST and self._children is not None
        if not direct and self._inbox.full():
            raise SessionBusy(self.id)
        stream = self._new_stream() if kind is Kind.REQUEST else None
        if direct:
            assert self._children is not None and stream is not None
            self._start_call(self._children, message, stream)
        else:
            self._inbox.put_nowait(_Envelope(kind, message, stream))
        return stream

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
        return self.get_stream.push(message)

    def event_id(self, stream: Stream, seq: int) -> str:
        return str(EventId(self.services.run, stream.number, seq))

    def persist(self, stream: Stream) -> None:
        """Log the stream's events, so they can be replayed after a restart."""
        log_event = self.services.log_event
        if log_event is not None:
            stream.persist(lambda s, seq, message: log_event(self.id, s.number, seq, message))

    def _new_stream(self) -> Stream:
        if len(self.streams) > 2 * self.services.max_finished_streams:
            self._prune_streams()  # amortized: not on every request
        stream = Stream(next(self._next_stream), retain=self.services.stream_events)
        self.streams[stream.number] = stream
        return stream

    def _prune_streams(self) -> None:
        # Finished streams are kept a while for clients that come back with Last-Event-ID.
        services = self.services
        finished = sorted((s.finished_at, n) for n, s in self.streams.items() if s.finished_at is not None)
        cutoff = time.monotonic() - services.stream_retention
        excess = len(finished) - services.max_finished_streams
        for index, (finished_at, number) in enumerate(finished):
            if finished_at < cutoff or index < excess:
                del self.streams[number]

    # -- the actor ---------------------------------------------------------------------------------

    async def run(self, on_end: Callable[[Session], Awaitable[None]]) -> None:
        """The actor loop; returns when the session ends for any reason."""
        loop = asyncio.get_running_loop()
        idle = self.services.idle_timeout
        self._last_activity = loop.time()
        self.state = SessionState.ACTIVE
        try:
            async with asyncio.TaskGroup() as children:
                self._children = children
                try:
                    await self._serve_inbox(children, loop, idle)
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
            self._drain()
            for stream in self.streams.values():
                stream.finish()
            try:
                await self.upstreams.aclose()
            finally:
                try:
                    await on_end(self)
                finally:
                    self.ended.set()

    async def _serve_inbox(self, children: asyncio.TaskGroup, loop: asyncio.AbstractEventLoop, idle: float) -> None:
        while self.state is SessionState.ACTIVE:
            try:
                # The alarm: the idle deadline, moved by every message (requests move it
                # without waking the actor; it looks again when the old deadline passes).
                async with asyncio.timeout_at(self._last_activity + idle):
                    envelope = await self._inbox.get()
            except TimeoutError:
                if self._calls or self._asks or self.readers:
                    self._last_activity = loop.time()
                if self._last_activity + idle > loop.time():
                    continue
                logger.info("session %s expired after %.0fs idle", self.id, idle)
                return
            self._last_activity = loop.time()
            if envelope.kind is None:
                self.end_reason = envelope.reason
                return
            self._handle(children, envelope)

    def _drain(self) -> None:
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
            self._start_call(children, message, envelope.stream)
        elif envelope.kind is Kind.NOTIFICATION:
            self._notified(children, message)
        else:
            future = self._asks.get(message["id"])
            if future is not None and not future.done():
                future.set_result(message)
            else:
                logger.debug("session %s: a reply to no question (%r)", self.id, message.get("id"))

    def _start_call(self, children: asyncio.TaskGroup, message: Message, stream: Stream) -> None:
        key = message["id"]
        if key in self._calls:
            error = {"code": -32600, "message": f"request id {key!r} is already in flight"}
            stream.finish(jsonrpc.error_response(key, error))
            return
        task = children.create_task(self._serve(message, stream))
        self._calls[key] = task
        task.add_done_callback(lambda done: self._forget(key, done))

    def _forget(self, key: Any, task: asyncio.Task[None]) -> None:
        if self._calls.get(key) is task:
            del self._calls[key]

    def _notified(self, children: asyncio.TaskGroup, message: Message) -> None:
        method = message["method"]
        params = message.get("params") or {}
        if method == "notifications/initialized":
            self.initialized = True
        elif method == "notifications/cancelled":
            task = self._calls.get(params.get("requestId"))
            if task is not None:
                logger.debug("session %s: cancelling request %r", self.id, params.get("requestId"))
                task.cancel()
        elif method == "notifications/roots/list_changed":
            task = children.create_task(self.upstreams.notify_all(method, message.get("params")))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _serve(self, message: Message, stream: Stream) -> None:
        ctx = RequestContext(
            catalog=self.services.catalog,
            upstreams=self.upstreams,
            emit=stream.push,
            hooks=lambda upstream, params: self._hooks(stream, upstream, params),
            protocol_version=self.protocol_version,
            client_capabilities=self.client_capabilities,
            subscriptions=self.subscriptions,
            subscribers=self.services.subscribers or (lambda uri: 0),
            tasks=self.tasks,
        )
        request_id = message["id"]
        try:
            result = await dispatch(ctx, message["method"], message.get("params") or {})
        except asyncio.CancelledError:
            stream.finish()  # a cancelled request gets no response
            raise
        except Exception as exc:
            stream.finish(jsonrpc.error_response(request_id, to_wire_error(exc)))
        else:
            stream.finish(jsonrpc.response(request_id, result))

    # -- what upstreams send -----------------------------------------------------------------------

    def _hooks(self, stream: Stream, upstream: str, params: Message) -> CallHooks:
        meta = params.get("_meta")
        progress = None
        if isinstance(meta, dict) and "progressToken" in meta:

            def progress(update: Message) -> None:
                stream.push(jsonrpc.notification("notifications/progress", update))

        async def request(message: Message) -> Message:
            return await self.ask(upstream, message, stream)

        def notify(message: Message) -> None:
            stream.push(self.tasks.notification(upstream, for_client(self.services.catalog, upstream, message)))

        interrupted = None
        if resumable(self.protocol_version):

            def interrupted() -> None:
                # The upstream polls: let the client poll too, rather than hold its connection open.
                stream.release()

        return CallHooks(progress=progress, request=request, message=notify, interrupted=interrupted)

    def _upstream_message(self, upstream: str, message: Message) -> None:
        out = self.tasks.notification(upstream, for_client(self.services.catalog, upstream, message))
        if out["method"] == "notifications/resources/updated" and out["params"].get("uri") not in self.subscriptions:
            return
        self.send(out)

    async def _upstream_request(self, upstream: str, message: Message) -> Message:
        return await self.ask(upstream, message, self.get_stream)

    async def ask(self, upstream: str, message: Message, stream: Stream) -> Message:
        """Relay a server-to-client request to this client and return its answer.

        Raises:
            MethodNotFound: the client did not declare the capability the request needs.
            ClientError: the client answered with an error.
            ClientTimeout: the client did not answer in time.
        """
        method = message["method"]
        params = message.get("params")
        self._require_capability(method, params if isinstance(params, dict) else {})
        hub_id = f"{upstream}:{next(self._ask_ids)}"
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._asks[hub_id] = future
        stream.push(jsonrpc.request(hub_id, method, params))
        try:
            async with asyncio.timeout(self.services.ask_timeout):
                reply = await future
        except TimeoutError:
            stream.push(jsonrpc.notification("notifications/cancelled", {"requestId": hub_id, "reason": "timeout"}))
            raise ClientTimeout(f"the client did not answer {method} within {self.services.ask_timeout:g}s") from None
        except asyncio.CancelledError:
            reason = {"requestId": hub_id, "reason": "cancelled by the upstream"}
            stream.push(jsonrpc.notification("notifications/cancelled", reason))
            raise
        finally:
            del self._asks[hub_id]
        if "error" in reply:
            raise ClientError(reply["error"])
        result = reply.get("result")
        return result if isinstance(result, dict) else {}

    def _require_capability(self, method: str, params: Message) -> None:
        capability = _CAPABILITY_OF.get(method)
        if capability is None:
            raise MethodNotFound(f"{method} is not relayed to clients")
        declared = self.client_capabilities.get(capability)
        if not isinstance(declared, dict):
            raise MethodNotFound(f"the client did not declare the {capability} capability")
        if capability == "elicitation":
            mode = params.get("mode", "form")
            # An empty elicitation capability means form mode only.
            if (declared and mode not in declared) or (not declared and mode != "form"):
                raise MethodNotFound(f"the client does not support {mode} elicitation")
