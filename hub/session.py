"""The session actor: one asyncio task that owns one client session.

Everything that changes a session's state runs in its actor. Requests run
as child tasks of the actor, so a slow call never holds up the next message;
``notifications/cancelled`` cancels the child, which cancels the upstream
request. The actor's alarm is the idle deadline, moved by every message; when
it passes with no call in flight and no stream open, the session expires:
its upstream sessions are closed and its id is forgotten.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from connectors import jsonrpc
from connectors.jsonrpc import Kind, Message
from connectors.pool import PoolSession
from hub.catalog import Catalog
from hub.dispatcher import RequestContext, dispatch
from hub.errors import to_wire_error
from hub.outbox import Outbox

__all__ = ["EndReason", "Session", "SessionBusy", "SessionClosed", "SessionState"]

logger = logging.getLogger(__name__)

_INBOX_SIZE = 1024


class SessionState(enum.Enum):
    STARTING = "starting"
    ACTIVE = "active"
    CLOSED = "closed"


class SessionClosed(Exception):
    """The session has ended; its id answers 404 from now on."""


class SessionBusy(Exception):
    """The session's inbox is full."""


class EndReason(enum.Enum):
    DELETED = "deleted"  # the client said DELETE
    EXPIRED = "expired"  # the idle alarm went off
    SHUTDOWN = "shutdown"  # the hub is stopping; the session may be taken back after a restart


@dataclass(frozen=True)
class _Envelope:
    kind: Kind | None  # None: close the session
    message: Message
    outbox: Outbox | None = None
    reason: EndReason = EndReason.DELETED


class Session:
    """One client session; ``run`` is its actor."""

    def __init__(
        self,
        session_id: str,
        *,
        protocol_version: str,
        client_info: Message,
        client_capabilities: Message,
        upstreams: PoolSession,
        catalog: Catalog,
        idle_timeout: float,
    ) -> None:
        self.id = session_id
        self.protocol_version = protocol_version
        self.client_info = client_info
        self.client_capabilities = client_capabilities
        self.upstreams = upstreams
        self.state = SessionState.STARTING
        self.initialized = False
        self.stream: Outbox | None = None
        self.ended = asyncio.Event()
        self.end_reason = EndReason.EXPIRED
        self._catalog = catalog
        self._idle_timeout = idle_timeout
        self._inbox: asyncio.Queue[_Envelope] = asyncio.Queue(_INBOX_SIZE)
        self._calls: dict[Any, asyncio.Task[None]] = {}
        self._deadline = 0.0

    # -- called from the transport -----------------------------------------------------------------

    def submit(self, kind: Kind, message: Message, outbox: Outbox | None = None) -> None:
        """Hand one client message to the actor; a request's reply goes to ``outbox``.

        Raises:
            SessionClosed: the session has ended.
            SessionBusy: the actor's inbox is full.
        """
        if self.state is SessionState.CLOSED:
            raise SessionClosed(self.id)
        try:
            self._inbox.put_nowait(_Envelope(kind, message, outbox))
        except asyncio.QueueFull:
            raise SessionBusy(self.id) from None

    def close(self, reason: EndReason = EndReason.DELETED) -> None:
        """Ask the actor to end the session (DELETE, or the hub shutting down)."""
        if self.state is not SessionState.CLOSED:
            try:
                self._inbox.put_nowait(_Envelope(None, {}, reason=reason))
            except asyncio.QueueFull:
                self.end_reason = reason
                self.state = SessionState.CLOSED  # the actor sees this at its next message

    def attach_stream(self, outbox: Outbox) -> bool:
        """Make ``outbox`` the session's GET stream; False if one is already open."""
        if self.stream is not None and not self.stream.finished:
            return False
        self.stream = outbox
        return True

    def detach_stream(self, outbox: Outbox) -> None:
        if self.stream is outbox:
            self.stream = None
            self._touch()

    def send(self, message: Message) -> bool:
        """Send a message that belongs to no request on the GET stream, if one is open."""
        stream = self.stream
        return stream is not None and stream.push(message)

    # -- the actor ---------------------------------------------------------------------------------

    async def run(self, on_end: Callable[[Session], Awaitable[None]]) -> None:
        """The actor loop; returns when the session ends for any reason."""
        loop = asyncio.get_running_loop()
        self._touch()
        self.state = SessionState.ACTIVE
        try:
            async with asyncio.TaskGroup() as calls:
                while self.state is SessionState.ACTIVE:
                    try:
                        async with asyncio.timeout_at(self._deadline):
                            envelope = await self._inbox.get()
                    except TimeoutError:
                        if self._calls or self.stream is not None:
                            self._touch()
                            continue
                        logger.info("session %s expired after %.0fs idle", self.id, self._idle_timeout)
                        break
                    self._deadline = loop.time() + self._idle_timeout
                    if envelope.kind is None:
                        self.end_reason = envelope.reason
                        break
                    self._handle(calls, envelope)
                self.state = SessionState.CLOSED
                for task in self._calls.values():
                    task.cancel()
        except asyncio.CancelledError:
            self.end_reason = EndReason.SHUTDOWN
            raise
        finally:
            self.state = SessionState.CLOSED
            self._drain()
            if self.stream is not None:
                self.stream.finish()
            try:
                await self.upstreams.aclose()
            finally:
                try:
                    await on_end(self)
                finally:
                    self.ended.set()

    def _touch(self) -> None:
        self._deadline = asyncio.get_running_loop().time() + self._idle_timeout

    def _drain(self) -> None:
        # Requests that arrived after the end get an answer instead of silence.
        while not self._inbox.empty():
            envelope = self._inbox.get_nowait()
            if envelope.outbox is not None:
                error = {"code": -32600, "message": "session closed"}
                envelope.outbox.finish(jsonrpc.error_response(envelope.message.get("id"), error))

    def _handle(self, calls: asyncio.TaskGroup, envelope: _Envelope) -> None:
        message = envelope.message
        if envelope.kind is Kind.REQUEST:
            assert envelope.outbox is not None
            key = message["id"]
            if key in self._calls:
                error = {"code": -32600, "message": f"request id {key!r} is already in flight"}
                envelope.outbox.finish(jsonrpc.error_response(key, error))
                return
            task = calls.create_task(self._serve(message, envelope.outbox))
            self._calls[key] = task
            task.add_done_callback(lambda done: self._forget(key, done))
        elif envelope.kind is Kind.NOTIFICATION:
            self._notified(message)
        # Responses from the client answer server-to-client requests, which this hub does not send yet.

    def _forget(self, key: Any, task: asyncio.Task[None]) -> None:
        if self._calls.get(key) is task:
            del self._calls[key]

    def _notified(self, message: Message) -> None:
        method = message["method"]
        params = message.get("params") or {}
        if method == "notifications/initialized":
            self.initialized = True
        elif method == "notifications/cancelled":
            task = self._calls.get(params.get("requestId"))
            if task is not None:
                logger.debug("session %s: cancelling request %r", self.id, params.get("requestId"))
                task.cancel()

    async def _serve(self, message: Message, outbox: Outbox) -> None:
        ctx = RequestContext(
            catalog=self._catalog,
            upstreams=self.upstreams,
            emit=outbox.push,
            protocol_version=self.protocol_version,
            client_capabilities=self.client_capabilities,
        )
        request_id = message["id"]
        try:
            result = await dispatch(ctx, message["method"], message.get("params") or {})
        except asyncio.CancelledError:
            outbox.finish()  # a cancelled request gets no response
            raise
        except Exception as exc:
            outbox.finish(jsonrpc.error_response(request_id, to_wire_error(exc)))
        else:
            outbox.finish(jsonrpc.response(request_id, result))
