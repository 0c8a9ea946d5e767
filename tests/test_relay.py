"""What upstreams send back through the hub: server-to-client requests, log messages, list changes,
resource updates, completions. Driven by the SDK client's own callbacks, over both upstream transports."""

from __future__ import annotations

import asyncio
from typing import Any

import mcp_types as types
import pytest
from mcp import Client
from mcp.client import ClientRequestContext

from tests.servers import two_upstreams
from tests.upstreams import Probe

pytestmark = pytest.mark.anyio

WAIT = 10.0
BOTH = pytest.mark.parametrize("upstream", ["alpha", "beta"])


def text(result: types.CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


def answer_with(reply: str) -> Any:
    async def sampling(
        context: ClientRequestContext, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult:
        prompt = params.messages[0].content
        assert isinstance(prompt, types.TextContent)
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text=f"{reply} ({prompt.text})"), model="m"
        )

    return sampling


@BOTH
async def test_sampling_round_trips_through_the_clients_callback(upstream: str) -> None:
    async with two_upstreams() as (url, _), Client(url, sampling_callback=answer_with("hello")) as client:
        result = await client.call_tool(f"{upstream}__ask_model", {"prompt": "hi?"})
    assert text(result) == f"{upstream} heard: hello (hi?)"


async def test_two_clients_sampling_at_once_each_answer_reaches_the_upstream_call_that_asked() -> None:
    both_asked = asyncio.Barrier(2)

    def client_named(who: str) -> Any:
        async def sampling(context: ClientRequestContext, params: types.CreateMessageRequestParams) -> Any:
            await asyncio.wait_for(both_asked.wait(), WAIT)  # both requests are out before either is answered
            return types.CreateMessageResult(
                role="assistant", content=types.TextContent(type="text", text=who), model="m"
            )

        return sampling

    async with (
        two_upstreams(sessionMode="shared") as (url, _),
        Client(url, sampling_callback=client_named("first")) as first,
        Client(url, sampling_callback=client_named("second")) as second,
    ):
        results = await asyncio.gather(
            first.call_tool("alpha__ask_model", {"prompt": "1"}),
            second.call_tool("alpha__ask_model", {"prompt": "2"}),
        )
    assert [text(r) for r in results] == ["alpha heard: first", "alpha heard: second"]


async def test_a_client_without_the_capability_gets_the_upstream_a_clear_error() -> None:
    async with two_upstreams() as (url, _), Client(url) as client:
        sampled = await client.call_tool("alpha__ask_model", {"prompt": "hi?"})
        elicited = await client.call_tool("alpha__ask_user", {"question": "colour?"})
    assert text(sampled) == "refused: the client did not declare the sampling capability"
    assert text(elicited) == "refused: the client did not declare the elicitation capability"


@BOTH
async def test_elicitation_round_trips(upstream: str) -> None:
    asked: list[str] = []

    async def elicit(context: ClientRequestContext, params: types.ElicitRequestParams) -> types.ElicitResult:
        assert isinstance(params, types.ElicitRequestFormParams)
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"colour": "teal"})

    async with two_upstreams() as (url, _), Client(url, elicitation_callback=elicit) as client:
        result = await client.call_tool(f"{upstream}__ask_user", {"question": "favourite colour?"})
    assert text(result) == f"{upstream}: the user chose teal"
    assert asked == ["favourite colour?"]


@BOTH
async def test_roots_requests_reach_the_client_and_roots_changes_reach_the_upstream(upstream: str) -> None:
    probe = Probe()

    async def roots(context: ClientRequestContext) -> types.ListRootsResult:
        return types.ListRootsResult(roots=[types.Root.model_validate({"uri": "file:///work", "name": "work"})])

    async with two_upstreams(probe, probe) as (url, _), Client(url, mode="legacy", list_roots_callback=roots) as client:
        assert text(await client.call_tool(f"{upstream}__client_roots", {})) == "file:///work"
        await client.send_roots_list_changed()
        await asyncio.wait_for(probe.roots_changed.wait(), WAIT)


@BOTH
async def test_log_level_reaches_upstream_sessions_and_messages_name_their_upstream(upstream: str) -> None:
    probe = Probe()
    messages: list[types.LoggingMessageNotificationParams] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        messages.append(params)

    async with two_upstreams(probe, probe) as (url, _), Client(url, mode="legacy", logging_callback=on_log) as client:
        await client.set_logging_level("warning")  # before any upstream session is open: applied on open
        assert text(await client.call_tool(f"{upstream}__say", {"level": "error", "text": "disk on fire"})) == "said"
        await client.set_logging_level("debug")  # now the upstream session is open: forwarded at once
    assert probe.log_levels == ["warning", "debug"]
    assert [(m.level, m.logger, m.data) for m in messages] == [("error", f"{upstream}/tests", "disk on fire")]


async def test_completion_is_routed_by_its_prompt_reference() -> None:
    async with two_upstreams() as (url, _), Client(url) as client:
        alpha = await client.complete(
            types.PromptReference(type="ref/prompt", name="alpha__greet"), {"name": "who", "value": "A"}
        )
        beta = await client.complete(
            types.PromptReference(type="ref/prompt", name="beta__greet"), {"name": "who", "value": "G"}
        )
    assert alpha.completion.values == ["alpha:Ada", "alpha:Alan"]
    assert beta.completion.values == ["beta:Grace"]


@BOTH
async def test_resource_updates_reach_subscribed_sessions_with_the_public_uri(upstream: str) -> None:
    probe = Probe()
    updated: list[str] = []
    arrived = asyncio.Event()
    public = f"manifold://{upstream}/file:///readme.txt"

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            updated.append(str(message.params.uri))
            arrived.set()

    async with (
        two_upstreams(probe, probe) as (url, _),
        Client(url, mode="legacy", message_handler=on_message) as client,
    ):
        await client.subscribe_resource(public)
        assert probe.subscribed == ["file:///readme.txt"]
        await client.call_tool(f"{upstream}__touch", {"uri": "file:///readme.txt"})
        await asyncio.wait_for(arrived.wait(), WAIT)
        await client.unsubscribe_resource(public)
        assert probe.unsubscribed == ["file:///readme.txt"]
    assert updated == [public]


@BOTH
async def test_an_upstreams_list_changed_refreshes_the_catalog_and_tells_clients(upstream: str) -> None:
    changed = asyncio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    async with two_upstreams() as (url, _), Client(url, mode="legacy", message_handler=on_message) as client:
        assert text(await client.call_tool(f"{upstream}__grow", {})) == "grown"
        await asyncio.wait_for(changed.wait(), WAIT)
        names = {tool.name for tool in (await client.list_tools(cache_mode="bypass")).tools}
        assert f"{upstream}__grown" in names
        assert text(await client.call_tool(f"{upstream}__grown", {})) == "I am new"
