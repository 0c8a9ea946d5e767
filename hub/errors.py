"""The hub's branch of the error tree, and the one place exceptions become wire errors.

Each class knows its JSON-RPC code and, when it refuses the HTTP request
itself, its HTTP status (in brackets)::

    ManifoldError                      -32603  (connectors.errors) root
    ├── UpstreamError ...                      (connectors.errors) one upstream failed
    └── HubError                       -32603  the hub refused or failed a request
        ├── ParseError                 -32700  [400] the body is not JSON
        ├── InvalidRequest             -32600  [400] not a JSON-RPC 2.0 message we accept
        │   ├── MissingSession         -32600  [400] no Mcp-Session-Id
        │   ├── BadEventId             -32600  [400] a malformed Last-Event-ID
        │   └── TooDeep                -32600  [400] JSON nested past the limit
        ├── SessionNotFound            -32600  [404] unknown, expired or ended session
        ├── StreamGone                 -32600  [404] the events of that stream are no longer kept
        ├── StreamConflict             -32600  [409] the session's GET stream is already open
        ├── MethodNotAllowed           -32600  [405] not GET, POST or DELETE
        ├── NotAcceptable              -32600  [406] Accept lacks what the reply needs
        ├── UnsupportedMediaType       -32600  [415] the body is not application/json
        ├── BodyTooLarge               -32600  [413] the body passed maxBodyBytes
        ├── RequestTimeout             -32600  [408] the body did not arrive in time
        ├── UnsupportedVersion         -32022  [400] a protocol version the hub does not speak
        ├── HeaderMismatch             -32020  [400] a 2026-07-28 routing header disagrees with the body
        ├── MissingCapability          -32021  [400] the request needs a client capability it did not declare
        ├── MethodNotFound             -32601  no handler for the method
        ├── InvalidParams              -32602  params missing or of the wrong shape
        │   ├── UnknownName            -32602  no tool or prompt by that public name
        │   ├── BadRequestState        -32602  a requestState that is forged, replayed, expired or not the caller's
        │   └── UnknownResource        -32002  no upstream owns that URI
        ├── Unauthorized               -32030  [401] no credential, or a bad one (WWW-Authenticate)
        ├── Forbidden                  -32031  [403] a good credential that may not do this
        ├── RateLimited                -32029  [429] a tenant's or principal's limit (Retry-After)
        ├── SessionLimit               -32000  [503] the hub holds its maximum of sessions
        ├── SessionBusy                -32000  [503] the session's inbox is full
        ├── ShuttingDown               -32000  [503] the hub is draining (Retry-After)
        ├── ReplicaUnavailable         -32000  [503] the session's replica does not answer yet (Retry-After)
        ├── ReplicaLost                -32603  [502] the session's replica went away with the request
        ├── NotOwner                   -32000  [421] a forwarded request reached a replica that lost the session
        ├── ClientTimeout              -32001  the client did not answer a relayed request in time
        ├── ClientError                (client's own code) the client's error, passed on upstream
        └── ConfigError                        the config file has problems (never on the wire)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar

from connectors.errors import ManifoldError, error_code
from connectors.jsonrpc import Message

__all__ = [
    "BadEventId",
    "BadRequestState",
    "BodyTooLarge",
    "ClientError",
    "ClientTimeout",
    "ConfigError",
    "Forbidden",
    "HeaderMismatch",
    "HubError",
    "InvalidParams",
    "InvalidRequest",
    "MethodNotAllowed",
    "MethodNotFound",
    "MissingCapability",
    "MissingSession",
    "NotAcceptable",
    "NotOwner",
    "ParseError",
    "RateLimited",
    "ReplicaLost",
    "ReplicaUnavailable",
    "RequestTimeout",
    "SessionBusy",
    "SessionLimit",
    "SessionNotFound",
    "ShuttingDown",
    "StoreUnavailable",
    "StreamConflict",
    "StreamGone",
    "TooDeep",
    "Unauthorized",
    "UnknownName",
    "UnknownResource",
    "UnsupportedMediaType",
    "UnsupportedVersion",
    "WireError",
    "to_wire",
]

logger = logging.getLogger(__name__)


class HubError(ManifoldError):
    """The hub refused or failed a request."""


class ParseError(HubError):
    code = -32700
    http_status: ClassVar[int | None] = 400


class InvalidRequest(HubError):
    code = -32600
    http_status: ClassVar[int | None] = 400


class MissingSession(InvalidRequest):
    pass


class BadEventId(InvalidRequest):
    pass


class TooDeep(InvalidRequest):
    pass


class SessionNotFound(HubError):
    code = -32600
    http_status: ClassVar[int | None] = 404

    def __init__(self, message: str = "Session not found", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)


class StreamGone(HubError):
    code = -32600
    http_status: ClassVar[int | None] = 404


class StreamConflict(HubError):
    code = -32600
    http_status: ClassVar[int | None] = 409


class MethodNotAllowed(HubError):
    code = -32600
    http_status: ClassVar[int | None] = 405


class NotAcceptable(HubError):
    code = -32600
    http_status: ClassVar[int | None] = 406


class UnsupportedMediaType(HubError):
    code = -32600
    http_status: ClassVar[int | None] = 415


class BodyTooLarge(HubError):
    code = -32600
    http_status: ClassVar[int | None] = 413


class RequestTimeout(HubError):
    code = -32600
    http_status: ClassVar[int | None] = 408


class UnsupportedVersion(HubError):
    code = -32022
    http_status: ClassVar[int | None] = 400


class HeaderMismatch(HubError):
    code = -32020
    http_status: ClassVar[int | None] = 400


class MissingCapability(HubError):
    code = -32021
    http_status: ClassVar[int | None] = 400


class MethodNotFound(HubError):
    code = -32601


class InvalidParams(HubError):
    code = -32602


class UnknownName(InvalidParams):
    pass


class BadRequestState(InvalidParams):
    """The ``requestState`` of a 2026-07-28 retry is not one this hub issued to this caller and still holds."""


class UnknownResource(InvalidParams):
    code = -32002  # the spec's "resource not found"


class Unauthorized(HubError):
    """The request carries no credential or a bad one; ``headers`` hold the ``WWW-Authenticate`` challenge."""

    code = -32030
    http_status: ClassVar[int | None] = 401


class Forbidden(HubError):
    code = -32031
    http_status: ClassVar[int | None] = 403


class RateLimited(HubError):
    """A limit of the caller's tenant or principal; says which and when to try again."""

    code = -32029
    http_status: ClassVar[int | None] = 429

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        seconds = max(1, int(retry_after + 0.999))
        super().__init__(message, data={"retryAfter": seconds}, headers={"retry-after": str(seconds)})


class SessionLimit(HubError):
    code = -32000
    http_status: ClassVar[int | None] = 503


class StoreUnavailable(HubError):
    """The shared store (Redis) does not answer, so no new session can be owned safely."""

    code = -32000
    http_status: ClassVar[int | None] = 503


class SessionBusy(HubError):
    code = -32000
    http_status: ClassVar[int | None] = 503


class ShuttingDown(HubError):
    code = -32000
    http_status: ClassVar[int | None] = 503

    def __init__(self, message: str = "the hub is shutting down; try again shortly", retry_after: int = 2) -> None:
        super().__init__(message, headers={"retry-after": str(retry_after)})


class ReplicaUnavailable(HubError):
    code = -32000
    http_status: ClassVar[int | None] = 503

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message, headers={"retry-after": str(retry_after)})


class ReplicaLost(HubError):
    """The replica serving a request went away after it had it: whether it was acted on is unknown."""

    code = -32603
    http_status: ClassVar[int | None] = 502


class NotOwner(HubError):
    """A request another replica forwarded reached one that does not own its session (any more)."""

    code = -32000
    http_status: ClassVar[int | None] = 421

    def __init__(self, message: str, run: str) -> None:
        super().__init__(message, headers={"x-manifold-replica": run})


class ClientTimeout(HubError):
    code = -32001


class ClientError(HubError):
    """An error the client answered a relayed request with; passed to the upstream unchanged."""

    def __init__(self, error: Message) -> None:
        super().__init__(str(error.get("message", "client error")), data=error.get("data"))
        self.code = error_code(error.get("code"))


class ConfigError(HubError):
    """A config file with problems; ``problems`` lists each as ``$.json.path: what is wrong``."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid config:\n" + "\n".join(f"  {p}" for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class WireError:
    """What an exception looks like on the wire."""

    error: Message
    """The JSON-RPC ``error`` object."""
    status: int = 200
    """The HTTP status when the error refuses the HTTP request; 200 inside a reply."""
    headers: dict[str, str] = field(default_factory=dict)


def to_wire(exc: BaseException) -> WireError:
    """The wire form of any exception; unexpected ones are logged, not leaked."""
    if isinstance(exc, ManifoldError):
        return WireError(exc.to_error(), exc.http_status or 200, exc.headers)
    logger.error("unexpected error while serving a request", exc_info=exc)
    return WireError({"code": -32603, "message": "internal error"})
