"""Upstreams that speak only 2026-07-28, through the hub, to clients of either era, over real sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import mcp_types as types
import pytest
from mcp import Client
from mcp.client import ClientRequestContext
from mcp.shared.exceptions import MCPError

from hub.runtime import Hub
from tests.modern_wire import post, request
from tests.servers import run_hub, serve
from tests.upstreams import Probe, modern_only_app
from tests.wire import WAIT

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


@asynccontextmanager
async def hub_with_neo(probe: Probe | None = None, **server: Any) -> AsyncIterator[tuple[str, Hub]]:
    upstream = serve(modern_only_app("neo", probe))
    async with upstream as up, run_hub({"neo": {"url": f"{up}/mcp", **server}}) as served:
        yield served


def colours(*names: str) -> Any:
    given = iter(names)
    asked: list[str] = []

    async def elicit(context: ClientRequestContext, params: types.ElicitRequestParams) -> types.ElicitResult:
        assert isinstance(params, types.ElicitRequestFormParams)
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"colour": next(given)})

    return elicit, asked


def text(result: types.CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


async def test_the_hub_finds_out_an_upstream_speaks_only_2026_07_28_and_says_so() -> None:
    async with hub_with_neo() as (_, hub):
        (status,) = hub.health()["upstreams"]
        assert (status["state"], status["protocol"]) == ("up", "2026-07-28")
        assert {"neo__echo", "neo__pick_two"} <= {tool["name"] for tool in hub.catalog.items("tools")}


async def test_a_session_era_client_answers_two_rounds_of_input_as_ordinary_requests() -> None:
    elicit, asked = colours("red", "blue")
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async with hub_with_neo() as (url, _), Client(url, mode="legacy", elicitation_callback=elicit) as client:
        assert client.protocol_version == "2025-11-25"
        assert text(await client.call_tool("neo__pick_two", {})) == "neo: red then blue"
        assert asked == ["first colour?", "after red, which colour?"]
        result = await client.call_tool("neo__progress", {"steps": 3}, progress_callback=on_progress)
        assert text(result) == "3 steps done" and seen == [1.0, 2.0, 3.0]


async def test_the_upstream_sees_the_capabilities_of_the_hubs_client_and_refuses_what_it_lacks() -> None:
    async with hub_with_neo() as (url, _), Client(url, mode="legacy") as client:
        with pytest.raises(MCPError) as refused:
            await client.call_tool("neo__pick", {})
        assert refused.value.error.code == -32021 and "elicitation" in refused.value.error.message
        assert text(await client.call_tool("neo__echo", {"text": "still"})) == "neo: still"


async def test_a_stateless_client_gets_the_upstreams_input_requests_through_the_hub() -> None:
    elicit, asked = colours("green", "teal")
    async with hub_with_neo() as (url, hub), Client(url, mode="auto", elicitation_callback=elicit) as client:
        assert client.protocol_version == "2026-07-28"
        assert text(await client.call_tool("neo__pick_two", {})) == "neo: green then teal"
        assert len(asked) == 2 and hub.modern.calls.parked == 0


async def test_list_changes_of_a_stateless_upstream_reach_session_era_clients() -> None:
    changed = asyncio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    async with hub_with_neo() as (url, _), Client(url, mode="legacy", message_handler=on_message) as client:
        assert text(await client.call_tool("neo__grow", {})) == "grown"
        await asyncio.wait_for(changed.wait(), WAIT)
        names = {tool.name for tool in (await client.list_tools(cache_mode="bypass")).tools}
        assert "neo__sprout" in names


async def test_closing_a_stateless_clients_stream_cancels_the_call_on_the_upstream() -> None:
    probe = Probe()
    async with hub_with_neo(probe) as (url, hub), httpx.AsyncClient(timeout=WAIT, trust_env=False) as http:
        message, headers = request(1, "tools/call", {"name": "neo__slow", "arguments": {"seconds": 30}})
        upstream = hub.pool.upstream("neo")
        assert upstream is not None
        task = asyncio.create_task(http.post(url, json=message, headers=headers))
        await asyncio.wait_for(probe.slow_started.wait(), WAIT)
        task.cancel()
        await asyncio.wait_for(probe.slow_cancelled.wait(), WAIT)  # the hub closed its stream to the upstream
        async with asyncio.timeout(WAIT):
            await upstream.limiter.wait_idle()
        _, replies = await post(http, url, *request(2, "tools/call", {"name": "neo__echo", "arguments": {"text": "x"}}))
        assert replies[-1]["result"]["content"][0]["text"] == "neo: x"


async def test_protocol_session_refuses_to_guess_and_the_upstream_stays_down() -> None:
    async with hub_with_neo(protocol="session") as (_, hub):
        (status,) = hub.health()["upstreams"]
        assert status["state"] != "up" and status["lastError"]


async def test_a_stateless_client_is_asked_under_the_upstreams_own_keys() -> None:
    async with serve(modern_only_app("neo")) as up, run_hub({"neo": {"url": f"{up}/mcp"}}) as (url, _):
        async with httpx.AsyncClient(timeout=WAIT, trust_env=False) as http:
            _, direct = await post(http, f"{up}/mcp", *request(1, "tools/call", {"name": "pick", "arguments": {}}))
            _, through = await post(http, url, *request(1, "tools/call", {"name": "neo__pick", "arguments": {}}))
        upstream_keys = set(direct[-1]["result"]["inputRequests"])
        assert set(through[-1]["result"]["inputRequests"]) == upstream_keys
        assert through[-1]["result"]["requestState"] != direct[-1]["result"].get("requestState")  # the hub's own


async def test_arguments_the_upstreams_schema_marks_go_in_mcp_param_headers() -> None:
    async with hub_with_neo() as (url, _), Client(url, mode="legacy") as client:
        assert text(await client.call_tool("neo__regional", {"region": "eu-1", "text": "t"})) == "eu-1: t"
        # Not safe in a header as it is: sent base64-wrapped, and the upstream reads it back.
        assert text(await client.call_tool("neo__regional", {"region": "zürich", "text": "t"})) == "zürich: t"


async def test_a_stateless_upstreams_lists_are_listed_again_when_their_ttl_runs_out() -> None:
    changed = asyncio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    async with (
        serve(modern_only_app("neo", list_ttl_ms=300)) as up,
        run_hub({"neo": {"url": f"{up}/mcp"}}) as (url, hub),
        Client(url, mode="legacy", message_handler=on_message) as client,
    ):
        listing = hub.pool.upstream("neo").listing  # type: ignore[union-attr]
        assert listing is not None and listing.ttl_ms == 300
        assert text(await client.call_tool("neo__grow_quietly", {})) == "grown quietly"
        await asyncio.wait_for(changed.wait(), WAIT)  # no notification: the hub listed again on time
        assert "neo__seedling" in {tool.name for tool in (await client.list_tools(cache_mode="bypass")).tools}
        async with httpx.AsyncClient(timeout=WAIT, trust_env=False) as http:
            _, (listed,) = await post(http, url, *request(1, "tools/list"))
        assert listed["result"]["ttlMs"] == 300  # never fresher than the upstream's own word


async def test_a_session_era_clients_subscription_to_a_stateless_upstream_rides_a_listen_stream() -> None:
    updated = asyncio.Event()
    seen: list[str] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            seen.append(str(message.params.uri))
            updated.set()

    async with hub_with_neo() as (url, _), Client(url, mode="legacy", message_handler=on_message) as client:
        await client.subscribe_resource("manifold://neo/note://7")  # the era has no subscribe: the hub listens
        assert text(await client.call_tool("neo__touch", {"uri": "note://7"})) == "touched"
        await asyncio.wait_for(updated.wait(), WAIT)
        assert seen == ["manifold://neo/note://7"]
        await client.unsubscribe_resource("manifold://neo/note://7")


async def test_a_log_level_reaches_a_stateless_upstream_with_each_request() -> None:
    logged: list[str] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logged.append(str(params.data))

    async with hub_with_neo() as (url, _), Client(url, mode="legacy", logging_callback=on_log) as client:
        assert text(await client.call_tool("neo__say", {"text": "before"})) == "said"
        await client.set_logging_level("info")  # the era has no setLevel: it goes with every request
        assert text(await client.call_tool("neo__say", {"text": "after"})) == "said"
    assert logged == ["after"]
    async with hub_with_neo() as (url, _), httpx.AsyncClient(timeout=WAIT, trust_env=False) as http:
        call = {"name": "neo__say", "arguments": {"text": "asked"}}
        _, quiet = await post(http, url, *request(1, "tools/call", call))
        _, loud = await post(
            http, url, *request(2, "tools/call", call, meta={"io.modelcontextprotocol/logLevel": "info"})
        )
    assert [m.get("method") for m in quiet] == [None]
    assert loud[0]["method"] == "notifications/message" and loud[0]["params"]["data"] == "asked"
