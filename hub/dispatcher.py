"""Maps each MCP method to the handler that serves it.

Handlers see a :class:`RequestContext`, never a session: the legacy session
actor is one provider of that context, and a stateless request path can be
another.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from connectors import jsonrpc
from connectors.jsonrpc import Message
from connectors.pool import PoolSession
from hub.catalog import Catalog, ListKind
from hub.errors import InvalidParams, MethodNotFound

__all__ = ["HANDLERS", "RequestContext", "dispatch"]


@dataclass(frozen=True)
class RequestContext:
    """Everything a handler may use to serve one request."""

    catalog: Catalog
    upstreams: PoolSession
    emit: Callable[[Message], object]
    protocol_version: str
    client_capabilities: Message


Handler = Callable[[RequestContext, Message], Awaitable[Message]]


def _string(params: Message, key: str) -> str:
    value = params.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidParams(f"params.{key} must be a non-empty string")
    return value


def _list(kind: ListKind) -> Handler:
    async def handle(ctx: RequestContext, params: Message) -> Message:
        return ctx.catalog.page(kind, params.get("cursor"))

    return handle


def _relay_progress(ctx: RequestContext, params: Message) -> Any:
    meta = params.get("_meta")
    if not isinstance(meta, dict) or "progressToken" not in meta:
        return None

    def on_progress(progress: Message) -> None:
        ctx.emit(jsonrpc.notification("notifications/progress", progress))

    return on_progress


async def _ping(ctx: RequestContext, params: Message) -> Message:
    return {}


async def _call_tool(ctx: RequestContext, params: Message) -> Message:
    entry = ctx.catalog.tool(_string(params, "name"))
    return await ctx.upstreams.request(
        entry.upstream,
        "tools/call",
        {**params, "name": entry.original},
        on_progress=_relay_progress(ctx, params),
    )


async def _get_prompt(ctx: RequestContext, params: Message) -> Message:
    entry = ctx.catalog.prompt(_string(params, "name"))
    return await ctx.upstreams.request(
        entry.upstream,
        "prompts/get",
        {**params, "name": entry.original},
        on_progress=_relay_progress(ctx, params),
    )


async def _read_resource(ctx: RequestContext, params: Message) -> Message:
    uri = _string(params, "uri")
    entry = ctx.catalog.resource(uri)
    result = await ctx.upstreams.request(
        entry.upstream, "resources/read", {**params, "uri": entry.original}, on_progress=_relay_progress(ctx, params)
    )
    contents = result.get("contents")
    if isinstance(contents, list):
        # Contents name the URI the client can read again through the hub.
        result["contents"] = [
            {**item, "uri": ctx.catalog.public_uri_of(entry.upstream, item["uri"])}
            if isinstance(item, dict) and isinstance(item.get("uri"), str)
            else item
            for item in contents
        ]
    return result


HANDLERS: Final[dict[str, Handler]] = {
    "ping": _ping,
    "tools/list": _list("tools"),
    "tools/call": _call_tool,
    "prompts/list": _list("prompts"),
    "prompts/get": _get_prompt,
    "resources/list": _list("resources"),
    "resources/templates/list": _list("resourceTemplates"),
    "resources/read": _read_resource,
}


async def dispatch(ctx: RequestContext, method: str, params: Message) -> Message:
    """Serve one request and return its result.

    Raises:
        MethodNotFound: no handler for ``method``.
        ManifoldError: whatever the handler raises.
    """
    handler = HANDLERS.get(method)
    if handler is None:
        raise MethodNotFound(f"method not found: {method}")
    return await handler(ctx, params)
