"""Tasks for 2026-07-28 clients (the ``io.modelcontextprotocol/tasks`` extension), from upstreams of both eras.

A client that declares the extension may get a task instead of a result from
``tools/call``: the server decides, and it polls ``tasks/get`` until the task
ends, when the result (or the error) comes inlined. Session-era upstreams speak
the 2025-11-25 tasks instead: the client asks for a task (``params.task``), polls
``tasks/get`` and fetches the outcome with a blocking ``tasks/result``, whose
stream also carries the questions of a task waiting for input. The hub bridges
one to the other:

- a tool the upstream lists as task-supporting runs as a task when the client
  declared the extension (the create result is made flat, with a public id); a
  tool that requires a task, called by a client that did not declare it, is
  refused with ``-32021``, as the extension says;
- ``tasks/get`` asks the upstream; once the task needs input or has ended, the
  hub fetches its outcome in the background: the questions on that stream are
  shown as ``inputRequests`` and answered by ``tasks/update``, and the outcome is
  inlined (a tool's own error as ``completed`` with ``isError``, a protocol
  error as ``failed`` with its error);
- ``tasks/cancel`` cancels upstream and answers an empty acknowledgement, also
  for a task that had already ended.

A 2026-07-28 upstream speaks the extension itself, and decides per call (the hub
declares the extension for a call of a client that did): its task is passed
through under a public id, and ``tasks/get``, ``tasks/update`` and
``tasks/cancel`` go to it as they came, with its own id.

Tasks belong to the caller's upstream sessions (a session-era task lives in the
upstream session that started it); :class:`TaskBridges` keeps each one's state,
bounded in number, and owns the fetches it starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import OrderedDict
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Final

from connectors.engine import CallHooks
from connectors.eras import TASK_METHODS
from connectors.errors import ManifoldError
from connectors.jsonrpc import Message
from connectors.spec import TASKS_EXTENSION
from connectors.upstream_sessions import UpstreamSessions
from hub.errors import InvalidParams, MissingCapability
from hub.relay import held_question
from hub.tasks import TaskTable
from hub.upstream_tasks import ASKED_TTL_MS, TERMINAL, is_flat_task, positive_int, task_fields, without_related

__all__ = [
    "METHODS",
    "TASKS_EXTENSION",
    "TTL_MS",
    "TaskBridges",
    "declares_tasks",
    "discovered",
    "serve",
    "settle_call",
    "task_request",
]

METHODS: Final = TASK_METHODS
TTL_MS: Final = ASKED_TTL_MS

_SETTLE: Final = 2.0
"""How long ``tasks/get`` waits for what a fetch brings (a question, or the outcome of an ended task)."""
_MAX_QUESTIONS: Final = 8
_KEEP_MAX_MS: Final = 3_600_000
"""The longest the caller's upstream sessions are kept for a task (an upstream names its task's time to live)."""


def declares_tasks(capabilities: Message) -> bool:
    extensions = capabilities.get("extensions")
    return isinstance(extensions, dict) and isinstance(extensions.get(TASKS_EXTENSION), dict)


def task_request(support: str, capabilities: Message) -> Message | None:
    """The ``task`` parameter to send upstream with a ``tools/call``, or None to call it plainly.

    Raises: MissingCapability: the tool runs only as a task, and the client did not declare the extension.
    """
    if support not in ("optional", "required"):
        return None
    if declares_tasks(capabilities):
        return {"ttl": TTL_MS}
    if support == "required":
        raise MissingCapability(
            f"this tool runs only as a task: it needs the {TASKS_EXTENSION} extension in the request's client "
            "capabilities",
            data={"requiredCapabilities": {"extensions": {TASKS_EXTENSION: {}}}},
        )
    return None


def flat_task(task: Message, public: str) -> Message:
    """A 2025-11-25 task object as the fields of a 2026-07-28 task, under its public id."""
    return task_fields(task, public, ("ttl", "ttlMs"), ("pollInterval", "pollIntervalMs"))


class _Bridge:
    """One task: where it runs, the fetch of its outcome, and the questions that fetch brought."""

    def __init__(self, upstream: str, original: str, capabilities: Message) -> None:
        self.upstream = upstream
        self.original = original
        self.capabilities = capabilities
        self.fetch: asyncio.Task[Message] | None = None
        self.questions: dict[str, tuple[Message, asyncio.Future[Message]]] = {}
        self.changed = asyncio.Event()
        self._keys = itertools.count(1)

    async def ask(self, message: Message) -> Message:
        """A question on the fetch's stream: kept until ``tasks/update`` answers it (or the task goes)."""
        method, params = held_question(message, self.capabilities, len(self.questions), _MAX_QUESTIONS, "task")
        key = f"q{next(self._keys)}"
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self.questions[key] = ({"method": method, "params": params}, future)
        self.changed.set()
        try:
            async with asyncio.timeout(TTL_MS / 1000):
                return await future
        finally:
            self.questions.pop(key, None)

    def outcome(self) -> Message | None:
        """The ended fetch as the fields of a detailed task, or None while it runs."""
        if self.fetch is None or not self.fetch.done() or self.fetch.cancelled():
            return None
        exc = self.fetch.exception()
        if exc is None:
            return {"status": "completed", "result": without_related(self.fetch.result())}
        error = exc.to_error() if isinstance(exc, ManifoldError) else {"code": -32603, "message": "internal error"}
        return {"status": "failed", "error": error}


@dataclass(frozen=True)
class _Passed:
    """A task of a 2026-07-28 upstream: it speaks the extension, so its requests go to it as they came."""

    upstream: str
    original: str


class TaskBridges:
    """The tasks of one caller's upstream sessions, as 2026-07-28 tasks; bounded, owns its fetches."""

    def __init__(self, table: TaskTable, upstreams: UpstreamSessions, capacity: int = 256) -> None:
        self.table = table
        self.upstreams = upstreams
        self.capacity = capacity
        self.keep_until = 0.0
        """Until when (monotonic) a task of these sessions may still be asked for."""
        self._bridges: OrderedDict[str, _Bridge | _Passed] = OrderedDict()

    def _remember(self, public: str, entry: _Bridge | _Passed, ttl: object) -> None:
        self._bridges[public] = entry
        while len(self._bridges) > self.capacity:
            _, oldest = self._bridges.popitem(last=False)
            self._drop(oldest)
        named = positive_int(ttl)
        kept = min(named, _KEEP_MAX_MS) if named is not None else TTL_MS
        self.keep_until = max(self.keep_until, time.monotonic() + kept / 1000)

    def created(self, task: Message, capabilities: Message) -> Message:
        """The flat create result of a task a call started (``task`` carries the public id already)."""
        public = task["taskId"]
        upstream, original = self.table.find(public)
        flat = flat_task(task, public)
        self._remember(public, _Bridge(upstream, original, capabilities), flat["ttlMs"])
        return {**flat, "resultType": "task"}

    def passed(self, result: Message) -> Message:
        """A 2026-07-28 upstream's create result (under its public id already), kept to be passed through."""
        public = result["taskId"]
        upstream, original = self.table.find(public)
        self._remember(public, _Passed(upstream, original), result.get("ttlMs"))
        return result

    def knows(self, public: str) -> bool:
        return public in self._bridges

    def _find(self, public: str) -> _Bridge | _Passed:
        bridge = self._bridges.get(public)
        if bridge is None:
            raise InvalidParams(f"unknown task: {public}")
        return bridge

    async def _pass(self, entry: _Passed, method: str, params: Message) -> Message:
        return await self.upstreams.request(entry.upstream, method, {**params, "taskId": entry.original})

    async def get(self, public: str) -> Message:
        bridge = self._find(public)
        if isinstance(bridge, _Passed):
            task = {**await self._pass(bridge, "tasks/get", {}), "taskId": public}
            result = task.get("result")
            return {**task, "result": without_related(result)} if isinstance(result, dict) else task
        task = await self.upstreams.request(bridge.upstream, "tasks/get", {"taskId": bridge.original})
        out = flat_task(task, public)
        status = out["status"]
        if status == "cancelled":
            self._drop(bridge)
            return out
        if status in ("input_required", "completed", "failed"):
            await self._settle(bridge)
        ended = bridge.outcome()
        if bridge.questions and ended is None:
            requests = {key: asked for key, (asked, _) in bridge.questions.items()}
            return {**out, "status": "input_required", "inputRequests": requests}
        if ended is not None:
            return {**out, **ended}
        return {**out, "status": "working"} if status in TERMINAL or status == "input_required" else out

    async def _settle(self, bridge: _Bridge) -> None:
        """Start the fetch of a task's outcome if it is not running, and wait briefly for what it brings."""
        if bridge.fetch is None:
            hooks = CallHooks(request=bridge.ask)
            fetching = self.upstreams.request(bridge.upstream, "tasks/result", {"taskId": bridge.original}, hooks=hooks)
            bridge.fetch = asyncio.get_running_loop().create_task(_noted(fetching, bridge.changed))
        if bridge.questions or bridge.fetch.done():
            return
        bridge.changed.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_SETTLE):
                await bridge.changed.wait()

    async def update(self, public: str, responses: object) -> Message:
        """Answer the open questions of a task (``tasks/update``); keys it did not ask are ignored."""
        bridge = self._find(public)
        if not isinstance(responses, dict):
            raise InvalidParams("params.inputResponses must be an object")
        if isinstance(bridge, _Passed):
            await self._pass(bridge, "tasks/update", {"inputResponses": responses})
            return {}
        for key, response in responses.items():
            asked = bridge.questions.get(key)
            if asked is None or asked[1].done():
                continue
            if not isinstance(response, dict):
                raise InvalidParams(f"params.inputResponses.{key} must be an object")
            asked[1].set_result(response)
        return {}

    async def cancel(self, public: str) -> Message:
        """Cancel a task upstream; a task that had already ended is acknowledged all the same."""
        bridge = self._find(public)
        if isinstance(bridge, _Passed):
            await self._pass(bridge, "tasks/cancel", {})
            return {}
        try:
            await self.upstreams.request(bridge.upstream, "tasks/cancel", {"taskId": bridge.original})
        except ManifoldError:
            task = await self.upstreams.request(bridge.upstream, "tasks/get", {"taskId": bridge.original})
            if task.get("status") not in TERMINAL:
                raise
        return {}

    def _drop(self, bridge: _Bridge | _Passed) -> None:
        if isinstance(bridge, _Bridge) and bridge.fetch is not None and not bridge.fetch.done():
            bridge.fetch.cancel()

    async def aclose(self) -> None:
        fetches = [b.fetch for b in self._bridges.values() if isinstance(b, _Bridge) and b.fetch is not None]
        self._bridges.clear()
        for fetch in fetches:
            fetch.cancel()
        if fetches:
            await asyncio.wait(fetches, timeout=5.0)


async def _noted(work: Awaitable[Message], changed: asyncio.Event) -> Message:
    try:
        return await work
    finally:
        changed.set()


def gate(capabilities: Message, method: str) -> None:
    """Raises: MissingCapability: a tasks method from a request that did not declare the extension."""
    if not declares_tasks(capabilities):
        raise MissingCapability(
            f"{method} needs the {TASKS_EXTENSION} extension in the request's client capabilities",
            data={"requiredCapabilities": {"extensions": {TASKS_EXTENSION: {}}}},
        )


async def serve(bridges: TaskBridges, capabilities: Message, method: str, params: Message) -> Message:
    """``tasks/get``, ``tasks/update`` or ``tasks/cancel`` of a 2026-07-28 request."""
    gate(capabilities, method)
    public = params.get("taskId")
    if not isinstance(public, str) or not public:
        raise InvalidParams("params.taskId must be a non-empty string")
    if method == "tasks/get":
        return await bridges.get(public)
    if method == "tasks/update":
        return await bridges.update(public, params.get("inputResponses"))
    return await bridges.cancel(public)


def discovered(capabilities: Message) -> Message:
    """The hub's capabilities as ``server/discover`` shows them: tasks as the extension, not the 2025 slot."""
    if "tasks" not in capabilities:
        return capabilities
    out = {key: value for key, value in capabilities.items() if key != "tasks"}
    extensions = out.get("extensions")
    out["extensions"] = {**(extensions if isinstance(extensions, dict) else {}), TASKS_EXTENSION: {}}
    return out


def settle_call(bridges: TaskBridges, result: Message, capabilities: Message) -> Message:
    """A ``tools/call`` result for a 2026-07-28 client that declared the extension: a task it may poll
    (a session-era upstream's, bridged; a 2026-07-28 upstream's, passed through), or the result itself."""
    if is_flat_task(result):  # a 2026-07-28 upstream's own task, under its public id
        return bridges.passed(result)
    task = result.get("task")
    if not isinstance(task, dict) or not isinstance(task.get("taskId"), str):
        return result
    return bridges.created(task, capabilities)
