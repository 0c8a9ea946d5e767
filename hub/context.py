"""What a handler sees of the request it serves, whatever provides it.

A :class:`RequestContext` says who is asking (the caller), in which protocol
era and version, with which capabilities and log level; which part of the
catalog they may see; how to reach upstreams on their behalf; and how to send
messages related to the request back on its stream. The session actor is one
provider of it (the session era); a stateless request is another. Handlers
never see a session.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from connectors.engine import CallHooks
from connectors.jsonrpc import Message
from hub.tasks import TaskTable
from hub.views import CatalogView

__all__ = ["ANONYMOUS", "Caller", "Era", "Handshake", "RequestContext", "ServerFacts", "UpstreamAccess", "held_by_none"]

Era = Literal["session", "stateless"]


@dataclass(frozen=True)
class Caller:
    """Who is asking: a principal (an API key's name, a token's issuer and subject) and its tenant.

    The anonymous caller (no auth configured) has empty names.
    """

    principal: str = ""
    tenant: str = ""
    admin: bool = False


ANONYMOUS = Caller()


class UpstreamAccess(Protocol):
    """How a handler reaches upstreams on the caller's behalf."""

    async def request(
        self, upstream: str, method: str, params: Message | None = None, *, hooks: CallHooks | None = None
    ) -> Message: ...

    def is_shared(self, upstream: str) -> bool: ...

    async def notify_all(self, method: str, params: Message | None = None) -> None: ...

    async def set_log_level(self, level: str) -> None: ...


class Handshake(Protocol):
    """The provider's side of ``initialize`` (the session era only)."""

    @property
    def initialized(self) -> bool: ...

    async def negotiated(self, version: str, client_info: Message, capabilities: Message) -> None:
        """Settle the session's version and the client's facts (and record them)."""


@dataclass(frozen=True)
class ServerFacts:
    """What the hub says about itself."""

    info: Message
    capabilities: Callable[[], Message]
    instructions: str | None = None


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Everything a handler may use to serve one request."""

    caller: Caller
    era: Era
    protocol_version: str
    client_capabilities: Message
    view: CatalogView
    upstreams: UpstreamAccess
    emit: Callable[[Message], object]
    """Send a message related to this request on its stream (progress, a relayed request)."""
    hooks: Callable[[str, Message], CallHooks]
    """Where an upstream's messages for this call go: (upstream name, the call's params) -> hooks."""
    subscriptions: set[str]
    """Public URIs this caller is subscribed to."""
    still_held: Callable[[str, str], bool]
    """Whether a caller of a tenant (a session, or a listen stream) still holds a subscription to a
    public URI: (URI, tenant). A shared upstream session, one per tenant, stays subscribed while one does."""
    tasks: TaskTable
    """This caller's tasks: public task id <-> (upstream, the upstream's task id)."""
    server: ServerFacts
    handshake: Handshake | None = None
    log_level: str | None = None


def held_by_none(uri: str, tenant: str) -> bool:
    """A :attr:`RequestContext.still_held` for a caller that shares no upstream subscription with others."""
    return False
