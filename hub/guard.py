"""DNS-rebinding protection: the ``Origin`` and ``Host`` checks in front of every endpoint.

A browser page on another site must not reach a hub on the user's machine.
A request whose ``Origin`` is present and not allowed is refused with 403,
as the MCP transport requires. When the hub listens on loopback, a request
whose ``Host`` is not a loopback name is refused with 421: that is what a
rebound DNS name looks like. Both lists can be set in the config.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from collections.abc import Sequence
from typing import Final

from connectors import jsonrpc
from hub.asgi import Receive, Scope, Send, respond

__all__ = ["OriginGuard", "default_allowed_hosts", "default_allowed_origins"]

_LOOPBACK: Final = ("127.0.0.1", "localhost", "[::1]")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 in brackets or not) is this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: 127.example.com is not loopback


def default_allowed_hosts(listen_host: str) -> list[str] | None:
    """Loopback names (any port) when listening on loopback; no check otherwise."""
    if not is_loopback(listen_host):
        return None
    return [pattern for name in _LOOPBACK for pattern in (name, f"{name}:*")]


def default_allowed_origins() -> list[str]:
    return [f"{scheme}://{name}{port}" for scheme in ("http", "https") for name in _LOOPBACK for port in ("", ":*")]


class OriginGuard:
    """ASGI middleware refusing requests from disallowed origins and hosts."""

    def __init__(self, app: object, *, origins: Sequence[str], hosts: Sequence[str] | None) -> None:
        self.app = app
        self.origins = [o.lower() for o in origins]
        self.hosts = None if hosts is None else [h.lower() for h in hosts]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            # Only two headers matter here: look them up without decoding the rest.
            origin: str | None = None
            host = ""
            for name, value in scope["headers"]:
                lowered = name.lower()
                if lowered == b"origin":
                    origin = value.decode("latin-1")
                elif lowered == b"host":
                    host = value.decode("latin-1")
            if origin is not None and not _allowed(origin.lower(), self.origins):
                await _refuse(send, 403, f"Forbidden: origin {origin} is not allowed")
                return
            if self.hosts is not None and not _allowed(host.lower(), self.hosts):
                await _refuse(send, 421, f"Misdirected Request: host {host or '(none)'} is not allowed")
                return
        await self.app(scope, receive, send)  # type: ignore[operator]


def _allowed(value: str, patterns: Sequence[str]) -> bool:
    return any(pattern == "*" or fnmatch.fnmatchcase(value, pattern) for pattern in patterns)


async def _refuse(send: Send, status: int, message: str) -> None:
    body = jsonrpc.dumps(jsonrpc.error_response(None, {"code": -32600, "message": message}))
    await respond(send, status, body, [(b"content-type", b"application/json")])
