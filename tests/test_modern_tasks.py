"""Tasks for 2026-07-28 clients (the tasks extension) over a session-era upstream's 2025-11-25 tasks.

The upstream is the real server-everything, whose ``simulate-research-query`` requires a task and takes
about four seconds (longer when it asks for clarification). The clients speak the 2026-07-28 era on the
wire. Polling ``tasks/get`` is how the era reads a task's progress, so the tests poll, bounded in time.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest

from hub.errors import MissingCapability
from hub.modern_tasks import TASKS_EXTENSION, discovered, flat_task, task_request
from tests.modern_wire import CAPABILITIES, TaskCaller
from tests.npm_peers import everything
from tests.servers import run_config
from tests.wire import WAIT

pytestmark = pytest.mark.anyio

KEYS = {"ann": "key-ann-0123456789abcdef", "bob": "key-bob-0123456789abcdef"}
RESEARCH = "everything__simulate-research-query"


def hub_document(upstream: str) -> dict[str, Any]:
    keys = [{"name": n, "sha256": hashlib.sha256(k.encode()).hexdigest(), "tenant": "acme"} for n, k in KEYS.items()]
    return {"auth": {"apiKeys": keys}, "tenants": {"acme": {}}, "mcpServers": {"everything": {"url": upstream}}}


async def test_a_research_task_runs_polls_answers_a_question_and_is_cancelled(node_modules: Path) -> None:
    async with (
        everything(node_modules) as upstream,
        run_config(hub_document(upstream), env={}) as (url, _),
        httpx.AsyncClient(timeout=WAIT, trust_env=False) as http,
    ):
        ann, bob = TaskCaller(http, url, KEYS["ann"]), TaskCaller(http, url, KEYS["bob"])
        found = await ann.result("server/discover", {})
        assert found["capabilities"]["extensions"][TASKS_EXTENSION] == {}
        assert "tasks" not in found["capabilities"]  # the 2025-11-25 slot is not this era's

        plain, asking, doomed = await asyncio.gather(
            ann.result("tools/call", {"name": RESEARCH, "arguments": {"topic": "tides"}}),
            ann.result("tools/call", {"name": RESEARCH, "arguments": {"topic": "python", "ambiguous": True}}),
            ann.result("tools/call", {"name": RESEARCH, "arguments": {"topic": "doomed"}}),
        )
        for created in (plain, asking, doomed):
            assert created["resultType"] == "task" and created["taskId"].startswith("everything:")
            assert created["status"] == "working" and isinstance(created["ttlMs"], int)
            assert created["pollIntervalMs"] == 1000 and isinstance(created["createdAt"], str)
            assert not {"task", "ttl", "pollInterval", "requestState", "result"} & created.keys()

        # Another principal of the same tenant can neither see nor cancel ann's task.
        status, foreign = await bob.send("tasks/get", {"taskId": plain["taskId"]})
        assert (status, foreign["error"]["code"]) == (400, -32602)
        status, foreign = await bob.send("tasks/cancel", {"taskId": plain["taskId"]})
        assert (status, foreign["error"]["code"]) == (400, -32602)

        assert await ann.result("tasks/cancel", {"taskId": doomed["taskId"]}) == {
            "resultType": "complete",
            "_meta": found["_meta"],
        }
        assert (await ann.until(doomed["taskId"], "cancelled"))["status"] == "cancelled"
        again = await ann.result("tasks/cancel", {"taskId": doomed["taskId"]})
        assert again["resultType"] == "complete" and "status" not in again  # the same ack for an ended task

        question = await ann.until(asking["taskId"], "input_required", "completed")
        assert question["status"] == "input_required"
        [(key, asked)] = question["inputRequests"].items()
        assert asked["method"] == "elicitation/create" and "python" in asked["params"]["message"]
        answer = {key: {"action": "accept", "content": {"interpretation": "the snake"}}}
        updated = await ann.result("tasks/update", {"taskId": asking["taskId"], "inputResponses": answer})
        assert updated["resultType"] == "complete"
        answered = await ann.until(asking["taskId"], "completed", "failed")
        assert answered["status"] == "completed" and "the snake" in answered["result"]["content"][0]["text"]

        done = await ann.until(plain["taskId"], "completed", "failed")
        assert done["status"] == "completed" and "tides" in done["result"]["content"][0]["text"]
        assert "io.modelcontextprotocol/related-task" not in done["result"].get("_meta", {})
        assert "error" not in done

        status, unknown = await ann.send("tasks/get", {"taskId": "everything:nope"})
        assert (status, unknown["error"]["code"]) == (400, -32602)


async def test_without_the_extension_a_required_task_and_the_tasks_methods_are_refused(node_modules: Path) -> None:
    async with (
        everything(node_modules) as upstream,
        run_config(hub_document(upstream), env={}) as (url, _),
        httpx.AsyncClient(timeout=WAIT, trust_env=False) as http,
    ):
        ann = TaskCaller(http, url, KEYS["ann"])
        required: dict[str, Any] = {"requiredCapabilities": {"extensions": {TASKS_EXTENSION: {}}}}
        # The tool runs only as a task, which this client could not poll: refused, as the extension says.
        status, refused = await ann.send(
            "tools/call", {"name": RESEARCH, "arguments": {"topic": "reefs"}}, CAPABILITIES
        )
        assert (status, refused["error"]["code"], refused["error"]["data"]) == (400, -32021, required)
        for method, params in (
            ("tasks/get", {"taskId": "x"}),
            ("tasks/update", {"taskId": "x", "inputResponses": {}}),
            ("tasks/cancel", {"taskId": "x"}),
        ):
            status, refused = await ann.send(method, params, CAPABILITIES)
            assert (status, refused["error"]["code"]) == (400, -32021), method
            assert refused["error"]["data"] == required
        # An ordinary tool is unchanged, and the same call with the extension declared makes a task.
        echoed = await ann.result("tools/call", {"name": "everything__echo", "arguments": {"message": "hi"}})
        assert echoed["resultType"] == "complete" and "hi" in echoed["content"][0]["text"]
        created = await ann.result("tools/call", {"name": RESEARCH, "arguments": {"topic": "reefs"}})
        assert created["resultType"] == "task"
        await ann.result("tasks/cancel", {"taskId": created["taskId"]})


def test_a_2025_task_becomes_the_fields_of_a_2026_task() -> None:
    task = {
        "taskId": "t1",
        "status": "working",
        "statusMessage": "Gathering sources...",
        "createdAt": "2026-12-02T10:00:00Z",
        "lastUpdatedAt": "2026-12-02T10:00:01Z",
        "ttl": 300000,
        "pollInterval": 1000,
    }
    assert flat_task(task, "everything:t1") == {
        "taskId": "everything:t1",
        "status": "working",
        "statusMessage": "Gathering sources...",
        "createdAt": "2026-12-02T10:00:00Z",
        "lastUpdatedAt": "2026-12-02T10:00:01Z",
        "ttlMs": 300000,
        "pollIntervalMs": 1000,
    }
    # An unlimited time to live is null in this era; a poll interval that is no positive integer is left out.
    assert flat_task({"taskId": "t", "status": "working", "ttl": None, "pollInterval": 0.5}, "p")["ttlMs"] is None
    assert "pollIntervalMs" not in flat_task({"taskId": "t", "status": "working", "pollInterval": 0.5}, "p")


def test_a_tool_runs_as_a_task_when_it_must_or_when_it_may_and_the_client_can_poll() -> None:
    with pytest.raises(MissingCapability):
        task_request("required", {})  # a task the client could not poll
    assert task_request("required", {"extensions": {TASKS_EXTENSION: {}}}) is not None
    assert task_request("optional", {}) is None
    assert task_request("optional", {"extensions": {TASKS_EXTENSION: {}}}) is not None
    assert task_request("forbidden", {"extensions": {TASKS_EXTENSION: {}}}) is None
    assert task_request("optional", {"extensions": {TASKS_EXTENSION: True}}) is None  # not an object


def test_discover_shows_tasks_as_the_extension() -> None:
    assert discovered({"tools": {}}) == {"tools": {}}
    shown = discovered({"tools": {}, "tasks": {"list": {}}, "extensions": {"x": {}}})
    assert shown == {"tools": {}, "extensions": {"x": {}, TASKS_EXTENSION: {}}}
