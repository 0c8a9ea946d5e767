"""The error tree shared by the hub and its connectors.

Every error Manifold raises derives from :class:`ManifoldError` and knows the
JSON-RPC code it is reported with. Dependency errors (httpx, pydantic,
aiosqlite) are translated at the edge with ``raise ... from exc``::

    ManifoldError                      -32603  root; anything unexpected
    ├── NotRelayed                     -32601  a server-to-client request with no client to go to
    └── UpstreamError                  -32603  one upstream failed; names it
        ├── UpstreamUnavailable        -32010  down, circuit open, or would not connect
        ├── UpstreamBusy               -32011  its queue is full or the wait passed its deadline
        ├── UpstreamTimeout            -32001  no answer within the request timeout
        ├── UpstreamProtocolError      -32012  it answered something that is not MCP
        ├── UpstreamSessionExpired     -32013  it forgot our session (404); retried once
        └── UpstreamRpcError           (upstream's own code) a JSON-RPC error it sent

The hub's own branch (bad requests, unknown names, session limits) lives in
``hub.errors`` and derives from the same root.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ManifoldError",
    "NotRelayed",
    "UpstreamBusy",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamRpcError",
    "UpstreamSessionExpired",
    "UpstreamTimeout",
    "UpstreamUnavailable",
]


class ManifoldError(Exception):
    """Root of every error Manifold raises; carries its JSON-RPC code."""

    code: int = -32603

    def __init__(self, message: str, *, data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data

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


class UpstreamBusy(UpstreamError):
    code = -32011


class UpstreamTimeout(UpstreamError):
    code = -32001


class UpstreamProtocolError(UpstreamError):
    code = -32012


class UpstreamSessionExpired(UpstreamError):
    code = -32013


class UpstreamRpcError(UpstreamError):
    """A JSON-RPC error the upstream returned; passed to the client unchanged."""

    def __init__(self, upstream: str, error: dict[str, Any]) -> None:
        code = error.get("code")
        message = error.get("message")
        super().__init__(upstream, str(message), data=error.get("data"))
        self.code = code if isinstance(code, int) else -32603
        # The client sees the upstream's own message, not our prefixed one.
        self.message = str(message) if message is not None else "upstream error"
