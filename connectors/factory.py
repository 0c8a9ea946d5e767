"""The one place that picks a transport for an upstream and puts the JSON-RPC engine over it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from connectors.clients import UpstreamClients
from connectors.engine import Connector, MessageHandler, RequestHandler
from connectors.jsonrpc import Message
from connectors.spec import UpstreamSpec
from connectors.sse import SseTransport
from connectors.stdio import StdioTransport
from connectors.streamable_http import StreamableHttpTransport
from connectors.transport import Transport

__all__ = ["make_connector"]


def make_connector(
    spec: UpstreamSpec,
    clients: UpstreamClients,
    *,
    capabilities: Message | None = None,
    on_message: MessageHandler | None = None,
    on_request: RequestHandler | None = None,
    on_list_changed: MessageHandler | None = None,
    persistent: bool = True,
    tool_schema: Callable[[str], Any] | None = None,
    key: str = "",
) -> Connector:
    """A connector for ``spec``, not yet entered; enter and exit it in one task.

    ``persistent`` sessions (discovery, shared) keep their side stream open for good and outside
    the upstream's stream budget; the others count against it and let it go while they are idle.
    In the 2026-07-28 era only persistent ones hold a ``subscriptions/listen`` stream.
    ``tool_schema`` gives a tool's input schema (the ``Mcp-Param-*`` headers come from it).
    ``key`` is the tenant a local (stdio) process runs for: its workspace is that tenant's.
    """
    transport: Transport
    streams = None if persistent else clients.streams  # the few persistent sessions are never evicted
    if spec.transport == "stdio":
        transport = StdioTransport(spec, clients.processes, key)
    elif spec.transport == "sse":
        transport = SseTransport(spec, clients.http, streams=streams)
    else:
        assert clients.posts is not None
        transport = StreamableHttpTransport(
            spec, clients.http, clients.posts, streams=streams, persistent=persistent, tool_schema=tool_schema
        )
    return Connector(
        spec,
        transport,
        capabilities=capabilities,
        on_message=on_message,
        on_request=on_request,
        on_list_changed=on_list_changed,
        listen=persistent,
    )
