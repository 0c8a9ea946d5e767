"""End to end: the official SDK client, the hub on uvicorn, SDK upstreams over both transports."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import Any

import mcp_types as types
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from tests.servers import reserve_port, run_config, run_hub, serve, two_upstreams
from tests.upstreams import Probe, http_app
from tests.wire import RawClient

pytestmark = pytest.mark.anyio

WAIT = 10.0


@pytest.mark.parametrize(("mode", "version"), [("auto", "2026-07-28"), ("legacy", "2025-11-25")])
async def test_merged_catalog_from_both_transports(mode: Any, version: str) -> None:
    async with two_upstreams() as (url, _), Client(url, mode=mode) as client:
        assert client.protocol_version == version
        names = {tool.name for tool in (await client.list_tools()).tools}
        for upstream in ("alpha", "beta"):
            assert {f"{upstream}__echo", f"{upstream}__progress", f"{upstream}__slow"} <= names
        prompts = {prompt.name for prompt in (await client.list_prompts()).prompts}
        assert {"alpha__greet", "beta__greet"} <= prompts
        uris = {str(resource.uri) for resource in (await client.list_resources()).resources}
        assert {"manifold://alpha/file:///readme.txt", "manifold://beta/file:///readme.txt"} <= uris
        templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
        assert templates == {"manifold://alpha/item://{item_id}", "manifold://beta/item://{item_id}"}


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_calls_reach_the_right_upstream(mode: Any) -> None:
    async with two_upstreams() as (url, _), Client(url, mode=mode) as client:
        for upstream in ("alpha", "beta"):
            result = await client.call_tool(f"{upstream}__echo", {"text": "hi"})
            assert result.content[0].text == f"{upstream}: hi"  # type: ignore[union-attr]
            prompt = await client.get_prompt(f"{upstream}__greet", {"who": "Ada"})
            assert prompt.messages[0].content.text == f"Hello Ada, from {upstream}"  # type: ignore[union-attr]
            read = await client.read_resource(f"manifold://{upstream}/file:///readme.txt")
            assert read.contents[0].text == f"readme of {upstream}"  # type: ignore[union-attr]
            assert str(read.contents[0].uri) == f"manifold://{upstream}/file:///readme.txt"
            item = await client.read_resource(f"manifold://{upstream}/item://42")
            assert item.contents[0].text == f"{upstream} item 42"  # type: ignore[union-attr]


async def test_structured_content_and_tool_errors_pass_through() -> None:
    async with two_upstreams() as (url, _), Client(url) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert tools["alpha__forecast"].output_schema is not None
        result = await client.call_tool("alpha__forecast", {"city": "Oslo"})
        assert result.structured_content == {"city": "Oslo", "celsius": 21.5}
        failed = await client.call_tool("beta__fail", {"reason": "boom"})
        assert failed.is_error
        assert "boom" in failed.content[0].text  # type: ignore[union-attr]


@pytest.mark.parametrize("upstream", ["alpha", "beta"])
async def test_progress_is_relayed_in_order_before_the_result(upstream: str) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with two_upstreams() as (url, _), Client(url) as client:
        result = await client.call_tool(f"{upstream}__progress", {"steps": 5}, progress_callback=on_progress)
        assert result.content[0].text == "5 steps done"  # type: ignore[union-attr]
    assert seen == [(float(i), 5.0, f"step {i}") for i in range(1, 6)]


async def test_progress_carries_the_clients_own_token_on_the_calls_stream() -> None:
    async with two_upstreams() as (url, _), RawClient(url) as raw:
        events = await raw.stream(
            "tools/call", {"name": "beta__progress", "arguments": {"steps": 4}, "_meta": {"progressToken": "mine-7"}}
        )
    progress = [e for e in events if e.get("method") == "notifications/progress"]
    assert [p["params"]["progressToken"] for p in progress] == ["mine-7"] * 4
    assert [p["params"]["progress"] for p in progress] == [1, 2, 3, 4]
    assert events[-1]["result"]["content"][0]["text"] == "4 steps done"
    assert events.index(progress[-1]) < len(events) - 1


@pytest.mark.parametrize("upstream", ["alpha", "beta"])
async def test_cancellation_reaches_the_upstream_and_frees_the_slot(upstream: str) -> None:
    probe = Probe()
    mode = {"maxConcurrency": 1}
    async with (
        two_upstreams(probe, probe, **mode) as (url, hub),
        Client(url) as client,
    ):
        call = asyncio.create_task(client.call_tool(f"{upstream}__slow", {"seconds": 60}))
        await asyncio.wait_for(probe.slow_started.wait(), WAIT)
        call.cancel()
        await asyncio.wait_for(probe.slow_cancelled.wait(), WAIT)
        # The one slot is free again: the next call is served, not refused or queued forever.
        result = await asyncio.wait_for(client.call_tool(f"{upstream}__echo", {"text": "after"}), WAIT)
        assert result.content[0].text == f"{upstream}: after"  # type: ignore[union-attr]
        assert hub.pool.in_flight(upstream) == 0


@pytest.mark.parametrize("session_mode", ["isolated", "shared"])
async def test_two_clients_with_the_same_request_ids_get_their_own_answers(session_mode: str) -> None:
    probe = Probe(expected_arrivals=2)
    async with (
        two_upstreams(probe, probe, sessionMode=session_mode) as (url, _),
        RawClient(url) as first,
        RawClient(url) as second,
    ):
        # Both send id 7 at once, and both calls are in flight upstream together.
        replies = await asyncio.gather(
            first.call("alpha__rendezvous", {"text": "from first"}, request_id=7),
            second.call("alpha__rendezvous", {"text": "from second"}, request_id=7),
        )
    assert [r["id"] for r in replies] == [7, 7]
    assert replies[0]["result"]["content"][0]["text"] == "alpha: from first"
    assert replies[1]["result"]["content"][0]["text"] == "alpha: from second"


async def test_an_upstream_down_at_start_does_not_stop_the_others_and_joins_when_up() -> None:
    dead = reserve_port()
    changed = asyncio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    async with AsyncExitStack() as stack:
        alpha = await stack.enter_async_context(serve(http_app("alpha")))
        late_url = f"http://127.0.0.1:{dead.getsockname()[1]}/mcp"
        url, hub = await stack.enter_async_context(
            run_hub({"alpha": {"url": f"{alpha}/mcp"}, "late": {"url": late_url}})
        )
        health = hub.health()
        assert health["status"] == "degraded"
        late = next(u for u in health["upstreams"] if u["name"] == "late")
        assert late["state"] == "down" and late["lastError"]
        client = await stack.enter_async_context(Client(url, mode="legacy", message_handler=on_message))
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert "alpha__echo" in names and not any(n.startswith("late__") for n in names)
        result = await client.call_tool("alpha__echo", {"text": "still here"})
        assert result.content[0].text == "alpha: still here"  # type: ignore[union-attr]

        await stack.enter_async_context(serve(http_app("late"), sock=dead))
        hub.pool.reconnect("late")
        await asyncio.wait_for(changed.wait(), WAIT)
        names = {tool.name for tool in (await client.list_tools(cache_mode="bypass")).tools}
        assert "late__echo" in names
        assert hub.health()["status"] == "ok"


async def test_unknown_tool_is_an_error_that_names_it() -> None:
    async with two_upstreams() as (url, _), Client(url) as client:
        with pytest.raises(MCPError) as caught:
            await client.call_tool("alpha__nope", {})
    assert caught.value.error.code == -32602
    assert "alpha__nope" in caught.value.error.message


async def test_the_sdk_client_connects_with_a_bearer_key_as_the_readme_shows() -> None:
    import hashlib

    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    key = "mfd_sdk-key"
    entry = {"name": "sdk", "sha256": hashlib.sha256(key.encode()).hexdigest(), "tenant": "t"}
    async with serve(http_app("alpha")) as alpha:
        document = {
            "mcpServers": {"alpha": {"url": f"{alpha}/mcp"}},
            "auth": {"apiKeys": [entry]},
            "tenants": {"t": {}},
        }
        async with (
            run_config(document) as (url, hub),
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}) as http,
            Client(streamable_http_client(url, http_client=http), mode="legacy") as client,
        ):
            result = await client.call_tool("alpha__echo", {"text": "with a key"})
            assert result.content[0].text == "alpha: with a key"  # type: ignore[union-attr]
            assert [s.caller.principal for s in hub.sessions] == ["key:sdk"]
