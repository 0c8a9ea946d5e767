"""The 2026-07-28 era through the hub, over real sockets: the wire, the SDK's Client, the bridge."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
import mcp_types as types
import pytest
from mcp import Client
from mcp.client import ClientRequestContext

from hub.runtime import Hub
from tests.modern_wire import VERSION, envelope, headers_for, post, request
from tests.servers import run_config, run_hub, serve
from tests.upstreams import Probe, http_app
from tests.wire import HEADERS, WAIT, rpc

LOG_LEVEL = "io.modelcontextprotocol/logLevel"
pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


@asynccontextmanager
async def hub_with_alpha(probe: Probe | None = None, **hub: Any) -> AsyncIterator[tuple[str, Hub]]:
    async with serve(http_app("alpha", probe)) as up, run_hub({"alpha": {"url": f"{up}/mcp"}}, **hub) as served:
        yield served


def http() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=WAIT, trust_env=False)


async def sampling(
    context: ClientRequestContext, params: types.CreateMessageRequestParams
) -> types.CreateMessageResult:
    return types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text="hi"), model="m")


async def elicitation(context: ClientRequestContext, params: types.ElicitRequestParams) -> types.ElicitResult:
    return types.ElicitResult(action="accept", content={"colour": "red"})


async def roots(context: ClientRequestContext) -> types.ListRootsResult:
    return types.ListRootsResult(roots=[types.Root.model_validate({"uri": "file:///work"})])


def text_of(result: types.CallToolResult) -> str:
    content = result.content[0]
    assert isinstance(content, types.TextContent)
    return content.text


# -- the official client, both eras, against the same upstream ---------------------------------------


async def test_sdk_client_auto_mode_negotiates_the_stateless_era_and_legacy_the_session_era() -> None:
    async with hub_with_alpha() as (url, _):
        async with Client(url, mode="auto") as modern:
            assert modern.protocol_version == VERSION
            tools = {tool.name for tool in (await modern.list_tools()).tools}
            seen: list[float] = []

            async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                seen.append(progress)

            result = await modern.call_tool("alpha__progress", {"steps": 3}, progress_callback=on_progress)
            assert text_of(result) == "3 steps done" and seen == [1.0, 2.0, 3.0]
            prompt = await modern.get_prompt("alpha__greet", {"who": "Ada"})
            assert "Hello Ada" in str(prompt.messages[0].content)
            read = await modern.read_resource("manifold://alpha/item://42")
            assert "alpha item 42" in str(read.contents[0])
        async with Client(url, mode="legacy") as legacy:
            assert legacy.protocol_version == "2025-11-25"
            assert {tool.name for tool in (await legacy.list_tools()).tools} == tools
            assert text_of(await legacy.call_tool("alpha__echo", {"text": "old"})) == "alpha: old"


async def test_a_stateless_client_gets_sampling_elicitation_and_roots_from_a_session_era_upstream() -> None:
    async with (
        hub_with_alpha() as (url, hub),
        Client(
            url,
            mode="auto",
            sampling_callback=sampling,
            elicitation_callback=elicitation,
            list_roots_callback=roots,
        ) as client,
    ):
        assert client.protocol_version == VERSION
        assert text_of(await client.call_tool("alpha__ask_model", {"prompt": "hello"})) == "alpha heard: hi"
        assert text_of(await client.call_tool("alpha__ask_user", {"question": "?"})) == "alpha: the user chose red"
        assert text_of(await client.call_tool("alpha__call_roots", {})) == "file:///work"
        assert hub.modern.calls.parked == 0 and len(hub.modern.calls) == 0  # nothing left waiting


async def test_two_rounds_of_input_with_progress_in_between_reach_the_retries() -> None:
    colours = iter(["red", "blue"])

    async def pick(context: ClientRequestContext, params: types.ElicitRequestParams) -> types.ElicitResult:
        return types.ElicitResult(action="accept", content={"colour": next(colours)})

    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async with hub_with_alpha() as (url, _), Client(url, mode="auto", elicitation_callback=pick) as client:
        result = await client.call_tool("alpha__ask_twice", {"rounds": 2}, progress_callback=on_progress)
        assert text_of(result) == "alpha: red,blue"
        assert seen[-1] == 2.0 and 1.0 in seen  # progress of the parked call reached the retries


async def test_an_undeclared_capability_is_not_asked_and_the_upstream_hears_why() -> None:
    async with hub_with_alpha() as (url, _), http() as client:
        message, headers = request(1, "tools/call", {"name": "alpha__ask_model", "arguments": {"prompt": "x"}})
        message["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"] = {}
        response, replies = await post(client, url, message, headers)
        assert response.status_code == 200
        assert replies[-1]["result"]["resultType"] == "complete"
        assert "refused" in replies[-1]["result"]["content"][0]["text"]  # the upstream's call went on


# -- the wire ------------------------------------------------------------------------------------


async def test_discover_lists_and_results_carry_the_stateless_fields() -> None:
    async with hub_with_alpha() as (url, _), http() as client:
        response, (reply,) = await post(client, url, *request(1, "server/discover"))
        assert response.status_code == 200 and "mcp-session-id" not in response.headers
        result = reply["result"]
        assert result["supportedVersions"] == [VERSION] and result["resultType"] == "complete"
        assert "tools" in result["capabilities"] and result["cacheScope"] == "public"
        assert result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "manifold"
        _, (listed,) = await post(client, url, *request(2, "tools/list"))
        # The SDK upstream does not announce list changes: nothing says how long its list holds.
        assert listed["result"]["ttlMs"] == 0 and listed["result"]["cacheScope"] == "public"
        _, (called,) = await post(
            client, url, *request(3, "tools/call", {"name": "alpha__echo", "arguments": {"text": "a"}})
        )
        assert called["result"]["resultType"] == "complete"
        assert called["result"]["content"][0]["text"] == "alpha: a"
        _, (read,) = await post(client, url, *request(4, "resources/read", {"uri": "manifold://alpha/item://1"}))
        # A session-era upstream says nothing of caching: the read is not to be kept.
        assert (read["result"]["ttlMs"], read["result"]["cacheScope"]) == (0, "private")


async def test_the_stateless_ladder_refuses_with_the_right_codes_and_statuses() -> None:
    async with hub_with_alpha() as (url, _), http() as client:
        call = {"name": "alpha__echo", "arguments": {"text": "a"}}
        message, headers = request(1, "tools/call", call)
        cases: list[tuple[dict[str, Any], dict[str, str], int, int]] = [
            (message, {**headers, "mcp-method": "tools/list"}, 400, -32020),
            (message, {k: v for k, v in headers.items() if k != "mcp-name"}, 400, -32020),
            (message, {**headers, "mcp-name": "alpha__other"}, 400, -32020),
            (rpc(2, "tools/call", {"name": "alpha__echo"}), headers, 400, -32602),  # no envelope
            (rpc(3, "ping", envelope()), headers_for(rpc(3, "ping")), 404, -32601),
            (
                rpc(4, "logging/setLevel", envelope({"level": "info"})),
                headers_for(rpc(4, "logging/setLevel")),
                404,
                -32601,
            ),
            (
                rpc(5, "tools/call", envelope({"name": "nope__x"})),
                headers_for(rpc(5, "tools/call", {"name": "nope__x"})),
                400,
                -32602,
            ),
        ]
        for body, sent, status, code in cases:
            response = await client.post(url, json=body, headers=sent)
            assert (response.status_code, response.json()["error"]["code"]) == (status, code), (body, response.text)
        future = rpc(6, "tools/list", envelope())
        future["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = "2099-01-01"
        response = await client.post(
            url, json=future, headers={**headers_for(future), "mcp-protocol-version": "2099-01-01"}
        )
        assert response.status_code == 400 and response.json()["error"]["code"] == -32022
        assert response.json()["id"] == 6 and response.json()["error"]["data"]["supported"] == [VERSION]
        duplicated = [*headers.items(), ("mcp-method", "tools/call")]
        response = await client.post(url, content=json.dumps(message), headers=duplicated)
        assert response.status_code == 400 and response.json()["error"]["code"] == -32020
        for verb in ("GET", "DELETE"):
            response = await client.request(verb, url, headers={**HEADERS, "mcp-protocol-version": VERSION})
            assert response.status_code == 405
        missing = rpc(7, "resources/read", envelope({"uri": "manifold://nowhere/x"}))
        response = await client.post(url, json=missing, headers=headers_for(missing))
        assert response.status_code == 400 and response.json()["error"]["code"] == -32602
        # After all that, the same caller is served.
        _, replies = await post(client, url, message, headers)
        assert replies[-1]["result"]["content"][0]["text"] == "alpha: a"


async def test_x_mcp_header_arguments_must_be_mirrored_exactly() -> None:
    async with hub_with_alpha() as (url, _), http() as client:
        message, headers = request(
            1, "tools/call", {"name": "alpha__regional", "arguments": {"region": "eu-1", "text": "t"}}
        )
        for sent in (
            {**headers},
            {**headers, "mcp-param-region": "us-2"},
            {**headers, "mcp-param-region": "=?base64?!!?="},
        ):
            response = await client.post(url, json=message, headers=sent)
            assert response.status_code == 400 and response.json()["error"]["code"] == -32020
        _, replies = await post(client, url, message, {**headers, "mcp-param-region": "eu-1"})
        assert replies[-1]["result"]["content"][0]["text"] == "eu-1: t"
        _, replies = await post(client, url, message, {**headers, "mcp-param-region": "=?base64?ZXUtMQ==?="})
        assert replies[-1]["result"]["content"][0]["text"] == "eu-1: t"


async def test_logs_reach_only_requests_that_asked_for_a_level() -> None:
    async with hub_with_alpha() as (url, _), http() as client:
        call = {"name": "alpha__say", "arguments": {"level": "warning", "text": "careful"}}
        _, quiet = await post(client, url, *request(1, "tools/call", call))
        assert [m.get("method") for m in quiet] == [None]
        _, loud = await post(client, url, *request(2, "tools/call", call, meta={LOG_LEVEL: "info"}))
        assert loud[0]["method"] == "notifications/message" and loud[0]["params"]["data"] == "careful"
        _, above = await post(client, url, *request(3, "tools/call", call, meta={LOG_LEVEL: "error"}))
        assert [m.get("method") for m in above] == [None]


async def test_closing_the_stream_cancels_the_call_upstream_and_frees_its_slot() -> None:
    probe = Probe()
    async with hub_with_alpha(probe) as (url, hub), http() as client:
        message, headers = request(1, "tools/call", {"name": "alpha__slow", "arguments": {"seconds": 30}})
        task = asyncio.create_task(client.post(url, json=message, headers=headers))
        await asyncio.wait_for(probe.slow_started.wait(), WAIT)
        task.cancel()
        await asyncio.wait_for(probe.slow_cancelled.wait(), WAIT)
        upstream = hub.pool.upstream("alpha")
        assert upstream is not None
        async with asyncio.timeout(WAIT):
            await upstream.limiter.wait_idle()  # the slot is free again
            await hub.sessions.services.calls.wait_zero()  # and the request no longer counts as in flight


async def test_closing_the_stream_after_progress_came_cancels_the_call_too() -> None:
    probe = Probe()
    async with hub_with_alpha(probe) as (url, hub), http() as client:
        message, headers = request(
            1, "tools/call", {"name": "alpha__stepper", "arguments": {"steps": 3}}, meta={"progressToken": "p"}
        )
        probe.steps.put_nowait(None)
        async with client.stream("POST", url, json=message, headers=headers) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            lines = response.aiter_lines()
            first = await anext(lines)
            while not first.startswith("data:"):
                first = await anext(lines)
            assert json.loads(first[5:])["params"] == {
                "progressToken": "p",
                "progress": 1.0,
                "total": 3.0,
                "message": "step 1",
            }
        # The stream is closed with the call waiting upstream for its second step.
        await asyncio.wait_for(probe.stepper_cancelled.wait(), WAIT)
        upstream = hub.pool.upstream("alpha")
        assert upstream is not None
        async with asyncio.timeout(WAIT):
            await upstream.limiter.wait_idle()
            await hub.sessions.services.calls.wait_zero()
        assert len(hub.modern.calls) == 0 and not probe.stepper_done.is_set()


async def test_subscriptions_listen_carries_a_tool_list_change_of_a_session_era_upstream() -> None:
    async with hub_with_alpha() as (url, _), http() as client:
        listen = rpc(9, "subscriptions/listen", envelope({"notifications": {"toolsListChanged": True}}))
        async with client.stream("POST", url, json=listen, headers=headers_for(listen)) as stream:
            lines = stream.aiter_lines()
            first = json.loads(await _data(lines))
            assert first["method"] == "notifications/subscriptions/acknowledged"
            assert first["params"]["notifications"] == {"toolsListChanged": True}
            assert first["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == 9
            _, replies = await post(client, url, *request(2, "tools/call", {"name": "alpha__grow", "arguments": {}}))
            assert "error" not in replies[-1]
            changed = json.loads(await asyncio.wait_for(_data(lines), WAIT))
            assert changed["method"] == "notifications/tools/list_changed"
            assert changed["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == 9


async def test_listen_streams_resource_updates_of_the_uris_it_chose() -> None:
    probe = Probe()
    async with hub_with_alpha(probe) as (url, _), http() as client:
        wanted = {"resourceSubscriptions": ["manifold://alpha/item://7", "manifold://nowhere/x"]}
        listen = rpc(9, "subscriptions/listen", envelope({"notifications": wanted}))
        async with client.stream("POST", url, json=listen, headers=headers_for(listen)) as stream:
            lines = stream.aiter_lines()
            first = json.loads(await _data(lines))
            assert first["params"]["notifications"] == {"resourceSubscriptions": ["manifold://alpha/item://7"]}
            assert probe.subscribed == ["item://7"]
            call = {"name": "alpha__touch", "arguments": {"uri": "item://7"}}
            await post(client, url, *request(2, "tools/call", call))
            updated = json.loads(await asyncio.wait_for(_data(lines), WAIT))
            assert updated["method"] == "notifications/resources/updated"
            assert updated["params"]["uri"] == "manifold://alpha/item://7"
        async with asyncio.timeout(WAIT):
            while not probe.unsubscribed:
                await probe.subscription_changed.wait()
                probe.subscription_changed.clear()
        assert probe.unsubscribed == ["item://7"]


async def _data(lines: AsyncIterator[str]) -> str:
    async for line in lines:
        if line.startswith("data:") and line[5:].strip():
            return line[5:].strip()
    raise AssertionError("stream ended")


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


KEYS = {"ann": "key-ann-0123456789abcdef", "bob": "key-bob-0123456789abcdef"}


async def test_each_principal_gets_its_own_upstream_session_and_its_tenant_view() -> None:
    async with serve(http_app("alpha")) as up:
        document = {
            "mcpServers": {"alpha": {"url": f"{up}/mcp"}},
            "auth": {"apiKeys": [{"name": n, "sha256": digest(k), "tenant": "t"} for n, k in KEYS.items()]},
            "tenants": {"t": {"tools": {"allow": ["alpha__remember", "alpha__recall"]}}},
        }
        async with run_config(document) as (url, hub), http() as client:

            async def send(who: str, request_id: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
                message, headers = request(request_id, method, params)
                _, replies = await post(client, url, message, {**headers, "authorization": f"Bearer {KEYS[who]}"})
                return replies[-1]

            async def call(who: str, request_id: int, tool: str, arguments: dict[str, Any]) -> str:
                reply = await send(who, request_id, "tools/call", {"name": tool, "arguments": arguments})
                content = reply["result"]["content"]
                return str(content[0]["text"]) if content else ""

            assert await call("ann", 1, "alpha__remember", {"text": "ann's secret"}) == "kept"
            assert await call("ann", 2, "alpha__recall", {}) == "ann's secret"
            assert await call("bob", 3, "alpha__recall", {}) == ""  # nothing of ann's session reaches bob
            assert len(hub.modern.upstreams) == 2
            listed = (await send("bob", 4, "tools/list", {}))["result"]
            assert sorted(tool["name"] for tool in listed["tools"]) == ["alpha__recall", "alpha__remember"]
            assert listed["cacheScope"] == "private"
            refused = await send("bob", 5, "tools/call", {"name": "alpha__echo", "arguments": {"text": "x"}})
            assert refused["error"]["code"] == -32602  # outside the view: as if it did not exist
            message, headers = request(6, "tools/list")
            response = await client.post(url, json=message, headers=headers)
            assert response.status_code == 401  # no credential: refused before anything else


async def test_a_drain_ends_listen_streams_with_their_result_and_does_not_wait_for_them() -> None:
    async with hub_with_alpha(drainTimeout=60) as (url, hub), http() as client:
        listen = rpc(9, "subscriptions/listen", envelope({"notifications": {"toolsListChanged": True}}))
        async with client.stream("POST", url, json=listen, headers=headers_for(listen)) as stream:
            lines = stream.aiter_lines()
            assert json.loads(await _data(lines))["method"] == "notifications/subscriptions/acknowledged"
            async with asyncio.timeout(WAIT):  # far less than drainTimeout: the listen is not a call to wait for
                await hub.drain()
            final = json.loads(await asyncio.wait_for(_data(lines), WAIT))
            assert final["id"] == 9 and final["result"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == 9


async def test_listen_streams_are_bounded_per_caller() -> None:
    async with hub_with_alpha() as (url, hub), http() as client, AsyncExitStack() as streams:
        held = []  # each stream's line iterator, kept: dropping one closes its stream
        for n in range(hub.listeners.max_per_caller):
            listen = rpc(n, "subscriptions/listen", envelope({"notifications": {"toolsListChanged": True}}))
            opened = client.stream("POST", url, json=listen, headers=headers_for(listen))
            lines = (await streams.enter_async_context(opened)).aiter_lines()
            held.append(lines)
            acknowledged = json.loads(await _data(lines))
            assert acknowledged["method"] == "notifications/subscriptions/acknowledged"
        extra = rpc(99, "subscriptions/listen", envelope({"notifications": {"toolsListChanged": True}}))
        response = await client.post(url, json=extra, headers=headers_for(extra))
        assert response.status_code == 429 and response.json()["error"]["code"] == -32029
        _, (listed,) = await post(client, url, *request(100, "tools/list"))
        assert listed["result"]["tools"]  # the caller is otherwise served
        assert len(hub.listeners) == hub.listeners.max_per_caller
