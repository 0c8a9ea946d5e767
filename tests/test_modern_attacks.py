"""Attacks on the 2026-07-28 era over real sockets: the refusal (code, status), and a victim unharmed."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

import httpx
import mcp_types as types
import pytest
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from pydantic import Field
from starlette.types import ASGIApp

from hub.runtime import Hub
from tests.modern_wire import envelope, headers_for, post
from tests.servers import run_config, serve
from tests.upstreams import Colour, Probe, http_app
from tests.wire import WAIT, rpc

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

NAMES = ["ann", "bob", "eve", *(f"p{i}" for i in range(17))]
KEYS = {name: f"key-{name}-0123456789abcdef" for name in NAMES}
API_KEYS = [
    {"name": n, "sha256": hashlib.sha256(k.encode()).hexdigest(), "tenant": "zeta" if n == "eve" else "acme"}
    for n, k in KEYS.items()
]
Served = tuple[str, Hub]


@dataclass
class Gamma:
    """What reached the extra upstream of these tests."""

    answered: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    crowd: int = 1
    """How many subscribes each subscribe waits for (a few seconds at most): a window as wide as can be."""
    subscribing: int = 0
    crowded: asyncio.Event = field(default_factory=asyncio.Event)


def gamma_app(gamma: Gamma) -> ASGIApp:
    """An upstream with an integer header argument, a call that asks then works on, and a slow subscribe."""
    server = MCPServer("gamma", version="1.0.0", log_level="WARNING")

    @server.tool()
    def shard(n: Annotated[int, Field(json_schema_extra={"x-mcp-header": "Shard"})]) -> str:
        return f"shard {n}"

    @server.tool()
    async def ask_then_work(ctx: Context) -> str:
        await ctx.elicit("colour?", Colour)
        gamma.answered.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            gamma.cancelled.set()
            raise
        return "worked"

    @server.resource("box://{n}", mime_type="text/plain")
    def box(n: str) -> str:
        return f"box {n}"

    async def subscribe(ctx: Any, params: types.SubscribeRequestParams) -> types.EmptyResult:
        gamma.subscribing += 1
        if gamma.subscribing >= gamma.crowd:
            gamma.crowded.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(gamma.crowded.wait(), 3)
        return types.EmptyResult()

    server._lowlevel_server.add_request_handler("resources/subscribe", types.SubscribeRequestParams, subscribe)
    return server.streamable_http_app(streamable_http_path="/mcp")


@asynccontextmanager
async def hub(probe: Any = None, gamma: Any = None, tenants: Any = None, **settings: Any) -> AsyncIterator[Served]:
    """A hub (API keys: ann, bob, p0..p16 of acme, eve of zeta) before alpha and gamma; ``alpha`` configures alpha."""
    async with AsyncExitStack() as stack:
        up = await stack.enter_async_context(serve(http_app("alpha", probe or Probe())))
        down = await stack.enter_async_context(serve(gamma_app(gamma or Gamma())))
        alpha = {"url": f"{up}/mcp", **settings.pop("alpha", {})}
        document = {
            "hub": settings,
            "mcpServers": {"alpha": alpha, "gamma": {"url": f"{down}/mcp"}},
            "auth": {"apiKeys": API_KEYS},
            "tenants": {"acme": {}, "zeta": {}, **(tenants or {})},
        }
        yield await stack.enter_async_context(run_config(document))


def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=WAIT, trust_env=False)


class Who:
    """One principal's stateless requests."""

    def __init__(self, http: httpx.AsyncClient, url: str, name: str) -> None:
        self.http, self.url, self.name = http, url, name
        self.ids = iter(range(1, 100_000))

    def message(self, method: str, params: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        return rpc(next(self.ids), method, envelope(params, **kw))

    def headers(self, message: dict[str, Any], **extra: str) -> dict[str, str]:
        return {**headers_for(message), "authorization": f"Bearer {KEYS[self.name]}", **extra}

    async def send(self, method: str, params: dict[str, Any] | None = None, **kw: Any) -> tuple[int, dict[str, Any]]:
        message = self.message(method, params, **kw)
        response, replies = await post(self.http, self.url, message, self.headers(message))
        return response.status_code, replies[-1] if replies else {}

    async def call(self, tool: str, arguments: dict[str, Any] | None = None, **kw: Any) -> str:
        status, reply = await self.send("tools/call", {"name": tool, "arguments": arguments or {}}, **kw)
        assert status == 200 and "result" in reply, (status, reply)
        return str(reply["result"]["content"][0]["text"])

    async def ask(self, tool: str = "alpha__ask_user") -> dict[str, Any]:
        status, reply = await self.send("tools/call", {"name": tool, "arguments": {"question": "colour?"}})
        assert status == 200 and reply["result"]["resultType"] == "input_required", reply
        return dict(reply["result"])

    async def answer(self, asked: dict[str, Any], responses: Any = None, tool: str = "alpha__ask_user") -> Any:
        if responses is None:
            responses = {key: {"action": "accept", "content": {"colour": "red"}} for key in asked["inputRequests"]}
        retry = {"name": tool, "arguments": {"question": "colour?"}, "requestState": asked["requestState"]}
        return await self.send("tools/call", {**retry, "inputResponses": responses})

    async def listen(self, notifications: dict[str, Any]) -> tuple[httpx.Response, AsyncIterator[str] | None]:
        """A listen stream opened (the caller closes it), and its lines; no lines when it was refused."""
        message = self.message("subscriptions/listen", {"notifications": notifications})
        request = self.http.build_request("POST", self.url, json=message, headers=self.headers(message))
        response = await self.http.send(request, stream=True)
        if response.status_code != 200:
            await response.aread()
            return response, None
        return response, response.aiter_lines()


async def first_event(lines: AsyncIterator[str]) -> dict[str, Any]:
    async for line in lines:
        if line.startswith("data:") and line[5:].strip():
            return dict(json.loads(line[5:]))
    raise AssertionError("stream ended")


def refused(outcome: tuple[int, dict[str, Any]], status: int, code: int) -> bool:
    got, reply = outcome
    return got == status and reply.get("error", {}).get("code") == code


def text(outcome: tuple[int, dict[str, Any]]) -> str:
    return str(outcome[1]["result"]["content"][0]["text"])


def code_of(response: httpx.Response) -> tuple[int, int | None]:
    return response.status_code, response.json().get("error", {}).get("code")


# -- requestState and inputResponses ----------------------------------------------------------------
async def test_a_retry_without_this_hubs_state_or_an_answer_of_the_right_shape_leaves_the_call_parked() -> None:
    async with hub() as (url, served), hub() as (other_url, other), client() as http:
        ann = Who(http, url, "ann")
        asked = await ann.ask()
        # The same principal, on another hub process (another key): the state does not open there.
        assert refused(await Who(http, other_url, "ann").answer(asked), 400, -32602) and other.modern.calls.parked == 0
        (key,) = asked["inputRequests"]
        good = {"action": "accept", "content": {"colour": "teal"}}
        for bad in ([good], "red", {key: "red"}, {key: [good]}, {"q999": good}, {}, False, 7):
            assert refused(await ann.answer(asked, bad), 400, -32602), bad
            assert served.modern.calls.parked == 1
        # An answer for a key never asked, beside the right one, is ignored.
        assert text(await ann.answer(asked, {key: good, "q999": {"x": 1}})) == "alpha: the user chose teal"


async def test_closing_the_retry_stream_of_a_resumed_call_cancels_it_upstream() -> None:
    gamma = Gamma()
    async with hub(gamma=gamma) as (url, served), client() as http:
        ann = Who(http, url, "ann")
        asked = await ann.ask("gamma__ask_then_work")
        retry = asyncio.create_task(ann.answer(asked, tool="gamma__ask_then_work"))
        await asyncio.wait_for(gamma.answered.wait(), WAIT)
        retry.cancel()
        await asyncio.wait_for(gamma.cancelled.wait(), WAIT)
        async with asyncio.timeout(WAIT):
            await served.sessions.services.calls.wait_zero()  # the retry's request is over
        assert len(served.modern.calls) == 0 and served.modern.calls.parked == 0
        assert await ann.call("alpha__echo", {"text": "still here"}) == "alpha: still here"


# -- what is no stateless request ------------------------------------------------------------------
async def test_responses_notifications_batches_and_deep_or_huge_bodies_are_refused_and_harm_nobody() -> None:
    async with hub(maxBodyBytes=65536) as (url, served), client() as http:
        ann, eve = Who(http, url, "ann"), Who(http, url, "eve")
        asked = await ann.ask()
        base = eve.headers(eve.message("tools/list"))
        answer = {"jsonrpc": "2.0", "id": 1, "result": {"action": "accept", "content": {"colour": "x"}}}
        cancel: dict[str, Any] = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}}
        notified = {**base, "mcp-method": "notifications/cancelled"}
        deep: dict[str, Any] = {}
        for _ in range(100):
            deep = {"d": deep}
        cases: list[tuple[Any, dict[str, str], int, int | None]] = [
            (answer, {**base, "mcp-method": ""}, 400, -32600),  # a response: this era's clients send none
            ({**cancel, "params": envelope(cancel["params"])}, notified, 202, None),  # acts on nothing
            (cancel, notified, 400, -32602),  # no envelope
            ([eve.message("tools/list")], base, 400, -32600),  # a batch
            (eve.message("tools/list", {"_meta": {"deep": deep}}), base, 400, -32600),
            (eve.message("tools/list", {"_meta": {"big": "b" * 70000}}), base, 413, -32600),
        ]
        for body, sent, status, code in cases:
            response = await http.post(url, content=json.dumps(body), headers=sent)
            assert response.status_code == status and (code is None or code_of(response)[1] == code), response.text
        # A large _meta under the limit goes through; the parked call is untouched by all that.
        assert await eve.call("alpha__echo", {"text": "x"}, meta={"big": "b" * 30000}) == "alpha: x"
        assert served.modern.calls.parked == 1
        assert text(await ann.answer(asked)) == "alpha: the user chose red"


# -- headers ---------------------------------------------------------------------------------------
def b64(raw: bytes) -> bytes:
    return b"=?base64?" + base64.b64encode(raw) + b"?="


async def test_mcp_name_must_match_byte_for_byte_raw_utf8_and_base64_tricks_do_not() -> None:
    async with hub() as (url, _), client() as http:
        eve = Who(http, url, "eve")
        name = "alpha__echóo"  # 13 bytes: its base64 is padded
        message = eve.message("tools/call", {"name": name, "arguments": {"text": "x"}})
        base: dict[str, Any] = eve.headers(message)
        for sent in (
            name.encode(),  # raw UTF-8 reads as latin-1: not the name
            b64(b"alpha__echo"),  # the name of another tool
            b64(name.encode() + b"\r\nX-Injected: 1"),
            b"=?base64?" + base64.b64encode(name.encode()).rstrip(b"=") + b"?=",  # unpadded: not canonical
            b"=?BASE64?" + base64.b64encode(name.encode()) + b"?=",
        ):
            response = await http.post(url, json=message, headers={**base, "mcp-name": sent})
            assert code_of(response) == (400, -32020), sent
        response = await http.post(url, json=message, headers={**base, "mcp-name": b64(name.encode())})
        assert code_of(response) == (400, -32602)  # the right name, in base64: then an unknown tool
        assert await eve.call("alpha__echo", {"text": "y"}) == "alpha: y"


async def test_an_mcp_param_header_sent_twice_is_refused_like_a_routing_header() -> None:
    async with hub() as (url, _), client() as http:
        eve = Who(http, url, "eve")
        message = eve.message("tools/call", {"name": "alpha__regional", "arguments": {"region": "us-2", "text": "t"}})
        # A balancer routing on the first Mcp-Param-Region sees eu-1; the hub reads the last and serves us-2.
        sent = [*eve.headers(message).items(), ("mcp-param-region", "eu-1"), ("mcp-param-region", "us-2")]
        response = await http.post(url, content=json.dumps(message), headers=sent)
        assert code_of(response) == (400, -32020), response.text


async def test_an_integer_header_must_name_the_same_integer() -> None:
    async with hub() as (url, _), client() as http:
        eve = Who(http, url, "eve")
        for value, header in ((2**53 + 1, str(2**53)), (50, "5_0")):
            message = eve.message("tools/call", {"name": "gamma__shard", "arguments": {"n": value}})
            response = await http.post(url, json=message, headers=eve.headers(message, **{"mcp-param-shard": header}))
            assert code_of(response) == (400, -32020), response.text  # the tool would get another number


# -- tenants, views and limits ---------------------------------------------------------------------

HIDDEN = {
    "tools": {"allow": ["alpha__echo"]},
    "prompts": {"deny": ["*"]},
    "resources": {"deny": ["manifold://alpha/*"]},
}
COMPLETE = {"ref": {"type": "ref/prompt", "name": "alpha__greet"}, "argument": {"name": "who", "value": "A"}}


async def test_what_a_tenant_hides_answers_like_what_does_not_exist_by_every_stateless_method() -> None:
    probe = Probe()
    async with hub(probe, tenants={"zeta": HIDDEN}) as (url, _), client() as http:
        eve, ann = Who(http, url, "eve"), Who(http, url, "ann")
        assert await ann.call("alpha__remember", {"text": "ann's"}) == "kept"
        pairs: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
            ("tools/call", {"name": "alpha__recall", "arguments": {}}, {"name": "alpha__nothing", "arguments": {}}),
            ("prompts/get", {"name": "alpha__greet", "arguments": {"who": "x"}}, {"name": "alpha__nothing"}),
            ("resources/read", {"uri": "manifold://alpha/item://7"}, {"uri": "manifold://alpha/nothing"}),
            ("completion/complete", COMPLETE, {**COMPLETE, "ref": {"type": "ref/prompt", "name": "alpha__nothing"}}),
        ]
        for method, hidden, missing in pairs:
            a, b = await eve.send(method, hidden), await eve.send(method, missing)
            assert refused(a, 400, -32602) and refused(b, 400, -32602), (method, a, b)
            assert a[1]["error"]["message"].split(":")[0] == b[1]["error"]["message"].split(":")[0]
        response, lines = await eve.listen({"resourceSubscriptions": ["manifold://alpha/item://7", "manifold://no/x"]})
        assert lines is not None
        ack = await first_event(lines)
        await response.aclose()
        assert ack["params"]["notifications"] == {"resourceSubscriptions": []} and probe.subscribed == []
        assert await ann.call("alpha__recall") == "ann's"  # nothing of eve's reached ann's upstream session


async def test_rate_limits_apply_to_stateless_requests_of_the_tenant_and_of_no_other() -> None:
    async with hub(tenants={"zeta": {"limits": {"requestsPerMinute": 60, "burst": 2}}}) as (url, _), client() as http:
        eve, ann = Who(http, url, "eve"), Who(http, url, "ann")
        assert (await eve.send("server/discover"))[0] == 200
        assert await eve.call("alpha__echo", {"text": "x"}) == "alpha: x"
        message = eve.message("tools/list")
        response = await http.post(url, json=message, headers=eve.headers(message))
        assert code_of(response) == (429, -32029) and response.json()["id"] == message["id"]
        assert int(response.headers["retry-after"]) >= 1
        response, lines = await eve.listen({"toolsListChanged": True})
        assert lines is None and code_of(response) == (429, -32029)  # a listen is a request like any
        for _ in range(5):
            assert await ann.call("alpha__echo", {"text": "a"}) == "alpha: a"


async def test_a_parked_call_still_counts_against_max_concurrent_calls() -> None:
    async with hub(tenants={"acme": {"limits": {"maxConcurrentCalls": 1}}}) as (url, _), client() as http:
        ann, bob = Who(http, url, "ann"), Who(http, url, "bob")
        await ann.ask()  # in flight upstream, holding its upstream slot, waiting for ann's retry
        assert refused(await bob.send("tools/call", {"name": "alpha__echo", "arguments": {"text": "x"}}), 429, -32029)


# -- parked calls and upstream sessions ------------------------------------------------------------
async def test_the_hub_wide_bound_of_parked_calls_refuses_the_next_question_and_serves_everyone_else() -> None:
    async with hub(maxWaitingCalls=16) as (url, served), client() as http:
        crowd = [Who(http, url, f"p{i}") for i in range(16)]
        asked = await asyncio.gather(*(who.ask() for who in crowd))
        assert served.modern.calls.parked == 16
        late = Who(http, url, "p16")
        assert (await late.call("alpha__ask_user", {"question": "?"})).startswith("refused: too many calls")
        assert await Who(http, url, "eve").call("alpha__echo", {"text": "x"}) == "alpha: x"
        assert text(await crowd[0].answer(asked[0])) == "alpha: the user chose red"
        assert (await late.ask())["resultType"] == "input_required"  # room again


async def test_one_principals_parked_calls_do_not_take_every_upstream_slot_from_other_tenants() -> None:
    async with hub(alpha={"maxConcurrency": 4}, maxWaitingCalls=32, queueTimeout=0.5) as (url, _), client() as http:
        eve, ann = Who(http, url, "eve"), Who(http, url, "ann")
        await eve.ask()  # an upstream holds a quarter of its maxConcurrency parked: one here
        assert (await eve.call("alpha__ask_user", {"question": "?"})).startswith("refused: too many calls")
        outcome = await ann.send("tools/call", {"name": "alpha__echo", "arguments": {"text": "x"}})
        assert "result" in outcome[1], outcome  # slots are left for everyone else


async def test_varying_capabilities_does_not_let_one_principal_evict_anothers_upstream_session() -> None:
    async with hub(maxSessions=3) as (url, served), client() as http:
        ann, eve = Who(http, url, "ann"), Who(http, url, "eve")
        assert await ann.call("alpha__remember", {"text": "ann's"}) == "kept"
        for i in range(3):
            assert await eve.call("alpha__echo", {"text": "x"}, capabilities={"sampling": {"n": i}}) == "alpha: x"
        assert await ann.call("alpha__recall") == "ann's", f"{len(served.modern.upstreams)} sets held"


@pytest.mark.parametrize(
    ("settings", "lanes"),
    [
        ({}, 3),
        ({"maxSessions": 4}, 2),
        ({"statelessLanes": 1}, 1),
        ({"alpha": {"sessionMode": "shared"}}, 1),  # one upstream session for the tenant anyway
    ],
    ids=["spread", "half-the-bound", "one-lane", "shared-upstream"],
)
async def test_one_principals_concurrent_calls_spread_over_its_lanes_and_leave_room_for_others(
    settings: dict[str, Any], lanes: int
) -> None:
    probe = Probe(expected_arrivals=4)  # every call returns only once all four are in flight together
    async with hub(probe, **settings) as (url, _), client() as http:
        ann, eve = Who(http, url, "ann"), Who(http, url, "eve")
        anns = [asyncio.create_task(ann.call("alpha__rendezvous", {"text": str(i)})) for i in range(3)]
        held = {await asyncio.wait_for(probe.arrived.get(), WAIT) for _ in range(3)}
        eves = asyncio.create_task(eve.call("alpha__rendezvous", {"text": "eve"}))
        eve_session = await asyncio.wait_for(probe.arrived.get(), WAIT)
        assert await asyncio.gather(*anns, eves) == ["alpha: 0", "alpha: 1", "alpha: 2", "alpha: eve"]
        assert len(held) == lanes, held  # ann's lanes: at most 4, and holding at most half of maxSessions
        assert eve_session not in held  # another principal's calls never share ann's upstream sessions
        assert await ann.call("alpha__remember", {"text": "ann's"}) == "kept"  # a call alone: the first lane
        assert await ann.call("alpha__recall") == "ann's"


# -- subscriptions/listen --------------------------------------------------------------------------
async def test_listen_streams_are_bounded_per_caller_and_others_still_listen() -> None:
    async with hub() as (url, _), client() as http:
        ann, bob = Who(http, url, "ann"), Who(http, url, "bob")
        opened = [await ann.listen({"toolsListChanged": True}) for _ in range(16)]  # lines held: streams held
        for _, lines in opened:
            assert lines is not None and (await first_event(lines))["method"].endswith("acknowledged")
        response, lines = await ann.listen({"toolsListChanged": True})
        assert lines is None and code_of(response) == (429, -32029)
        opened.append(await bob.listen({"toolsListChanged": True}))
        assert opened[-1][1] is not None and (await first_event(opened[-1][1]))["method"].endswith("acknowledged")
        assert await ann.call("alpha__echo", {"text": "x"}) == "alpha: x"
        for response, _ in opened:
            await response.aclose()


async def test_concurrent_listens_cannot_overrun_the_per_caller_bound() -> None:
    async with hub(gamma=Gamma(crowd=24)) as (url, _), client() as http:
        ann = Who(http, url, "ann")
        wanted = [{"resourceSubscriptions": [f"manifold://gamma/box://{i}"]} for i in range(24)]
        opened = await asyncio.gather(*(ann.listen(w) for w in wanted))
        acknowledged = [lines for _, lines in opened if lines is not None]
        refused = [response for response, lines in opened if lines is None]
        assert len(acknowledged) == 16, f"{len(acknowledged)} listen streams of one caller"
        assert {(r.status_code, r.json()["error"]["code"]) for r in refused} == {(429, -32029)}
        for response, _ in opened:
            await response.aclose()


async def test_one_listen_cannot_make_hundreds_of_upstream_subscriptions() -> None:
    probe = Probe()
    async with hub(probe) as (url, _), client() as http:
        uris = [f"manifold://alpha/item://{i}" for i in range(300)]
        response, lines = await Who(http, url, "ann").listen({"resourceSubscriptions": uris})
        await response.aclose()
        assert lines is None and response.status_code == 400 and response.json()["error"]["code"] == -32602
        assert probe.subscribed == []  # refused before anything reached the upstream


async def test_ending_one_listen_keeps_the_upstream_subscription_another_listen_of_the_caller_needs() -> None:
    probe = Probe()
    async with hub(probe) as (url, served), client() as http:
        ann = Who(http, url, "ann")
        (first, first_lines), (second, second_lines) = [
            await ann.listen({"resourceSubscriptions": ["manifold://alpha/item://7"]}) for _ in range(2)
        ]
        assert first_lines is not None and second_lines is not None
        await first_event(first_lines)
        await first_event(second_lines)
        assert probe.subscribed == ["item://7"]  # one upstream subscription serves both listens
        await first.aclose()
        async with asyncio.timeout(WAIT):
            await served.listeners.wait_at_most(1)  # the hub has let the first listen go
        assert probe.unsubscribed == [], "item://7 unsubscribed upstream while a listen of ann still wants it"
        probe.subscription_changed.clear()
        await second.aclose()
        await asyncio.wait_for(probe.subscription_changed.wait(), WAIT)
        assert probe.unsubscribed == ["item://7"]  # the last one out unsubscribes, once
