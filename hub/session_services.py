"""What every session of one hub shares, and the small types around a session's life."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol

from connectors.engine import CallHooks
from connectors.jsonrpc import Message
from connectors.upstream_sessions import UpstreamSessions
from hub.audit import AuditLog
from hub.context import Caller, ServerFacts
from hub.errors import InvalidRequest
from hub.metrics import Metrics
from hub.session_streams import StreamSettings
from hub.streams import Event

__all__ = ["NOT_YET", "CallCount", "EndReason", "Negotiated", "SessionServices", "SessionState", "UpstreamOpener"]


class SessionState(enum.Enum):
    STARTING = "starting"  # the actor runs; initialize has not completed
    ACTIVE = "active"
    CLOSED = "closed"


class EndReason(enum.Enum):
    DELETED = "deleted"  # the client said DELETE (or its legacy stream closed)
    EXPIRED = "expired"  # the idle alarm went off
    SHUTDOWN = "shutdown"  # the hub is stopping; the session may be taken back after a restart
    MOVED = "moved"  # another replica owns the session now; its record is that replica's


class UpstreamOpener(Protocol):
    """Opens a client's upstream sessions (the pool's ``open_session``)."""

    def __call__(
        self,
        *,
        capabilities: Message | None = None,
        on_message: Callable[[str, Message], None] | None = None,
        on_request: Callable[[str, Message], Awaitable[Message]] | None = None,
        key: str = "",
        headers: Mapping[str, Mapping[str, str]] | None = None,
    ) -> UpstreamSessions: ...


class Negotiated(Protocol):
    """A session whose initialize has settled what is recorded of it."""

    @property
    def id(self) -> str: ...

    @property
    def protocol_version(self) -> str: ...

    @property
    def client_info(self) -> Message: ...

    @property
    def client_capabilities(self) -> Message: ...

    @property
    def created(self) -> float: ...

    @property
    def caller(self) -> Caller: ...


class CallCount:
    """Calls in flight across every session; the drain waits for it to reach zero."""

    def __init__(self) -> None:
        self.value = 0
        self._zero = asyncio.Event()
        self._zero.set()

    def up(self) -> None:
        self.value += 1
        self._zero.clear()

    def down(self) -> None:
        self.value -= 1
        if self.value <= 0:
            self._zero.set()

    async def wait_zero(self) -> None:
        await self._zero.wait()


@dataclass(frozen=True)
class SessionServices:
    """What every session of one hub shares."""

    open_upstreams: UpstreamOpener
    server: ServerFacts
    run: str
    idle_timeout: float
    unused_timeout: float = 60.0
    ask_timeout: float = 300.0
    streams: StreamSettings = field(default_factory=StreamSettings)
    log_event: Callable[[str, int, Event], int | None] | None = None
    still_held: Callable[[str, str], bool] | None = None
    """See :attr:`hub.context.RequestContext.still_held`."""
    record: Callable[[Negotiated], Awaitable[None]] | None = None
    audit: AuditLog | None = None
    metrics: Metrics | None = None
    calls: CallCount = field(default_factory=CallCount)


class NotYet:
    """The upstream access of a session whose initialize has not completed."""

    async def request(
        self, upstream: str, method: str, params: Message | None = None, *, hooks: CallHooks | None = None
    ) -> Message:
        raise InvalidRequest("initialize first")

    def is_shared(self, upstream: str) -> bool:
        return False

    async def notify_all(self, method: str, params: Message | None = None) -> None:
        return None

    async def set_log_level(self, level: str) -> None:
        raise InvalidRequest("initialize first")


NOT_YET: Final = NotYet()
