"""Tasks of 2026-07-28 upstreams (the tasks extension, SEP-2663) for callers that cannot take them as they are.

Such an upstream decides itself whether a call becomes a task (the hub lets it,
by declaring the extension for that one request, when the hub's client wants a
task or the tool requires one), and answers a flat ``CreateTaskResult``
(``resultType: "task"``). The task is read with ``tasks/get``, which inlines
the outcome once the task has ended; its questions, shown as ``inputRequests``
while it is ``input_required``, are answered with ``tasks/update``; there is no
``tasks/result`` and no ``tasks/list``.

A 2026-07-28 client that declared the extension gets the task as it is
(:class:`hub.modern_tasks.TaskBridges` passes it through). For everyone else:

- :func:`run_to_end` reads a task until it ends and asks its questions through
  the call's hooks, which relay them to the client in the client's own era. It
  serves a client that did not ask for a task but called a tool that runs only
  as one (:func:`run_as_task`: such an upstream refuses the plain call with
  ``-32021``, and the hub calls again as a task), so that client sees one call;
  and a session-era client's ``tasks/result``.
- A session-era client (2025-11-25 tasks) sees the task as a task object of its
  era (:func:`legacy_task`), polls it with ``tasks/get``, fetches the outcome
  with ``tasks/result``, cancels it with ``tasks/cancel``, and lists the ones
  it started with ``tasks/list`` (:func:`serve_legacy`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Final

from connectors.calls import CallHooks
from connectors.eras import MAX_ROUNDS, ask_all
from connectors.errors import ManifoldError, UpstreamProtocolError, UpstreamRpcError, UpstreamTimeout
from connectors.jsonrpc import Message
from connectors.spec import TASKS_EXTENSION
from hub.context import RequestContext, UpstreamAccess
from hub.errors import InvalidParams
from hub.tasks import RELATED_TASK

__all__ = [
    "ASKED_TTL_MS",
    "TERMINAL",
    "is_flat_task",
    "legacy_task",
    "list_legacy",
    "offers_tasks",
    "positive_int",
    "requires_task",
    "run_as_task",
    "run_to_end",
    "serve_legacy",
    "task_fields",
    "without_related",
]

TERMINAL: Final = frozenset({"completed", "failed", "cancelled"})
ASKED_TTL_MS: Final = 300_000
"""The time to live the hub asks of an upstream for the tasks it starts for its clients."""
LIMIT: Final = 300.0
"""How long the hub waits at most for a task to end on a caller's behalf (seconds)."""
_POLL: Final = (0.05, 0.5, 5.0)
"""The least, the usual (when the upstream names none) and the longest pause between two reads (seconds)."""
_CANCEL_DEADLINE: Final = 2.0
_LISTED: Final = 64
"""At most this many of a session's tasks on a 2026-07-28 upstream are read for ``tasks/list`` (the newest)."""


def offers_tasks(capabilities: Message) -> bool:
    """Whether an upstream's capabilities offer tasks, in either era's way."""
    extensions = capabilities.get("extensions")
    return "tasks" in capabilities or (isinstance(extensions, dict) and TASKS_EXTENSION in extensions)


def is_flat_task(result: Message) -> bool:
    """Whether a result is a 2026-07-28 ``CreateTaskResult`` (a task, not the call's result)."""
    return result.get("resultType") == "task" and isinstance(result.get("taskId"), str)


def without_related(result: Message) -> Message:
    """A task's result without the ``related-task`` key in its ``_meta`` (the task's id is beside it)."""
    meta = result.get("_meta")
    if not isinstance(meta, dict) or RELATED_TASK not in meta:
        return result
    rest = {key: value for key, value in meta.items() if key != RELATED_TASK}
    return {**{key: value for key, value in result.items() if key != "_meta"}, **({"_meta": rest} if rest else {})}


def positive_int(value: object) -> int | None:
    """``value`` when it is a positive integer (a duration in milliseconds), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def requires_task(exc: ManifoldError) -> bool:
    """Whether an upstream refused a call for want of the tasks extension (a tool that runs only as a task)."""
    if not isinstance(exc, UpstreamRpcError) or exc.code != -32021 or not isinstance(exc.data, dict):
        return False
    required = exc.data.get("requiredCapabilities")
    extensions = required.get("extensions") if isinstance(required, dict) else None
    return isinstance(extensions, dict) and TASKS_EXTENSION in extensions


async def run_as_task(
    ctx: RequestContext, upstream: str, params: Message, call: Callable[[Message], Awaitable[Message]]
) -> Message:
    """A ``tools/call`` that ``upstream`` runs only as a task, for a client that did not ask for one:
    called again as a task, and that task read to its end (the client sees one call)."""
    result = await call({**params, "task": {"ttl": ASKED_TTL_MS}})
    if not is_flat_task(result):
        return result
    hooks = ctx.hooks(upstream, params)
    return await run_to_end(ctx.upstreams, upstream, result["taskId"], hooks, cancel_on_exit=True)


def task_fields(task: Message, public: str, ttl: tuple[str, str], poll: tuple[str, str]) -> Message:
    """A task's fields under its public id as the other era names them: its durations renamed, each
    ``(from, to)``; the time to live always there (null for none), the poll interval when it is given."""
    out: Message = {"taskId": public, "status": task.get("status", "working")}
    for key in ("statusMessage", "createdAt", "lastUpdatedAt"):
        if isinstance(task.get(key), str):
            out[key] = task[key]
    out[ttl[1]] = positive_int(task.get(ttl[0]))
    interval = positive_int(task.get(poll[0]))
    if interval is not None:
        out[poll[1]] = interval
    return out


def legacy_task(task: Message, public: str) -> Message:
    """A 2026-07-28 task (or detailed task) as a 2025-11-25 task object, under its public id."""
    return task_fields(task, public, ("ttlMs", "ttl"), ("pollIntervalMs", "pollInterval"))


async def run_to_end(
    upstreams: UpstreamAccess,
    upstream: str,
    original: str,
    hooks: CallHooks | None,
    *,
    cancel_on_exit: bool,
    limit: float = LIMIT,
) -> Message:
    """The result a task of ``upstream`` ends with, its questions asked through ``hooks`` meanwhile.

    With ``cancel_on_exit``, a caller that goes away (or waits too long) takes the task with it.

    Raises:
        UpstreamRpcError: the task failed (with its error), or was cancelled.
        UpstreamTimeout: it did not end within ``limit`` seconds.
        UpstreamProtocolError: what the upstream said of it is not a task.
        ManifoldError: reading it, or asking the client, failed.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    ended = False
    rounds = 0
    answered_at: object = None  # the task's lastUpdatedAt when its questions were last answered
    try:
        while True:
            if loop.time() >= deadline:
                raise UpstreamTimeout(upstream, f"task {original} did not end within {limit:g}s")
            task = await upstreams.request(upstream, "tasks/get", {"taskId": original})
            status = task.get("status")
            if status in TERMINAL:
                ended = True
                return _outcome(upstream, original, task)
            asked = task.get("inputRequests")
            # (Questions read before the task moved on from the answers are the answered ones: not asked again.)
            if status == "input_required" and asked and task.get("lastUpdatedAt") != answered_at:
                rounds += 1
                if rounds > MAX_ROUNDS:
                    raise UpstreamProtocolError(
                        upstream, f"task {original} asked for input more than {MAX_ROUNDS} times"
                    )
                answers = await ask_all(upstream, asked, hooks)
                await upstreams.request(upstream, "tasks/update", {"taskId": original, "inputResponses": answers})
                answered_at = task.get("lastUpdatedAt")
            pause = positive_int(task.get("pollIntervalMs"))
            low, usual, high = _POLL
            await asyncio.sleep(
                min(max(0.0, deadline - loop.time()), max(low, min(high, pause / 1000 if pause else usual)))
            )
    finally:
        if cancel_on_exit and not ended:
            await _cancel(upstreams, upstream, original)


def _outcome(upstream: str, original: str, task: Message) -> Message:
    status = task["status"]
    if status == "completed":
        result = task.get("result")
        if not isinstance(result, dict):
            raise UpstreamProtocolError(upstream, f"task {original} completed without a result")
        return without_related(result)
    if status == "failed":
        error = task.get("error")
        if not isinstance(error, dict) or not isinstance(error.get("code"), int):
            error = {"code": -32603, "message": f"task {original} failed"}
        raise UpstreamRpcError(upstream, error)
    raise UpstreamRpcError(upstream, {"code": -32603, "message": f"task {original} was cancelled"})


async def _cancel(upstreams: UpstreamAccess, upstream: str, original: str) -> None:
    # Runs while the caller may be being cancelled: bounded, and never raises.
    with contextlib.suppress(Exception):
        async with asyncio.timeout(_CANCEL_DEADLINE):
            await upstreams.request(upstream, "tasks/cancel", {"taskId": original})


async def serve_legacy(ctx: RequestContext, method: str, public: str, params: Message) -> Message:
    """``tasks/get``, ``tasks/result`` or ``tasks/cancel`` of a session-era client, for a task of a
    2026-07-28 upstream."""
    upstream, original = ctx.tasks.find(public)
    if method == "tasks/result":
        hooks = _about_task(ctx.hooks(upstream, params), original)
        async with ctx.tasks.reading(public):  # (one reader at a time: a second would ask the same questions)
            result = await run_to_end(ctx.upstreams, upstream, original, hooks, cancel_on_exit=False)
        meta = result.get("_meta")
        return {**result, "_meta": {**(meta if isinstance(meta, dict) else {}), RELATED_TASK: {"taskId": public}}}
    task = await ctx.upstreams.request(upstream, "tasks/get", {"taskId": original})
    if method == "tasks/cancel":
        if task.get("status") in TERMINAL:  # (that era refuses to cancel an ended task)
            raise InvalidParams(f"task {public} has already ended ({task.get('status')})")
        await ctx.upstreams.request(upstream, "tasks/cancel", {"taskId": original})
        # The extension's cancellation may take effect later; that era's answer is the cancelled task.
        task = {**await ctx.upstreams.request(upstream, "tasks/get", {"taskId": original}), "status": "cancelled"}
    return legacy_task(task, public)


def _about_task(hooks: CallHooks, original: str) -> CallHooks:
    """``hooks`` whose questions say which task they are asked for, as that era requires of every
    request related to a task: ``_meta`` ``related-task``, as the upstream would have named it had it
    spoken that era (the session's relay names it to the client by its public id)."""
    ask = hooks.request
    if ask is None:
        return hooks

    async def request(message: Message) -> Message:
        params = message.get("params")
        params = params if isinstance(params, dict) else {}
        meta = params.get("_meta")
        related = {**(meta if isinstance(meta, dict) else {}), RELATED_TASK: {"taskId": original}}
        return await ask({**message, "params": {**params, "_meta": related}})

    return dataclasses.replace(hooks, request=request)


async def list_legacy(ctx: RequestContext, upstream: str) -> list[Message]:
    """The tasks this client started on a 2026-07-28 upstream (which cannot list them), as task objects;
    the ones the upstream no longer knows are left out."""
    known = ctx.tasks.extension_tasks(upstream)[-_LISTED:]

    async def read(public: str, original: str) -> Message | None:
        try:
            return legacy_task(await ctx.upstreams.request(upstream, "tasks/get", {"taskId": original}), public)
        except ManifoldError:  # (gone there, or the upstream is down or removed: not listed)
            return None

    async with asyncio.TaskGroup() as group:
        reads = [group.create_task(read(public, original)) for public, original in known]
    return [task for task in (done.result() for done in reads) if task is not None]
