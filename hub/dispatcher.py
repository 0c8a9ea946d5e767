"""Maps each MCP method to the handler that serves it, ``initialize`` included.

Handlers see a :class:`~hub.context.RequestContext`, never a session: the
session actor is one provider of that context, and a stateless request path
can be another. A handler that reaches an upstream asks the caller's catalog
view which upstream and which original name, then the caller's upstream access.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Final

from connectors.errors import UpstreamRpcError
from connectors.jsonrpc import Message
from connectors.spec import LATEST_VERSION, SUPPORTED_VERSIONS
from hub import upstream_tasks
from hub.catalog import Entry, ListKind
from hub.context import RequestContext
from hub.errors import InvalidParams, InvalidRequest, MethodNotFound
from hub.upstream_tasks import legacy_task

__all__ = ["HANDLERS", "LOG_LEVELS", "dispatch", "negotiate"]

LOG_LEVELS: Final = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")


Handler = Callable[[RequestContext, Message], Awaitable[Message]]


def _string(params: Message, key: str) -> str:
    value = params.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidParams(f"params.{key} must be a non-empty string")
    return value


def _list(kind: ListKind) -> Handler:
    async def handle(ctx: RequestContext, params: Message) -> Message:
        return ctx.view.page(kind, params.get("cursor"))

    return handle


async def _forward(ctx: RequestContext, entry: Entry, method: str, params: Message) -> Message:
    return await ctx.upstreams.request(entry.upstream, method, params, hooks=ctx.hooks(entry.upstream, params))


def negotiate(requested: str) -> str:
    """The version to speak with a client that asked for ``requested``: it, or our latest."""
    return requested if requested in SUPPORTED_VERSIONS else LATEST_VERSION


async def _initialize(ctx: RequestContext, params: Message) -> Message:
    if ctx.handshake is None:
        raise InvalidRequest("initialize is not part of this protocol era")
    if ctx.handshake.initialized:
        raise InvalidRequest("this session is initialized already")
    requested = params.get("protocolVersion")
    if not isinstance(requested, str):
        raise InvalidParams("params.protocolVersion must be a string")
    version = negotiate(requested)
    capabilities = params.get("capabilities")
    client_info = params.get("clientInfo")
    await ctx.handshake.negotiated(
        version,
        client_info if isinstance(client_info, dict) else {},
        capabilities if isinstance(capabilities, dict) else {},
    )
    result: Message = {
        "protocolVersion": version,
        "capabilities": ctx.server.capabilities(),
        "serverInfo": ctx.server.info,
    }
    if ctx.server.instructions:
        result["instructions"] = ctx.server.instructions
    return result


async def _ping(ctx: RequestContext, params: Message) -> Message:
    return {}


async def _call_tool(ctx: RequestContext, params: Message) -> Message:
    entry = ctx.view.tool(_string(params, "name"))
    forwarded = {**params, "name": entry.original}
    try:
        result = await _forward(ctx, entry, "tools/call", forwarded)
    except UpstreamRpcError as exc:
        if ctx.era != "session" or "task" in forwarded or not upstream_tasks.requires_task(exc):
            raise  # (a 2026-07-28 client is told: it can declare the extension)
        call = functools.partial(_forward, ctx, entry, "tools/call")
        return await upstream_tasks.run_as_task(ctx, entry.upstream, forwarded, call)
    task = result.get("task")
    if isinstance(task, dict) and isinstance(task.get("taskId"), str):
        # A task-augmented call: the client polls the task through the hub under a public id.
        result = {**result, "task": ctx.tasks.publish(entry.upstream, task)}
    elif upstream_tasks.is_flat_task(result):
        # A 2026-07-28 upstream's task (the extension): flat for a client of that era, a task object for the other.
        public = ctx.tasks.extension_task(entry.upstream, result["taskId"])
        result = {**result, "taskId": public} if ctx.era == "stateless" else {"task": legacy_task(result, public)}
    return result


async def _task_request(ctx: RequestContext, method: str, params: Message) -> Message:
    public = _string(params, "taskId")
    if ctx.tasks.is_extension_task(public):
        return await upstream_tasks.serve_legacy(ctx, method, public, params)
    upstream, original = ctx.tasks.find(public)
    result = await ctx.upstreams.request(
        upstream, method, {**params, "taskId": original}, hooks=ctx.hooks(upstream, params)
    )
    return (
        ctx.tasks.publish_related(upstream, result) if method == "tasks/result" else ctx.tasks.publish(upstream, result)
    )


async def _get_task(ctx: RequestContext, params: Message) -> Message:
    return await _task_request(ctx, "tasks/get", params)


async def _cancel_task(ctx: RequestContext, params: Message) -> Message:
    return await _task_request(ctx, "tasks/cancel", params)


async def _task_result(ctx: RequestContext, params: Message) -> Message:
    return await _task_request(ctx, "tasks/result", params)


async def _list_tasks(ctx: RequestContext, params: Message) -> Message:
    tasks: list[Message] = []
    for upstream in ctx.tasks.upstreams():
        if ctx.tasks.extension_tasks(upstream):  # (a 2026-07-28 upstream lists none: the hub reads its own)
            tasks += await upstream_tasks.list_legacy(ctx, upstream)
            continue
        listed = await ctx.upstreams.request(upstream, "tasks/list", {})
        tasks += [ctx.tasks.publish(upstream, task) for task in listed.get("tasks", []) if isinstance(task, dict)]
    return {"tasks": tasks}


async def _get_prompt(ctx: RequestContext, params: Message) -> Message:
    entry = ctx.view.prompt(_string(params, "name"))
    return await _forward(ctx, entry, "prompts/get", {**params, "name": entry.original})


async def _read_resource(ctx: RequestContext, params: Message) -> Message:
    entry = ctx.view.resource(_string(params, "uri"))
    result = await _forward(ctx, entry, "resources/read", {**params, "uri": entry.original})
    contents = result.get("contents")
    if isinstance(contents, list):
        # Contents name the URI the client can read again through the hub.
        result["contents"] = [
            {**item, "uri": ctx.view.public_uri_of(entry.upstream, item["uri"])}
            if isinstance(item, dict) and isinstance(item.get("uri"), str)
            else item
            for item in contents
        ]
    return result


async def _subscribe(ctx: RequestContext, params: Message) -> Message:
    uri = _string(params, "uri")
    entry = ctx.view.resource(uri)
    held = uri in ctx.subscriptions
    ctx.subscriptions.add(uri)  # from now: a shared upstream session is not unsubscribed under it meanwhile
    try:
        await _forward(ctx, entry, "resources/subscribe", {**params, "uri": entry.original})
    except BaseException:
        if not held:
            ctx.subscriptions.discard(uri)
        raise
    return {}


async def _unsubscribe(ctx: RequestContext, params: Message) -> Message:
    uri = _string(params, "uri")
    entry = ctx.view.resource(uri)
    ctx.subscriptions.discard(uri)
    # A shared upstream session serves the tenant: kept subscribed while any session or listener of it is.
    if not (ctx.upstreams.is_shared(entry.upstream) and ctx.still_held(uri, ctx.caller.tenant)):
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
        entry = ctx.view.prompt(_string(ref, "name"))
        ref = {**ref, "name": entry.original}
    elif ref.get("type") == "ref/resource":
        entry = ctx.view.resource(_string(ref, "uri"))
        ref = {**ref, "uri": entry.original}
    else:
        raise InvalidParams("params.ref.type must be ref/prompt or ref/resource")
    return await _forward(ctx, entry, "completion/complete", {**params, "ref": ref})


HANDLERS: Final[dict[str, Handler]] = {
    "initialize": _initialize,
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
