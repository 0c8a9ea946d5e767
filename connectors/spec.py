"""What a connector needs to know about one upstream, free of the hub's config format."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_HANDSHAKE_VERSION

__all__ = [
    "CLIENT_INFO",
    "LATEST_VERSION",
    "SUPPORTED_VERSIONS",
    "Transport",
    "UpstreamSpec",
]

Transport = Literal["streamable-http", "sse"]

SUPPORTED_VERSIONS: Final[tuple[str, ...]] = HANDSHAKE_PROTOCOL_VERSIONS
LATEST_VERSION: Final[str] = LATEST_HANDSHAKE_VERSION
CLIENT_INFO: Final[dict[str, str]] = {"name": "manifold", "version": "0.1.0"}


@dataclass(frozen=True)
class UpstreamSpec:
    """One upstream MCP server as the pool sees it."""

    name: str
    url: str
    transport: Transport = "streamable-http"
    headers: Mapping[str, str] = field(default_factory=dict)
    connect_timeout: float = 10.0
    request_timeout: float = 60.0
    max_concurrency: int = 16
    shared: bool = False
