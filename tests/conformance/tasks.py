"""The fixture's tasks: the 2026-07-28 ``io.modelcontextprotocol/tasks`` extension (SEP-2663).

The server decides which calls become tasks: a task-supporting tool called by a
request that declares the extension answers a flat ``CreateTaskResult``
(``resultType: "task"``) at once and goes on in the background. The client
polls ``tasks/get``, which inlines the outcome once the task ends (a tool's own
error as ``completed`` with ``isError``, a protocol error as ``failed``); a task
that needs input shows its questions as ``inputRequests`` until ``tasks/update``
answers them (a part of them at a time, if the client likes); ``tasks/cancel``
answers an empty acknowledgement, also for a task that had ended. A request
that does not declare the extension gets ``-32021`` from the tasks methods and
from a tool that requires a task, and a plain result from one that only
supports it.

The tools are the ones the suite's ``tasks-*`` scenarios name. ``tasks/result``
and ``tasks/list`` are not served (the extension removed them): they answer
``-32601`` like any unknown method.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import itertools
import json
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import mcp_types as types
from mcp.server.lowlevel import Server
from mcp.shared.exceptions import MCPError

__all__ = ["EXTENSION", "TOOLS", "call_tool", "serve_tasks"]

EXTENSION: Final = "io.modelcontextprotocol/tasks"
TTL_MS: Final = 120_000
POLL_MS: Final = 200
_TERMINAL: Final = frozenset({"completed", "failed", "cancelled"})
_MAX_TASKS: Final = 512
_KEY: Final = secrets.token_bytes(32)
_PLAIN_SLEEP: Final = 2.0
"""The longest ``slow_compute`` sleeps as a plain call: the scenarios' calls of a minute expect a task,
and a client that did not declare the extension (a hub speaking the session era here) would wait it out."""

Questions = dict[str, dict[str, Any]]


def _tool(name: str, description: str, support: str | None, properties: dict[str, Any] | None = None) -> types.Tool:
    tool: dict[str, Any] = {
        "name": name,
        "description": description,
        "inputSchema": {"type": "object", "properties": properties or {}},
    }
    if support is not None:
        tool["execution"] = {"taskSupport": support}
    return types.Tool.model_validate(tool)


TOOLS: Final = [
    _tool("greet", "Greets by name (never a task)", None, {"name": {"type": "string"}}),
    _tool(
        "slow_compute",
        "Sleeps for the given seconds, then answers (a task when the client allows)",
        "optional",
        {"seconds": {"type": "number"}, "label": {"type": "string"}},
    ),
    _tool("failing_job", "A task that ends with a tool error", "required"),
    _tool("protocol_error_job", "A task that ends with a protocol error", "optional"),
    _tool("confirm_delete", "A task that asks for a confirmation", "required", {"filename": {"type": "string"}}),
    _tool("multi_input", "A task that asks two questions at once", "required"),
    _tool("test_tool_with_task", "Asks for a name first, then runs as a task", "required"),
]
_NAMES: Final = frozenset(tool.name for tool in TOOLS)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _text(text: str, is_error: bool = False) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "isError": is_error}


def _elicit(message: str, fields: dict[str, str]) -> dict[str, Any]:
    properties = {name: {"type": kind} for name, kind in fields.items()}
    schema = {"type": "object", "properties": properties, "required": list(fields)}
    return {"method": "elicitation/create", "params": {"message": message, "requestedSchema": schema}}


@dataclass
class _Task:
    id: str
    created: str = field(default_factory=_now)
    updated: str = ""
    status: str = "working"
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    questions: dict[str, tuple[dict[str, Any], asyncio.Future[dict[str, Any]]]] = field(default_factory=dict)
    runner: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.updated = self.created

    def moved(self, status: str) -> None:
        if self.status not in _TERMINAL:
            self.status, self.updated = status, _now()

    async def ask(self, questions: Questions) -> dict[str, dict[str, Any]]:
        """Each question open until ``tasks/update`` answers it; the task is ``input_required`` meanwhile."""
        loop = asyncio.get_running_loop()
        futures = {key: loop.create_future() for key in questions}
        self.questions.update({key: (questions[key], future) for key, future in futures.items()})
        self.moved("input_required")
        try:
            answers = await asyncio.gather(*futures.values())
        finally:
            for key in futures:
                self.questions.pop(key, None)
        self.moved("working")
        return dict(zip(futures, answers, strict=True))

    def detailed(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "taskId": self.id,
            "status": self.status,
            "createdAt": self.created,
            "lastUpdatedAt": self.updated,
            "ttlMs": TTL_MS,
            "pollIntervalMs": POLL_MS,
        }
        if self.status == "input_required" and self.questions:
            out["inputRequests"] = {key: asked for key, (asked, future) in self.questions.items() if not future.done()}
        if self.status == "completed" and self.result is not None:
            out["result"] = self.result
        if self.status == "failed" and self.error is not None:
            out["error"] = self.error
        return out


_TASKS: dict[str, _Task] = {}
_IDS = itertools.count(1)


def _declared(ctx: Any) -> bool:
    """Whether this request declares the extension (in its envelope, or per request in ``_meta``)."""
    capabilities = ctx.session.client_capabilities
    extensions = getattr(capabilities, "extensions", None) if capabilities is not None else None
    if isinstance(extensions, Mapping) and EXTENSION in extensions:
        return True
    params = ctx.params if isinstance(ctx.params, Mapping) else {}
    meta = params.get("_meta")
    declared = meta.get("io.modelcontextprotocol/clientCapabilities") if isinstance(meta, Mapping) else None
    extensions = declared.get("extensions") if isinstance(declared, Mapping) else None
    return isinstance(extensions, Mapping) and EXTENSION in extensions


def _missing(what: str) -> MCPError:
    data: dict[str, Any] = {"requiredCapabilities": {"extensions": {EXTENSION: {}}}}
    return MCPError(code=-32021, message=f"{what} needs the {EXTENSION} extension", data=data)


Work = Callable[[_Task | None], Awaitable[dict[str, Any]]]


def _work(name: str, args: Mapping[str, Any], asked_name: str | None) -> Work:
    async def slow_compute(task: _Task | None) -> dict[str, Any]:
        seconds = args.get("seconds", 1)
        wanted = float(seconds) if isinstance(seconds, int | float) else 1.0
        await asyncio.sleep(wanted if task is not None else min(wanted, _PLAIN_SLEEP))
        return _text(f"computed {args.get('label', '')} after {seconds}s")

    async def failing_job(task: _Task | None) -> dict[str, Any]:
        await asyncio.sleep(1.0)
        return _text("the job failed", is_error=True)

    async def protocol_error_job(task: _Task | None) -> dict[str, Any]:
        await asyncio.sleep(0.2)
        raise MCPError(code=types.INTERNAL_ERROR, message="the job broke down")

    async def confirm_delete(task: _Task | None) -> dict[str, Any]:
        assert task is not None
        answers = await task.ask({"confirm": _elicit(f"Delete {args.get('filename')}?", {"confirm": "boolean"})})
        content = answers["confirm"].get("content") or {}
        return _text(f"deleted {args.get('filename')}" if content.get("confirm") else "kept the file")

    async def multi_input(task: _Task | None) -> dict[str, Any]:
        assert task is not None
        answers = await task.ask(
            {
                "first": _elicit("What is the first name?", {"name": "string"}),
                "second": _elicit("Do you confirm?", {"confirm": "boolean"}),
            }
        )
        return _text(f"answered {sorted(answers)}")

    async def with_task(task: _Task | None) -> dict[str, Any]:
        return _text(f"Hello, {asked_name}! The task is done.")

    works: dict[str, Work] = {
        "slow_compute": slow_compute,
        "failing_job": failing_job,
        "protocol_error_job": protocol_error_job,
        "confirm_delete": confirm_delete,
        "multi_input": multi_input,
        "test_tool_with_task": with_task,
    }
    return works[name]


async def _run(task: _Task, work: Work) -> None:
    try:
        result = await work(task)
    except asyncio.CancelledError:
        task.moved("cancelled")
        raise
    except MCPError as exc:
        task.error = {"code": exc.error.code, "message": exc.error.message}
        task.moved("failed")
    except Exception as exc:  # a task's crash is its failure, not the fixture's
        task.error = {"code": types.INTERNAL_ERROR, "message": str(exc)}
        task.moved("failed")
    else:
        task.result = result
        task.moved("completed")


def _created(work: Work) -> dict[str, Any]:
    while len(_TASKS) >= _MAX_TASKS:
        oldest = _TASKS.pop(next(iter(_TASKS)))
        if oldest.runner is not None:
            oldest.runner.cancel()
    task = _Task(f"task-{next(_IDS)}-{secrets.token_hex(4)}")
    _TASKS[task.id] = task
    task.runner = asyncio.get_running_loop().create_task(_run(task, work))
    detailed = task.detailed()
    return {
        **{k: v for k, v in detailed.items() if k not in ("result", "error", "inputRequests")},
        "resultType": "task",
    }


def _seal(name: str) -> str:
    body = base64.urlsafe_b64encode(json.dumps({"tool": "test_tool_with_task", "asked": name}).encode()).decode()
    return f"{body}.{hmac.new(_KEY, body.encode(), hashlib.sha256).hexdigest()}"


def _asked_name(params: Mapping[str, Any]) -> str | None:
    """The name ``test_tool_with_task`` asked for in its first round, once the retry brings it."""
    answers = params.get("inputResponses")
    answer = answers.get("user_name") if isinstance(answers, Mapping) else None
    content = answer.get("content") if isinstance(answer, Mapping) else None
    name = content.get("name") if isinstance(content, Mapping) else None
    return name if isinstance(name, str) else None


async def call_tool(ctx: Any, name: str, params: Mapping[str, Any]) -> types.CallToolResult | dict[str, Any] | None:
    """The result of one of these tools (a task, or a plain result), or None when ``name`` is none of them."""
    if name not in _NAMES:
        return None
    args = params.get("arguments") or {}
    if name == "greet":
        return types.CallToolResult.model_validate(_text(f"Hello, {args.get('name')}!"))
    support = next(tool.execution.task_support for tool in TOOLS if tool.name == name and tool.execution)
    declared = _declared(ctx)
    if not declared and support == "required":
        raise _missing(f"the tool {name}")
    asked_name = None
    if name == "test_tool_with_task":
        asked_name = _asked_name(params)
        if asked_name is None:  # round 1: a question, answered by the retry (SEP-2322), before any task
            question = {"user_name": _elicit("What is your name?", {"name": "string"})}
            return {"resultType": "input_required", "inputRequests": question, "requestState": _seal("user_name")}
    work = _work(name, args, asked_name)
    if not declared:
        # Only task-supporting, and the client cannot poll: a plain call.
        return types.CallToolResult.model_validate(await work(None))
    return _created(work)


def _task_of(ctx: Any, params: Any, what: str) -> _Task:
    if not _declared(ctx):
        raise _missing(what)
    task_id = getattr(params, "task_id", None) or (params.get("taskId") if isinstance(params, Mapping) else None)
    task = _TASKS.get(task_id) if isinstance(task_id, str) else None
    if task is None:
        raise MCPError(code=types.INVALID_PARAMS, message=f"unknown task: {task_id}")
    return task


async def _get(ctx: Any, params: Any) -> dict[str, Any]:
    task = _task_of(ctx, ctx.params, "tasks/get")
    headers = getattr(ctx.request, "headers", None)
    named = headers.get("mcp-name") if headers is not None else None
    if named is not None and named.strip() != task.id:  # (SEP-2243: the header repeats the task's id)
        raise MCPError(code=-32020, message="the Mcp-Name header does not match params.taskId")
    return task.detailed()


async def _update(ctx: Any, params: Any) -> dict[str, Any]:
    task = _task_of(ctx, ctx.params, "tasks/update")
    responses = (ctx.params or {}).get("inputResponses")
    if not isinstance(responses, Mapping):
        raise MCPError(code=types.INVALID_PARAMS, message="params.inputResponses must be an object")
    for key, response in responses.items():
        asked = task.questions.get(key)
        if asked is not None and not asked[1].done() and isinstance(response, dict):
            asked[1].set_result(response)  # keys it did not ask are ignored
    return {}


async def _cancel(ctx: Any, params: Any) -> dict[str, Any]:
    task = _task_of(ctx, ctx.params, "tasks/cancel")
    if task.status not in _TERMINAL and task.runner is not None:
        task.runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task.runner
    return {}


def serve_tasks(server: Server[Any]) -> None:
    """Serve the extension's methods on ``server`` and advertise it."""
    server.extensions = {**(server.extensions or {}), EXTENSION: {}}
    for method, handler in (("tasks/get", _get), ("tasks/update", _update), ("tasks/cancel", _cancel)):
        server.add_request_handler(method, types.RequestParams, handler)
