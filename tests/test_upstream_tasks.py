"""Tasks of a 2026-07-28 upstream that speaks the tasks extension itself, through the hub, for clients of both eras.

The upstream is the conformance fixture (the official SDK's server, with the extension's tools and
methods), served on 127.0.0.1; the hub speaks 2026-07-28 to it. A 2026-07-28 client that declares the
extension gets the upstream's task passed through under a public id; one that does not is refused a tool
that runs only as a task, as the extension says. A session-era client gets 2025-11-25 tasks, and a plain
call of a task-only tool (the hub runs the task to its end and relays its question).
Polling ``tasks/get`` is how the era reads a task's progress, so the tests poll, bounded in time.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from connectors.calls import CallHooks
from connectors.eras import MAX_ROUNDS
from connectors.errors import UpstreamProtocolError, UpstreamTimeout
from connectors.spec import TASKS_EXTENSION
from hub.runtime import Hub
from hub.upstream_tasks import legacy_task, run_to_end
from tests.conformance import tasks as fixture_tasks
from tests.conformance.fixture import fixture_app
from tests.modern_wire import CAPABILITIES, TaskCaller
from tests.polling import until
from tests.servers import run_config, serve
from tests.wire import WAIT, AnsweringSession, rpc

pytestmark = pytest.mark.anyio

KEYS = {"ann": "key-ann-0123456789abcdef", "bob": "key-bob-0123456789abcdef"}


@asynccontextmanager
async def hub_before_fixture(**limits: int) -> AsyncIterator[tuple[str, Hub]]:
    keys = [{"name": n, "sha256": hashlib.sha256(k.encode()).hexdigest(), "tenant": "acme"} for n, k in KEYS.items()]
    async with serve(fixture_app()) as fixture:
        upstream = {"url": f"{fixture}/mcp", "protocol": "2026-07-28"}
        tenant = {"limits": limits} if limits else {}
        document = {"auth": {"apiKeys": keys}, "tenants": {"acme": tenant}, "mcpServers": {"fx": upstream}}
        async with run_config(document, env={}) as served:
            yield served


async def test_a_2026_upstreams_task_passes_through_to_a_client_that_declares_the_extension() -> None:
    async with hub_before_fixture() as (url, _), httpx.AsyncClient(timeout=WAIT, trust_env=False) as http:
        ann, bob = TaskCaller(http, url, KEYS["ann"]), TaskCaller(http, url, KEYS["bob"])
        found = await ann.result("server/discover", {})
        assert found["capabilities"]["extensions"][TASKS_EXTENSION] == {}

        slow = await ann.result("tools/call", {"name": "fx__slow_compute", "arguments": {"seconds": 30}})
        assert slow["resultType"] == "task" and slow["taskId"].startswith("fx:task-"), slow
        assert slow["status"] == "working" and slow["ttlMs"] > 0 and isinstance(slow["createdAt"], str)
        assert not {"task", "result", "requestState", "inputRequests"} & slow.keys()
        # Another principal of the same tenant can neither read nor cancel ann's task, and it runs on.
        for method in ("tasks/get", "tasks/cancel"):
            status, foreign = await bob.send(method, {"taskId": slow["taskId"]})
            assert (status, foreign["error"]["code"]) == (400, -32602), method
        status, foreign = await bob.send("tasks/update", {"taskId": slow["taskId"], "inputResponses": {}})
        assert (status, foreign["error"]["code"]) == (400, -32602)
        assert (await ann.result("tasks/get", {"taskId": slow["taskId"]}))["status"] == "working"
        # Mcp-Name may repeat the task's id; one that names another task is refused.
        status, mismatch = await ann.send("tasks/get", {"taskId": slow["taskId"]}, headers={"mcp-name": "fx:other"})
        assert (status, mismatch["error"]["code"]) == (400, -32020)
        status, named = await ann.send("tasks/get", {"taskId": slow["taskId"]}, headers={"mcp-name": slow["taskId"]})
        assert status == 200 and named["result"]["taskId"] == slow["taskId"]

        # A question of the task shows under the upstream's own key; tasks/update answers it.
        confirm = await ann.result("tools/call", {"name": "fx__confirm_delete", "arguments": {"filename": "a.txt"}})
        asked = await ann.until(confirm["taskId"], "input_required")
        assert list(asked["inputRequests"]) == ["confirm"]
        assert asked["inputRequests"]["confirm"]["method"] == "elicitation/create"
        answer = {"confirm": {"action": "accept", "content": {"confirm": True}}}
        ack = await ann.result("tasks/update", {"taskId": confirm["taskId"], "inputResponses": answer})
        assert ack["resultType"] == "complete" and "status" not in ack
        done = await ann.until(confirm["taskId"], "completed", "failed")
        assert done["result"]["content"][0]["text"] == "deleted a.txt"

        # Two questions at once, answered one at a time: the other stays open.
        multi = await ann.result("tools/call", {"name": "fx__multi_input", "arguments": {}})
        asked = await ann.until(multi["taskId"], "input_required")
        assert sorted(asked["inputRequests"]) == ["first", "second"]
        first = {"first": {"action": "accept", "content": {"name": "n"}}}
        await ann.result("tasks/update", {"taskId": multi["taskId"], "inputResponses": first})
        left = await ann.result("tasks/get", {"taskId": multi["taskId"]})
        assert left["status"] == "input_required" and list(left["inputRequests"]) == ["second"]
        second = {"second": {"action": "accept", "content": {"confirm": True}}}
        await ann.result("tasks/update", {"taskId": multi["taskId"], "inputResponses": second})
        assert (await ann.until(multi["taskId"], "completed"))["status"] == "completed"

        # A tool's own error ends the task completed with isError; a protocol error ends it failed.
        failing = await ann.result("tools/call", {"name": "fx__failing_job", "arguments": {}})
        ended = await ann.until(failing["taskId"], "completed", "failed")
        assert ended["status"] == "completed" and ended["result"]["isError"] is True
        broken = await ann.result("tools/call", {"name": "fx__protocol_error_job", "arguments": {}})
        ended = await ann.until(broken["taskId"], "completed", "failed")
        assert ended["status"] == "failed" and ended["error"]["code"] == -32603 and "result" not in ended

        cancelled = await ann.result("tasks/cancel", {"taskId": slow["taskId"]})
        assert cancelled["resultType"] == "complete" and "status" not in cancelled
        assert (await ann.until(slow["taskId"], "cancelled"))["status"] == "cancelled"
        again = await ann.result("tasks/cancel", {"taskId": slow["taskId"]})  # the same ack for an ended task
        assert again["resultType"] == "complete"
        status, unknown = await ann.send("tasks/get", {"taskId": "fx:task-nope"})
        assert (status, unknown["error"]["code"]) == (400, -32602)


async def test_without_the_extension_a_task_only_tool_is_refused_and_an_optional_one_runs_plainly() -> None:
    async with hub_before_fixture() as (url, _), httpx.AsyncClient(timeout=WAIT, trust_env=False) as http:
        ann = TaskCaller(http, url, KEYS["ann"])
        call = {"name": "fx__confirm_delete", "arguments": {"filename": "b.txt"}}
        status, refused = await ann.send("tools/call", call, CAPABILITIES)
        assert (status, refused["error"]["code"]) == (400, -32021), refused
        assert refused["error"]["data"] == {"requiredCapabilities": {"extensions": {TASKS_EXTENSION: {}}}}
        # A tool that only may run as a task runs plainly for this client (the upstream decides so).
        plain = await ann.result("tools/call", {"name": "fx__slow_compute", "arguments": {"seconds": 0}}, CAPABILITIES)
        assert plain["resultType"] == "complete" and "taskId" not in plain
        status, refused = await ann.send("tasks/get", {"taskId": "fx:x"}, CAPABILITIES)
        assert (status, refused["error"]["code"]) == (400, -32021)


async def test_a_session_era_client_gets_2025_tasks_of_a_2026_upstream() -> None:
    async with hub_before_fixture() as (url, _), httpx.AsyncClient(timeout=WAIT, trust_env=False) as http:
        ann, bob = AnsweringSession(http, url, KEYS["ann"]), AnsweringSession(http, url, KEYS["bob"])
        opened = await ann.open()
        await bob.open()
        assert "requests" in opened["capabilities"]["tasks"]  # the hub offers tasks: an upstream does
        call = {"name": "fx__confirm_delete", "arguments": {"filename": "c.txt"}, "task": {"ttl": 60000}}
        created = (await ann.request("tools/call", call))["result"]
        task = created["task"]
        assert task["taskId"].startswith("fx:task-") and task["status"] == "working", created
        assert isinstance(task["ttl"], int) and "ttlMs" not in task and "resultType" not in created
        polled = (await ann.request("tasks/get", {"taskId": task["taskId"]}))["result"]
        assert polled["taskId"] == task["taskId"] and polled["status"] in ("working", "input_required")
        # Another session (another principal) does not know the task.
        foreign = await bob.request("tasks/get", {"taskId": task["taskId"]})
        assert foreign["error"]["code"] == -32602
        # tasks/result waits for the end; the task's question comes on its stream as elicitation/create.
        outcome = await ann.request(
            "tasks/result", {"taskId": task["taskId"]}, {"action": "accept", "content": {"confirm": True}}
        )
        result = outcome["result"]
        assert result["content"][0]["text"] == "deleted c.txt"
        assert result["_meta"]["io.modelcontextprotocol/related-task"] == {"taskId": task["taskId"]}
        # The question says which task it is asked for (that era wants it of every request related to one).
        [question] = ann.questions
        assert question["method"] == "elicitation/create"
        assert question["params"]["_meta"]["io.modelcontextprotocol/related-task"] == {"taskId": task["taskId"]}
        listed = (await ann.request("tasks/list", {}))["result"]["tasks"]
        assert [(t["taskId"], t["status"]) for t in listed] == [(task["taskId"], "completed")]
        assert (await bob.request("tasks/list", {}))["result"]["tasks"] == []

        # A tool that runs only as a task, called plainly: the hub runs it as one and relays its question.
        plain = await ann.request(
            "tools/call",
            {"name": "fx__confirm_delete", "arguments": {"filename": "d.txt"}},
            {"action": "accept", "content": {"confirm": True}},
        )
        assert plain["result"]["content"][0]["text"] == "deleted d.txt" and "task" not in plain["result"]

        slow = await ann.request("tools/call", {"name": "fx__slow_compute", "arguments": {"seconds": 30}, "task": {}})
        slow_id = slow["result"]["task"]["taskId"]
        stopped = (await ann.request("tasks/cancel", {"taskId": slow_id}))["result"]
        assert stopped == {**stopped, "taskId": slow_id, "status": "cancelled"}
        failed = await ann.request("tasks/result", {"taskId": slow_id})
        assert "cancelled" in failed["error"]["message"]
        # That era refuses to cancel a task that has ended, and the task stays as it ended.
        refused = await ann.request("tasks/cancel", {"taskId": task["taskId"]})
        assert refused["error"]["code"] == -32602
        assert (await ann.request("tasks/get", {"taskId": task["taskId"]}))["result"]["status"] == "completed"


async def test_a_waiting_tasks_result_holds_one_of_its_tenants_call_slots() -> None:
    """A tenant does not get past ``maxConcurrentCalls`` by running its work as tasks and waiting on
    their results: a waiting ``tasks/result`` holds an upstream request open, as a call does."""
    async with (
        hub_before_fixture(maxConcurrentCalls=1) as (url, hub),
        httpx.AsyncClient(timeout=WAIT, trust_env=False) as http,
    ):
        ann, bob = AnsweringSession(http, url, KEYS["ann"]), AnsweringSession(http, url, KEYS["bob"])
        await ann.open()
        await bob.open()
        slow = await ann.request("tools/call", {"name": "fx__slow_compute", "arguments": {"seconds": 30}, "task": {}})
        task_id = slow["result"]["task"]["taskId"]
        greet = {"name": "fx__greet", "arguments": {"name": "bob"}}
        assert "result" in await bob.request("tools/call", greet)  # creating the task held the slot a moment only
        waiting = asyncio.create_task(ann.request("tasks/result", {"taskId": task_id}))
        try:
            await until(lambda: hub.gate.limits.in_flight("acme") == 1, "the tasks/result is admitted")
            refused = await http.post(url, json=rpc(90, "tools/call", greet), headers=bob.headers)
            assert refused.status_code == 429 and "maxConcurrentCalls" in refused.text, refused.text
            second = await http.post(url, json=rpc(91, "tasks/result", {"taskId": task_id}), headers=ann.headers)
            assert second.status_code == 429 and second.json()["error"]["code"] == -32029, second.text
            assert (await ann.request("tasks/get", {"taskId": task_id}))["result"]["status"] == "working"
            # The wait ends (its task cancelled): the slot comes back, and the other principal calls again.
            await ann.request("tasks/cancel", {"taskId": task_id})
            async with asyncio.timeout(WAIT):
                ended = await waiting
            assert "cancelled" in ended["error"]["message"], ended
        finally:
            waiting.cancel()
        assert "result" in await bob.request("tools/call", greet)


async def test_two_readers_of_one_task_ask_its_question_once() -> None:
    async with hub_before_fixture() as (url, _), httpx.AsyncClient(timeout=WAIT, trust_env=False) as http:
        ann = AnsweringSession(http, url, KEYS["ann"])
        await ann.open()
        call = {"name": "fx__confirm_delete", "arguments": {"filename": "f.txt"}, "task": {"ttl": 60000}}
        task_id = (await ann.request("tools/call", call))["result"]["task"]["taskId"]
        answer = {"action": "accept", "content": {"confirm": True}}
        first, second = await asyncio.gather(
            ann.request("tasks/result", {"taskId": task_id}, answer),
            ann.request("tasks/result", {"taskId": task_id}, answer),
        )
        assert first["result"]["content"] == second["result"]["content"] == [{"type": "text", "text": "deleted f.txt"}]
        assert ann.asked == 1  # the second reader waited for the first, then found the task ended


async def test_a_session_era_client_that_cancels_its_call_cancels_the_task_the_hub_ran_for_it() -> None:
    async with hub_before_fixture() as (url, _), httpx.AsyncClient(timeout=WAIT, trust_env=False) as http:
        ann = AnsweringSession(http, url, KEYS["ann"])
        await ann.open()
        before = set(fixture_tasks._TASKS)
        call = rpc(7, "tools/call", {"name": "fx__confirm_delete", "arguments": {"filename": "e.txt"}})
        async with http.stream("POST", url, json=call, headers=ann.headers) as got:
            async for line in got.aiter_lines():
                if line.startswith("data:") and '"elicitation/create"' in line:
                    break  # the task is asking: it runs upstream now
            cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 7}}
            await http.post(url, json=cancel, headers=ann.headers)
        [started] = [fixture_tasks._TASKS[key] for key in set(fixture_tasks._TASKS) - before]
        await until(lambda: started.status == "cancelled", "the upstream task is cancelled with the call")


def test_a_2026_task_becomes_a_2025_task_object() -> None:
    detailed = {
        "taskId": "task-1",
        "status": "completed",
        "createdAt": "2026-12-04T10:00:00Z",
        "lastUpdatedAt": "2026-12-04T10:00:01Z",
        "ttlMs": 60000,
        "pollIntervalMs": 200,
        "result": {"content": []},
        "resultType": "complete",
    }
    assert legacy_task(detailed, "fx:task-1") == {
        "taskId": "fx:task-1",
        "status": "completed",
        "createdAt": "2026-12-04T10:00:00Z",
        "lastUpdatedAt": "2026-12-04T10:00:01Z",
        "ttl": 60000,
        "pollInterval": 200,
    }
    assert legacy_task({"taskId": "t", "status": "working", "ttlMs": None}, "p") == {
        "taskId": "p",
        "status": "working",
        "ttl": None,
    }


class ScriptedTask:
    """An upstream's answers to tasks/get, one per read (the last repeats), and what the hub sent it."""

    def __init__(self, *reads: dict[str, Any]) -> None:
        self.reads = list(reads)
        self.sent: list[tuple[str, dict[str, Any]]] = []

    async def request(
        self, upstream: str, method: str, params: dict[str, Any] | None = None, *, hooks: CallHooks | None = None
    ) -> dict[str, Any]:
        self.sent.append((method, params or {}))
        if method != "tasks/get":
            return {}
        return self.reads.pop(0) if len(self.reads) > 1 else self.reads[0]

    def is_shared(self, upstream: str) -> bool:
        return False

    async def notify_all(self, method: str, params: dict[str, Any] | None = None) -> None:
        return None

    async def set_log_level(self, level: str) -> None:
        return None


QUESTION = {"confirm": {"method": "elicitation/create", "params": {"message": "ok?", "requestedSchema": {}}}}


def _read(status: str, updated: str, **more: Any) -> dict[str, Any]:
    return {"taskId": "t", "status": status, "lastUpdatedAt": updated, "pollIntervalMs": 50, **more}


async def test_questions_read_again_before_the_task_moved_on_are_not_asked_again() -> None:
    asked: list[dict[str, Any]] = []

    async def ask(message: dict[str, Any]) -> dict[str, Any]:
        asked.append(message)
        return {"action": "accept", "content": {"confirm": True}}

    pending = _read("input_required", "T1", inputRequests=QUESTION)
    upstream = ScriptedTask(pending, pending, pending, _read("completed", "T2", result={"content": []}))
    result = await run_to_end(upstream, "fx", "t", CallHooks(request=ask), cancel_on_exit=True)
    assert result == {"content": []} and len(asked) == 1
    assert [method for method, _ in upstream.sent].count("tasks/update") == 1
    assert ("tasks/cancel", {"taskId": "t"}) not in upstream.sent  # (it ended: nothing to cancel)


async def test_a_task_that_asks_without_end_or_never_ends_is_given_up_and_cancelled() -> None:
    async def ask(message: dict[str, Any]) -> dict[str, Any]:
        return {"action": "accept", "content": {}}

    moving = [_read("input_required", f"T{i}", inputRequests=QUESTION) for i in range(MAX_ROUNDS + 2)]
    upstream = ScriptedTask(*moving)
    with pytest.raises(UpstreamProtocolError, match="more than"):
        await run_to_end(upstream, "fx", "t", CallHooks(request=ask), cancel_on_exit=True)
    assert upstream.sent[-1] == ("tasks/cancel", {"taskId": "t"})

    working = ScriptedTask(_read("working", "T1"))
    with pytest.raises(UpstreamTimeout):
        await run_to_end(working, "fx", "t", None, cancel_on_exit=True, limit=0.2)
    assert working.sent[-1] == ("tasks/cancel", {"taskId": "t"})
    read_only = ScriptedTask(_read("working", "T1"))
    with pytest.raises(UpstreamTimeout):
        await run_to_end(read_only, "fx", "t", None, cancel_on_exit=False, limit=0.2)
    assert {method for method, _ in read_only.sent} == {"tasks/get"}  # a reader only reads
