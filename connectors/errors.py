"""The error tree shared by the hub and its connectors.

Every error Manifold raises derives from :class:`ManifoldError` and knows the
JSON-RPC code it is reported with and, for errors that refuse an HTTP request
outright, the HTTP status. Dependency errors (httpx, pydantic, aiosqlite) are
translated at the edge with ``raise ... from exc``::

    ManifoldError                      -32603  root; anything unexpected
    ├── NotRelayed                     -32601  a server-to-client request with no client to go to
    └── UpstreamError                  -32603  one upstream failed; names it
        ├── UpstreamUnavailable        -32010  down, or would not connect
        │   └── CircuitOpen            -32010  failed repeatedly; calls fail at once until the retry time
        ├── UpstreamBusy               -32011  its queue is full or the wait passed its deadline
        ├── UpstreamTimeout            -32001  no answer (nor progress) within the request timeout
        ├── UpstreamProtocolError      -32012  it answered something that is not MCP
        │   └── UpstreamTooLarge       -32012  a message past the size limit
        ├── UpstreamSessionExpired     -32013  it forgot our session (404); retried once
        └── UpstreamRpcError           (upstream's own code) a JSON-RPC error it sent

The hub's own branch (bad requests, unknown names, session limits) lives in
``hub.errors`` and derives from the same root; ``hub.errors.to_wire`` is the
one function that turns any exception into what goes on the wire.
"""

from __future__ import annotations

from typing import Any, ClassVar

from connectors import jsonrpc

__all__ = [
    "CircuitOpen",
    "ManifoldError",
    "NotRelayed",
    "UpstreamBusy",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamRpcError",
    "UpstreamSessionExpired",
    "UpstreamTimeout",
    "UpstreamTooLarge",
    "UpstreamUnavailable",
    "error_code",
    "http_refusal",
]


def error_code(value: Any, default: int = -32603) -> int:
    """A JSON-RPC error code from a peer's error object: an integer, or ``default``."""
    return value if isinstance(value, int) and not isinstance(value, bool) else default


class ManifoldError(Exception):
    """Root of every error Manifold raises; carries its JSON-RPC code.

    ``http_status`` is set on errors that refuse the HTTP request itself (a
    malformed request, an unknown session); an error inside the reply to a
    valid request travels as a JSON-RPC error with HTTP 200. ``headers`` are
    HTTP headers such a refusal carries (``Retry-After``, ``Allow``).
    """

    code: int = -32603
    http_status: ClassVar[int | None] = None

    def __init__(self, message: str, *, data: Any = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data
        self.headers: dict[str, str] = headers or {}

    def to_error(self) -> dict[str, Any]:
        """The JSON-RPC ``error`` object for this exception."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


class NotRelayed(ManifoldError):
    """A request an upstream sent that no client can answer (it belongs to no client session)."""

    code = -32601


class UpstreamError(ManifoldError):
    """A failure that belongs to one upstream; the message names it."""

    def __init__(self, upstream: str, message: str, *, data: Any = None) -> None:
        super().__init__(f"upstream '{upstream}': {message}", data=data)
        self.upstream = upstream
        self.reason = message


class UpstreamUnavailable(UpstreamError):
    code = -32010


class CircuitOpen(UpstreamUnavailable):
    """The upstream failed repeatedly; calls fail at once until ``retry_in`` seconds have passed."""

    def __init__(self, upstream: str, failures: int, retry_in: float) -> None:
        super().__init__(
            upstream, f"circuit open after {failures} failures in a row; next try in {max(retry_in, 0.0):.1f}s"
        )
        self.retry_in = retry_in


class UpstreamBusy(UpstreamError):
    code = -32011


class UpstreamTimeout(UpstreamError):
    code = -32001


class UpstreamProtocolError(UpstreamError):
    code = -32012


class UpstreamTooLarge(UpstreamProtocolError):
    """The upstream sent a message (or an event) larger than the configured limit."""

    def __init__(self, upstream: str, what: str, limit: int) -> None:
        super().__init__(upstream, f"{what} larger than the limit of {limit} bytes (maxResultBytes)")
        self.limit = limit


class UpstreamSessionExpired(UpstreamError):
    code = -32013


class UpstreamRpcError(UpstreamError):
    """A JSON-RPC error the upstream returned; passed to the client unchanged."""

    def __init__(self, upstream: str, error: dict[str, Any]) -> None:
        message = error.get("message")
        super().__init__(upstream, str(message), data=error.get("data"))
        self.code = error_code(error.get("code"))
        # The client sees the upstream's own message, not our prefixed one.
        self.message = str(message) if message is not None else "upstream error"


def http_refusal(name: str, status: int, body: bytes) -> dict[str, Any] | UpstreamError:
    """What an upstream's HTTP refusal (status 4xx or 5xx) of a POST means.

    A JSON-RPC error for one of our requests is returned as it is, to be that request's
    answer; anything else becomes the error that names the upstream and the status.
    """
    try:
        decoded: Any = jsonrpc.loads(body) if body else None
    except ValueError:
        decoded = None
    kind = jsonrpc.classify(decoded)
    if kind is jsonrpc.Kind.ERROR and decoded.get("id") is not None:
        return dict(decoded)
    detail = f": {decoded['error'].get('message', '')}" if kind is jsonrpc.Kind.ERROR else ""
    error: type[UpstreamError] = UpstreamUnavailable
    if status in (401, 403):
        detail = detail or ": authentication failed (check the upstream's headers)"
    elif status < 500:
        error = UpstreamProtocolError
    return error(name, f"HTTP {status}{detail}")
