"""The hub's branch of the error tree, and the one place exceptions become wire errors.

::

    ManifoldError                      -32603  (connectors.errors) root
    ├── UpstreamError ...                      (connectors.errors) one upstream failed
    └── HubError                       -32603  the hub refused or failed a request
        ├── ParseError                 -32700  the body is not JSON
        ├── InvalidRequest             -32600  not a JSON-RPC 2.0 request we accept
        ├── MethodNotFound             -32601  no handler for the method
        ├── InvalidParams              -32602  params missing or of the wrong shape
        │   ├── UnknownName            -32602  no tool or prompt by that public name
        │   └── UnknownResource        -32002  no upstream owns that URI
        ├── UnsupportedVersion         -32022  a protocol version the hub does not speak
        ├── SessionLimit               -32000  the hub holds its maximum of sessions
        ├── ClientTimeout              -32001  the client did not answer a relayed request in time
        ├── ClientError                (client's own code) the client's error, passed on upstream
        └── ConfigError                        the config file has problems (never on the wire)
"""

from __future__ import annotations

import logging
from typing import Any

from connectors.errors import ManifoldError
from connectors.jsonrpc import Message

__all__ = [
    "ClientError",
    "ClientTimeout",
    "ConfigError",
    "HubError",
    "InvalidParams",
    "InvalidRequest",
    "MethodNotFound",
    "ParseError",
    "SessionLimit",
    "UnknownName",
    "UnknownResource",
    "UnsupportedVersion",
    "to_wire_error",
]

logger = logging.getLogger(__name__)


class HubError(ManifoldError):
    """The hub refused or failed a request."""


class ParseError(HubError):
    code = -32700


class InvalidRequest(HubError):
    code = -32600


class MethodNotFound(HubError):
    code = -32601


class InvalidParams(HubError):
    code = -32602


class UnknownName(InvalidParams):
    pass


class UnknownResource(InvalidParams):
    code = -32002  # the spec's "resource not found"


class UnsupportedVersion(HubError):
    code = -32022


class SessionLimit(HubError):
    code = -32000


class ClientTimeout(HubError):
    code = -32001


class ClientError(HubError):
    """An error the client answered a relayed request with; passed to the upstream unchanged."""

    def __init__(self, error: Message) -> None:
        code = error.get("code")
        super().__init__(str(error.get("message", "client error")), data=error.get("data"))
        self.code = code if isinstance(code, int) and not isinstance(code, bool) else -32603


class ConfigError(HubError):
    """A config file with problems; ``problems`` lists each as ``$.json.path: what is wrong``."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid config:\n" + "\n".join(f"  {p}" for p in problems))
        self.problems = problems


def to_wire_error(exc: BaseException) -> Message:
    """The JSON-RPC ``error`` object for any exception; unexpected ones are logged, not leaked."""
    if isinstance(exc, ManifoldError):
        return exc.to_error()
    logger.error("unexpected error while serving a request", exc_info=exc)
    error: dict[str, Any] = {"code": -32603, "message": "internal error"}
    return error
