"""Connectors to upstream MCP servers, and the pool that runs them."""

from connectors.engine import CallHooks, Connector
from connectors.errors import (
    CircuitOpen,
    ManifoldError,
    UpstreamBusy,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRpcError,
    UpstreamSessionExpired,
    UpstreamTimeout,
    UpstreamTooLarge,
    UpstreamUnavailable,
)
from connectors.factory import make_connector
from connectors.limits import PoolLimits
from connectors.pool import ConnectorPool
from connectors.spec import UpstreamSpec
from connectors.status import BreakerState, Listing, UpstreamState, UpstreamStatus
from connectors.transport import Link, Transport
from connectors.upstream_sessions import UpstreamSessions

__all__ = [
    "BreakerState",
    "CallHooks",
    "CircuitOpen",
    "Connector",
    "ConnectorPool",
    "Link",
    "Listing",
    "ManifoldError",
    "PoolLimits",
    "Transport",
    "UpstreamBusy",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamRpcError",
    "UpstreamSessionExpired",
    "UpstreamSessions",
    "UpstreamSpec",
    "UpstreamState",
    "UpstreamStatus",
    "UpstreamTimeout",
    "UpstreamTooLarge",
    "UpstreamUnavailable",
    "make_connector",
]
