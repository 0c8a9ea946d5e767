"""Three hub replicas on one real Redis behind a round-robin load balancer (no stickiness), end to end.

Each replica is its own process (``python -m hub serve``); the upstreams are SDK servers served by
the test; clients are the SDK's ``Client`` or bare HTTP. Every wait is on an event (a line of a
replica's log, an upstream's probe, a reply) under a deadline; every process is stopped by its pid.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client, types

from tests.fleet import Fleet, fleet
from tests.hub_process import hub_serving
from tests.modern_wire import post as modern_post
from tests.modern_wire import request as modern_request
from tests.servers import serve
from tests.upstreams import Probe, http_app
from tests.wire import HEADERS, INIT, initialize, rpc, sse_messages

pytestmark = pytest.mark.anyio

WAIT = 10.0


@asynccontextmanager
async def alpha_fleet(tmp_path: Path, probe: Probe | None = None, **options: Any) -> AsyncIterator[Fleet]:
    async with AsyncExitStack() as stack:
        alpha = await stack.enter_async_context(serve(http_app("alpha", probe)))
        yield await stack.enter_async_context(fleet(tmp_path, {"alpha": {"url": f"{alpha}/mcp"}}, **options))


def echo(request_id: int, text: str) -> dict[str, Any]:
    return rpc(request_id, "tools/call", {"name": "alpha__echo", "arguments": {"text": text}})


def text_of(result: types.CallToolResult) -> str:
    first = result.content[0]
    assert isinstance(first, types.TextContent)
    return first.text


async def test_a_session_opened_on_one_replica_works_whichever_replica_its_requests_reach(tmp_path: Path) -> None:
    async with alpha_fleet(tmp_path) as group, Client(group.url, mode="legacy") as client:
        tools = await client.list_tools()
        assert "alpha__echo" in {tool.name for tool in tools.tools}
        for n in range(6):
            result = await client.call_tool("alpha__echo", {"text": f"hello {n}"})
            assert text_of(result) == f"alpha: hello {n}"
        assert min(group.balancer.served) >= 2  # every replica had requests of the one session
        async with httpx.AsyncClient(timeout=WAIT) as http:
            reports = [(await group.health(i, http))["replica"] for i in range(3)]
        assert sum(report["owned"] for report in reports) == 1  # one owner, the others forwarded to it
        assert sum(report["forwarded"] for report in reports) >= 4
        assert await group.store.hlen("manifold:replicas") == 3  # the registry every heartbeat reads


async def read_events(lines: AsyncIterator[str], count: int) -> list[tuple[str, dict[str, Any]]]:
    """The next ``count`` SSE events with data (their ids and messages)."""
    events: list[tuple[str, dict[str, Any]]] = []
    event_id = ""
    async with asyncio.timeout(WAIT):
        async for line in lines:
            if line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("data: ") and line[6:].strip():
                events.append((event_id, json.loads(line[6:])))
                if len(events) == count:
                    return events
    raise AssertionError(f"the stream ended after {len(events)} of {count} events")


async def test_sigkill_of_the_owner_mid_call_the_client_resumes_on_another_with_nothing_lost_or_twice(
    tmp_path: Path,
) -> None:
    probe = Probe()
    async with alpha_fleet(tmp_path, probe) as group, httpx.AsyncClient(timeout=WAIT) as http:
        headers = await initialize(http, group.url)
        session = headers["mcp-session-id"]
        await http.post(group.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
        done = await http.post(group.url, json=echo(2, "a"), headers=headers)
        assert done.json()["result"]["content"][0]["text"] == "alpha: a"
        owner = await group.owner(session)
        assert owner is not None
        params = {"name": "alpha__stepper", "arguments": {"steps": 3}, "_meta": {"progressToken": "p"}}
        call = rpc(3, "tools/call", params)
        probe.steps.put_nowait(None)
        probe.steps.put_nowait(None)
        async with http.stream("POST", group.url, json=call, headers=headers) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            events = await read_events(response.aiter_lines(), 2)
        assert [message["params"]["progress"] for _, message in events] == [1, 2]
        seen_first = events[0][0]  # the client saw step 1 only, say: step 2 is what it missed
        group.replicas[owner].signal(signal.SIGKILL)
        await group.replicas[owner].exit_code(within=WAIT)

        resume = {**headers, "last-event-id": seen_first}
        resume.pop("content-type")
        replayed = await http.get(group.url, headers=resume)
        assert replayed.status_code == 200, replayed.text
        messages = sse_messages(replayed.text)
        assert [m.get("params", {}).get("progress") for m in messages[:-1]] == [2]  # what it missed, once
        lost = messages[-1]
        assert lost["id"] == 3 and lost["error"]["code"] == -32603  # the call's answer: lost, not silence
        assert lost["error"]["data"]["replica"] in seen_first
        # Its answer is in the log now: coming back after it gets nothing twice.
        last_id = replayed.text.split("id: ")[-1].split()[0]
        again = await http.get(group.url, headers={**resume, "last-event-id": last_id})
        assert sse_messages(again.text) == []

        # The session goes on, on the replicas left.
        for n in range(4):
            reply = await http.post(group.url, json=echo(10 + n, str(n)), headers=headers)
            assert reply.status_code in (200, 502), reply.text  # 502: the balancer tried the dead one
            if reply.status_code == 200:
                assert reply.json()["result"]["content"][0]["text"] == f"alpha: {n}"
        new_owner = await group.owner(session)
        assert new_owner is not None and new_owner != owner


async def test_a_tenants_rate_limit_holds_over_three_replicas(tmp_path: Path) -> None:
    key = "acme-secret-key-1"
    extra = {
        "auth": {"apiKeys": [{"name": "ann", "sha256": hashlib.sha256(key.encode()).hexdigest(), "tenant": "acme"}]},
        "tenants": {"acme": {"limits": {"requestsPerMinute": 1, "burst": 6}}},
    }
    async with (
        alpha_fleet(tmp_path, extra=extra) as group,
        httpx.AsyncClient(timeout=WAIT, headers={"authorization": f"Bearer {key}"}) as http,
    ):
        sessions = [await initialize(http, group.mcp(i)) for i in range(3)]  # one owned by each replica: 3 tokens
        ping = rpc(7, "ping")
        answers = []
        for _ in range(3):
            for headers in sessions:
                answers.append((await http.post(group.url, json=ping, headers=headers)).status_code)
        assert answers.count(200) == 3, answers  # 6 in all, whatever replica counted them
        assert answers.count(429) == 6


async def test_a_relayed_sampling_request_completes_when_its_answer_lands_on_another_replica(tmp_path: Path) -> None:
    async def sample(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="forty-two"), model="test-model"
        )

    async with alpha_fleet(tmp_path) as group, Client(group.url, mode="legacy", sampling_callback=sample) as client:
        before = list(group.balancer.served)
        result = await client.call_tool("alpha__ask_model", {"prompt": "the answer?"})
        assert "forty-two" in text_of(result)
        spread = [after - was for after, was in zip(group.balancer.served, before, strict=True)]
        assert sum(spread) >= 2 and max(spread) < sum(spread)  # the call and its answer on different replicas


def on_list_changed(event: asyncio.Event) -> Any:
    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            event.set()

    return on_message


async def test_a_list_change_on_an_upstream_reaches_the_clients_of_every_replica(tmp_path: Path) -> None:
    changed = [asyncio.Event() for _ in range(3)]

    async with alpha_fleet(tmp_path) as group, AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(Client(group.mcp(i), mode="legacy", message_handler=on_list_changed(event)))
            for i, event in enumerate(changed)
        ]  # one on each replica: only the first one's upstream session hears the change from the upstream
        for client in clients:
            assert "alpha__grown" not in {tool.name for tool in (await client.list_tools()).tools}
        assert text_of(await clients[0].call_tool("alpha__grow", {})) == "grown"
        async with asyncio.timeout(WAIT):
            await asyncio.gather(*(event.wait() for event in changed))
        for client in clients:
            names = {tool.name for tool in (await client.list_tools(cache_mode="bypass")).tools}
            assert "alpha__grown" in names
        assert text_of(await clients[2].call_tool("alpha__grown", {})) == "I am new"


async def test_redis_stopped_and_started_again_mid_run(tmp_path: Path) -> None:
    echo = rpc(5, "tools/call", {"name": "alpha__echo", "arguments": {"text": "on"}})
    async with alpha_fleet(tmp_path) as group, httpx.AsyncClient(timeout=WAIT) as http:
        headers = await initialize(http, group.mcp(0))  # replica 0 owns it
        assert (await http.post(group.mcp(1), json=echo, headers=headers)).status_code == 200  # 1 forwards to 0
        await group.redis.stop()

        owner = await http.post(group.mcp(0), json=echo, headers=headers)
        assert owner.status_code == 200 and owner.json()["result"]["content"][0]["text"] == "alpha: on"
        known = await http.post(group.mcp(1), json=echo, headers=headers)
        assert known.status_code == 200, known.text  # the owner it saw last still owns it
        unknown = await http.post(group.mcp(2), json=echo, headers=headers)
        assert unknown.status_code == 503 and "Redis" in unknown.json()["error"]["message"]
        for i in range(3):  # no new session without Redis: no two replicas may think they own one
            opened = await http.post(group.mcp(i), json=rpc(1, "initialize", INIT), headers=HEADERS)
            assert opened.status_code == 503 and "unreachable" in opened.json()["error"]["message"]
        health = await group.health(0, http)
        assert health["status"] == "degraded" and health["store"]["reachable"] is False
        assert health["store"]["lastError"]

        marks = [len(replica.lines) for replica in group.replicas]
        await group.redis.start()  # the same port, and none of the data (no persistence)
        for replica, mark in zip(group.replicas, marks, strict=True):
            await replica.logged("/0 reachable", after=mark)
        await group.replicas[0].logged("written back", after=marks[0])  # its owner key and record

        assert (await http.post(group.mcp(2), json=echo, headers=headers)).status_code == 200
        assert (await group.health(0, http))["status"] == "ok"
        await initialize(http, group.mcp(1))


async def test_a_stateless_retry_with_request_state_completes_on_whichever_replica_it_reaches(tmp_path: Path) -> None:
    async with alpha_fleet(tmp_path) as group, httpx.AsyncClient(timeout=WAIT) as http:
        arguments = {"question": "colour?"}
        ask, ask_headers = modern_request(1, "tools/call", {"name": "alpha__ask_user", "arguments": arguments})
        _, replies = await modern_post(http, group.url, ask, ask_headers)
        asked = replies[-1]["result"]
        assert asked["resultType"] == "input_required", replies
        responses = {key: {"action": "accept", "content": {"colour": "red"}} for key in asked["inputRequests"]}
        params = {"name": "alpha__ask_user", "arguments": arguments, "requestState": asked["requestState"]}
        retry, retry_headers = modern_request(2, "tools/call", {**params, "inputResponses": responses})
        _, replies = await modern_post(http, group.url, retry, retry_headers)  # the next replica
        assert replies[-1]["result"]["content"][0]["text"] == "alpha: the user chose red", replies
        # Sealed with the key every replica shares, bound to its principal: spent now, on every replica.
        for i in range(3):
            _, replies = await modern_post(http, group.mcp(i), retry, retry_headers)
            assert replies[-1]["error"]["code"] == -32602, replies


async def test_a_reload_on_one_replica_leaves_all_three_on_its_config(tmp_path: Path) -> None:
    changed = [asyncio.Event() for _ in range(3)]
    async with serve(http_app("beta")) as beta, alpha_fleet(tmp_path) as group, AsyncExitStack() as stack:
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=WAIT))
        clients = [
            await stack.enter_async_context(Client(group.mcp(i), mode="legacy", message_handler=on_list_changed(event)))
            for i, event in enumerate(changed)
        ]
        for client in clients:
            await client.list_tools()
        digests = {(await group.health(i, http))["replica"]["config"] for i in range(3)}
        marks = [len(replica.lines) for replica in group.replicas]
        document = json.loads(group.configs[0].read_text())
        document["mcpServers"]["beta"] = {"url": f"{beta}/mcp"}
        group.configs[0].write_text(json.dumps(document))  # replica 0's file only
        reloaded = await http.post(f"{group.bases[0]}/admin/reload")
        assert reloaded.status_code == 200 and reloaded.json()["ok"], reloaded.text
        for replica, mark in zip(group.replicas[1:], marks[1:], strict=True):
            await replica.logged("reloaded (replica", after=mark)
        async with asyncio.timeout(WAIT):
            await asyncio.gather(*(event.wait() for event in changed))
        for client in clients:
            assert "beta__echo" in {tool.name for tool in (await client.list_tools(cache_mode="bypass")).tools}
        reports = [await group.health(i, http) for i in range(3)]
        for i, health in enumerate(reports):
            assert "beta" in {u["name"] for u in health["upstreams"]}
            assert health["replica"]["url"] == group.bases[i]  # each keeps where it listens
        after = {health["replica"]["config"] for health in reports}
        assert len(digests) == 1 and len(after) == 1 and after != digests  # one config, before and after


async def test_another_principal_cannot_use_or_take_a_session_through_any_replica(tmp_path: Path) -> None:
    keys = {"ann": "ann-secret-key-1", "eve": "eve-secret-key-1"}
    extra = {
        "auth": {
            "apiKeys": [
                {"name": name, "sha256": hashlib.sha256(key.encode()).hexdigest(), "tenant": "acme"}
                for name, key in keys.items()
            ]
        },
        "tenants": {"acme": {}},
    }
    echo = rpc(5, "tools/call", {"name": "alpha__echo", "arguments": {"text": "mine"}})
    async with (
        alpha_fleet(tmp_path, extra=extra) as group,
        httpx.AsyncClient(timeout=WAIT, headers={"authorization": f"Bearer {keys['ann']}"}) as ann,
        httpx.AsyncClient(timeout=WAIT, headers={"authorization": f"Bearer {keys['eve']}"}) as eve,
    ):
        headers = await initialize(ann, group.mcp(0))
        for i in range(3):  # the owner, and the replicas that would forward it
            stolen = await eve.post(group.mcp(i), json=echo, headers=headers)
            assert stolen.status_code == 404, stolen.text
            # A forged forwarding mark changes nothing: it can only keep a request from being forwarded.
            forged = await eve.post(group.mcp(i), json=echo, headers={**headers, "x-manifold-forwarded": "x"})
            assert forged.status_code in (404, 421), forged.text
            assert (await eve.delete(group.mcp(i), headers=headers)).status_code == 404
        assert await group.owner(headers["mcp-session-id"]) == 0  # nobody took it over
        for i in range(3):
            mine = await ann.post(group.mcp(i), json=echo, headers=headers)
            assert mine.status_code == 200 and mine.json()["result"]["content"][0]["text"] == "alpha: mine"


async def test_behind_a_sticky_balancer_nothing_is_forwarded(tmp_path: Path) -> None:
    async with alpha_fleet(tmp_path, sticky=True) as group, httpx.AsyncClient(timeout=WAIT) as http:
        sessions = [await initialize(http, group.url) for _ in range(3)]
        for n in range(3):
            for headers in sessions:
                reply = await http.post(group.url, json=echo(n, "x"), headers=headers)
                assert reply.json()["result"]["content"][0]["text"] == "alpha: x"
        reports = [(await group.health(i, http))["replica"] for i in range(3)]
        assert [report["owned"] for report in reports] == [1, 1, 1]
        assert sum(report["forwarded"] for report in reports) == 0


async def test_health_metrics_and_the_cli_report_each_replica_and_list_them_all(tmp_path: Path) -> None:
    async with alpha_fleet(tmp_path) as group, httpx.AsyncClient(timeout=WAIT) as http:
        await initialize(http, group.mcp(1))
        health = await group.health(1, http)
        replica = health["replica"]
        assert replica["url"] == group.bases[1] and replica["owned"] == 1
        assert sorted(other["url"] for other in replica["replicas"]) == sorted(group.bases)
        metrics = (await http.get(f"{group.bases[1]}/metrics")).text
        assert f'manifold_replica_info{{replica="{replica["id"]}",url="{group.bases[1]}"}} 1.0' in metrics
        assert "manifold_replica_sessions 1.0" in metrics
        listed = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hub", "health", "--url", group.bases[1],
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(listed.communicate(), WAIT)
        text = out.decode()
        assert listed.returncode == 0, text
        assert all(base in text for base in group.bases) and text.count("(this one)") == 1
        assert "DIFFERS" not in text


async def test_a_replica_killed_and_started_again_at_its_address_has_its_sessions_taken_over_at_once(
    tmp_path: Path,
) -> None:
    async with alpha_fleet(tmp_path, lease=30.0) as group, httpx.AsyncClient(timeout=WAIT) as http:
        elsewhere = await initialize(http, group.mcp(0))
        here = await initialize(http, group.mcp(0))
        assert (await http.post(group.mcp(1), json=echo(1, "before"), headers=elsewhere)).status_code == 200
        group.replicas[0].signal(signal.SIGKILL)
        await group.replicas[0].exit_code(within=WAIT)
        port = int(group.bases[0].rsplit(":", 1)[1])
        async with hub_serving(group.configs[0], port):  # a new run where the old one listened; its lease lives on
            # Through another replica: the new process answers 421 at the old address.
            reply = await http.post(group.mcp(1), json=echo(2, "after"), headers=elsewhere)
            assert reply.status_code == 200, reply.text
            assert reply.json()["result"]["content"][0]["text"] == "alpha: after"
            assert await group.owner(elsewhere["mcp-session-id"]) == 1  # not a lease later: now
            # At the new process itself (a sticky balancer sends it there): it replaced the owner.
            reply = await http.post(group.mcp(0), json=echo(3, "back home"), headers=here)
            assert reply.status_code == 200, reply.text
            assert await group.owner(here["mcp-session-id"]) == 0


async def test_a_live_owner_that_cannot_be_reached_keeps_its_session(tmp_path: Path) -> None:
    # Replica 1 gives an address nobody can resolve: the others cannot reach it, but it is alive
    # (its heartbeat goes on), so its session is not taken from it.
    unreachable = {1: "http://replica-1.invalid:8765"}
    async with alpha_fleet(tmp_path, advertise=unreachable) as group, httpx.AsyncClient(timeout=WAIT) as http:
        headers = await initialize(http, group.mcp(1))
        refused = await http.post(group.mcp(0), json=echo(1, "x"), headers=headers)
        assert refused.status_code == 503 and "does not answer" in refused.json()["error"]["message"], refused.text
        assert int(refused.headers["retry-after"]) >= 1
        assert await group.owner(headers["mcp-session-id"]) == 1
        served = await http.post(group.mcp(1), json=echo(2, "still mine"), headers=headers)
        assert served.json()["result"]["content"][0]["text"] == "alpha: still mine"


async def test_requests_that_fail_before_a_session_leave_no_claim_behind(tmp_path: Path) -> None:
    async with alpha_fleet(tmp_path) as group, httpx.AsyncClient(timeout=WAIT) as http:
        for n in range(5):
            unknown = {**HEADERS, "content-type": "text/plain", "mcp-session-id": f"{n:032x}"}
            refused = await http.post(group.mcp(0), content=b"{}", headers=unknown)
            assert refused.status_code == 415
            named = {**HEADERS, "mcp-session-id": f"{n:032x}"}
            missing = await http.post(group.mcp(0), json=echo(n, "x"), headers=named)
            assert missing.status_code == 404
        assert [key async for key in group.store.scan_iter("manifold:owner:*")] == []
        assert (await group.health(0, http))["replica"]["owned"] == 0


async def test_a_forwarded_stateless_retry_is_never_forwarded_again(tmp_path: Path) -> None:
    async with alpha_fleet(tmp_path) as group, httpx.AsyncClient(timeout=WAIT) as http:
        arguments = {"question": "colour?"}
        ask, ask_headers = modern_request(1, "tools/call", {"name": "alpha__ask_user", "arguments": arguments})
        _, replies = await modern_post(http, group.mcp(0), ask, ask_headers)
        asked = replies[-1]["result"]
        params = {"name": "alpha__ask_user", "arguments": arguments, "requestState": asked["requestState"]}
        responses = {key: {"action": "accept", "content": {"colour": "red"}} for key in asked["inputRequests"]}
        retry, retry_headers = modern_request(2, "tools/call", {**params, "inputResponses": responses})
        # Marked as forwarded already (forged, or by a replica that was wrong): served where it landed.
        _, replies = await modern_post(http, group.mcp(1), retry, {**retry_headers, "x-manifold-forwarded": "x"})
        assert replies[-1]["error"]["code"] == -32602, replies
        _, replies = await modern_post(http, group.mcp(1), retry, retry_headers)  # the real retry still works
        assert replies[-1]["result"]["content"][0]["text"] == "alpha: the user chose red", replies


async def test_a_stalled_owner_that_wakes_after_its_session_was_ended_elsewhere_does_not_bring_it_back(
    tmp_path: Path,
) -> None:
    async with alpha_fleet(tmp_path, lease=1.0) as group, httpx.AsyncClient(timeout=WAIT) as http:
        headers = await initialize(http, group.mcp(0))
        session = headers["mcp-session-id"]
        await group.store.config_set("notify-keyspace-events", "Ex")
        expiries = group.store.pubsub()
        await expiries.subscribe("__keyevent@0__:expired")
        mark = len(group.replicas[0].lines)
        group.replicas[0].signal(signal.SIGSTOP)  # stalled: no heartbeat, its process still there
        try:
            async with asyncio.timeout(WAIT):  # its lease runs out in Redis
                while True:
                    message = await expiries.get_message(timeout=WAIT)
                    if message is not None and message.get("data") == f"manifold:owner:{session}".encode():
                        break
            await expiries.aclose()
            # Another replica serves the session (restored from its record), and the client ends it there.
            served = await http.post(group.mcp(1), json=echo(1, "elsewhere"), headers=headers)
            assert served.status_code == 200, served.text
            assert (await http.delete(group.mcp(1), headers=headers)).status_code == 200
        finally:
            group.replicas[0].signal(signal.SIGCONT)
        await group.replicas[0].logged("closing the local copy", after=mark)  # moved, or ended: either way
        for i in range(3):
            gone = await http.post(group.mcp(i), json=echo(2, "back?"), headers=headers)
            assert gone.status_code == 404, (i, gone.text)
        assert await group.store.exists(f"manifold:session:{session}", f"manifold:owner:{session}") == 0
