"""Maps each MCP method to the handler that serves it.

Handlers see a :class:`RequestContext`, never a session: the legacy session
actor is one provider of that context, and a stateless request path can be
another.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from connectors.base import CallHooks
from connectors.jsonrpc import Message
from connectors.pool_session import PoolSession
from hub.catalog import Catalog, Entry, ListKind
from hub.errors import InvalidParams, MethodNotFound
from hub.tasks import TaskTable

__all__ = ["HANDLERS", "LOG_LEVELS", "RequestContext", "dispatch"]

LOG_LEVELS: Final = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")


@dataclass(frozen=True)
class RequestContext:
    """Everything a handler may use to serve one request."""

    catalog: Catalog
    upstreams: PoolSession
    emit: Callable[[Message], object]
    hooks: Callable[[str, Message], CallHooks]
    """Where an upstream's messages for this call go: (upstream name, the call's params) -> hooks."""
    protocol_version: str
    client_capabilities: Message
    subscriptions: set[str]
    """Public URIs this client is subscribed to."""
    subscribers: Callable[[str], int]
    """How many sessions of the hub are subscribed to a public URI."""
    tasks: TaskTable
    """This client's tasks: public task id <-> (upstream, the upstream's task id)."""


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


async def _forward(ctx: RequestContext, entry: Entry, method: str, params: Message) -> Message:
    return await ctx.upstreams.request(entry.upstream, method, params, hooks=ctx.hooks(entry.upstream, params))


async def _ping(ctx: RequestContext, params: Message) -> Message:
    return {}


async def _call_tool(ctx: RequestContext, params: Message) -> Message:
    entry = ctx.catalog.tool(_string(params, "name"))
    result = await _forward(ctx, entry, "tools/call", {**params, "name": entry.original})
    task = result.get("task")
    if isinstance(task, dict) and isinstance(task.get("taskId"), str):
        # A task-augmented call: the client polls the task through the hub under a public id.
        result = {**result, "task": ctx.tasks.publish(entry.upstream, task)}
    return result


def _task(ctx: RequestContext, params: Message) -> tuple[str, str]:
    return ctx.tasks.find(_string(params, "taskId"))


async def _task_request(ctx: RequestContext, method: str, params: Message) -> tuple[str, Message]:
    upstream, original = _task(ctx, params)
    result = await ctx.upstreams.request(
        upstream, method, {**params, "taskId": original}, hooks=ctx.hooks(upstream, params)
    )
    return upstream, result


async def _get_task(ctx: RequestContext, params: Message) -> Message:
    upstream, result = await _task_request(ctx, "tasks/get", params)
    return ctx.tasks.publish(upstream, result)


async def _cancel_task(ctx: RequestContext, params: Message) -> Message:
    upstream, result = await _task_request(ctx, "tasks/cancel", params)
    return ctx.tasks.publish(upstream, result)


async def _task_result(ctx: RequestContext, params: Message) -> Message:
    upstream, result = await _task_request(ctx, "tasks/result", params)
    return ctx.tasks.publish_related(upstream, result)


async def _list_tasks(ctx: RequestContext, params: Message) -> Message:
    tasks: list[Message] = []
    for upstream in ctx.tasks.upstreams():
        listed = await ctx.upstreams.request(upstream, "tasks/list", {})
        tasks += [ctx.tasks.publish(upstream, task) for task in listed.get("tasks", []) if isinstance(task, dict)]
    return {"tasks": tasks}


async def _get_prompt(ctx: RequestContext, params: Message) -> Message:
    entry = ctx.catalog.prompt(_string(params, "name"))
    return await _forward(ctx, entry, "prompts/get", {**params, "name": entry.original})


async def _read_resource(ctx: RequestContext, params: Message) -> Message:
    entry = ctx.catalog.resource(_string(params, "uri"))
    result = await _forward(ctx, entry, "resources/read", {**params, "uri": entry.original})
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


async def _subscribe(ctx: RequestContext, params: Message) -> Message:
    uri = _string(params, "uri")
    entry = ctx.catalog.resource(uri)
    await _forward(ctx, entry, "resources/subscribe", {**params, "uri": entry.original})
    ctx.subscriptions.add(uri)
    return {}


async def _unsubscribe(ctx: RequestContext, params: Message) -> Message:
    uri = _string(params, "uri")
    entry = ctx.catalog.resource(uri)
    ctx.subscriptions.discard(uri)
    # A shared upstream session serves every client: keep it subscribed while anyone is.
    if not (ctx.upstreams.is_shared(entry.upstream) and ctx.subscribers(uri) > 0):
        await _forward(ctx, entry, "resources/unsubscribe", {**params, "uri": entry.original})
    return {}


async def _set_level(ctx: RequestContext, params: Message) -> Message:
    level = _string(params, "level")
    if level not in LOG_LEVELS:
        raise InvalidParams(f"params.level must be one of {', '.join(LOG_LEVELS)}")
    await ctx.upstreams.set_log_level(level)
    return {}


async def _complete(ctx: RequestContext, params: Message) -> Message:
    ref = params.get("ref")
    if not isinstance(ref, dict):
        raise InvalidParams("params.ref must be an object")
    if ref.get("type") == "ref/prompt":
        entry = ctx.catalog.prompt(_string(ref, "name"))
        ref = {**ref, "name": entry.original}
    elif ref.get("type") == "ref/resource":
        entry = ctx.catalog.resource(_string(ref, "uri"))
        ref = {**ref, "uri": entry.original}
    else:
        raise InvalidParams("params.ref.type must be ref/prompt or ref/resource")
    return await _forward(ctx, entry, "completion/complete", {**params, "ref": ref})


HANDLERS: Final[dict[str, Handler]] = {
    "ping": _ping,
    "tools/list": _list("tools"),
    "tools/call": _call_tool,
    "prompts/list": _list("prompts"),
    "prompts/get": _get_prompt,
    "resources/list": _list("resources"),
    "resources/templates/list": _list("resourceTemplates"),
    "resources/read": _read_resource,
    "resources/subscribe": _subscribe,
    "resources/unsubscribe": _unsubscribe,
    "logging/setLevel": _set_level,
    "completion/complete": _complete,
    "tasks/get": _get_task,
    "tasks/result": _task_result,
    "tasks/cancel": _cancel_task,
    "tasks/list": _list_tasks,
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
