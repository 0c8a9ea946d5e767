"""Connectors to upstream MCP servers, and the pool that runs them."""

from connectors.base import CallHooks, Connector
from connectors.errors import (
    ManifoldError,
    UpstreamBusy,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRpcError,
    UpstreamSessionExpired,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from connectors.pool import ConnectorPool, Listing, PoolLimits, UpstreamState, UpstreamStatus
from connectors.pool_session import PoolSession
from connectors.spec import UpstreamSpec
from connectors.sse import SseConnector
from connectors.streamable_http import StreamableHttpConnector

__all__ = [
    "CallHooks",
    "Connector",
    "ConnectorPool",
    "Listing",
    "ManifoldError",
    "PoolLimits",
    "PoolSession",
    "SseConnector",
    "StreamableHttpConnector",
    "UpstreamBusy",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamRpcError",
    "UpstreamSessionExpired",
    "UpstreamSpec",
    "UpstreamState",
    "UpstreamStatus",
    "UpstreamTimeout",
    "UpstreamUnavailable",
]
