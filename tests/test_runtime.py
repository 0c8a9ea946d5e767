"""The running hub: a config applied while it runs, list changes addressed by view, the drain."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import httpx
import pytest

from connectors.jsonrpc import Kind
from hub.config import parse_config
from hub.runtime import Hub, HubState
from hub.session import Session
from hub.views import ViewRule
from tests.servers import run_hub, serve
from tests.upstreams import Probe, http_app
from tests.wire import HEADERS, INIT, WAIT, initialize, rpc

pytestmark = pytest.mark.anyio


async def opened(hub: Hub, rule: ViewRule | None = None) -> Session:
    """A session of ``hub`` under ``rule``, initialized through its own dispatch."""
    session = hub.sessions.open(rule=rule)
    stream = session.submit(Kind.REQUEST, rpc(1, "initialize", INIT))
    assert stream is not None
    await asyncio.wait_for(stream.wait_finished(), WAIT)
    assert session.initialized
    return session


def methods(session: Session) -> list[str]:
    """The methods of what reached the session's GET stream so far."""
    return [json.loads(event.data).get("method") for event in session.streams.get.buffered()]


async def heard(session: Session, method: str, times: int = 1) -> None:
    """Wait (bounded) until ``method`` has reached the session's GET stream ``times`` times."""
    stream = session.streams.get
    seen = 0
    async with asyncio.timeout(WAIT), contextlib.aclosing(stream.read(0, stream.claim())) as events:
        async for event in events:
            seen += json.loads(event.data).get("method") == method
            if seen >= times:
                return


async def test_an_upstream_added_and_removed_at_run_time_joins_and_leaves_the_catalog() -> None:
    async with serve(http_app("alpha")) as alpha, serve(http_app("beta")) as beta:
        servers: dict[str, Any] = {"alpha": {"url": f"{alpha}/mcp"}}
        async with run_hub(servers) as (url, hub):
            everyone = await opened(hub)
            alpha_only = await opened(hub, ViewRule(upstreams=frozenset({"alpha"})))
            settings = {"storage": ":memory:", "reconnect": {"initialDelay": 0.05, "maxDelay": 0.2}}
            bigger = parse_config({"hub": settings, "mcpServers": {**servers, "beta": {"url": f"{beta}/mcp"}}}, env={})
            await hub.apply(bigger)
            await heard(everyone, "notifications/tools/list_changed")
            assert "beta__echo" in [tool["name"] for tool in hub.catalog.items("tools")]
            assert "notifications/tools/list_changed" not in methods(alpha_only)  # its view did not change
            async with httpx.AsyncClient(timeout=WAIT, trust_env=False) as http:
                headers = await initialize(http, url)
                call = rpc(2, "tools/call", {"name": "beta__echo", "arguments": {"text": "new"}})
                reply = (await http.post(url, json=call, headers=headers)).json()
                assert reply["result"]["content"][0]["text"] == "beta: new"
                before = methods(everyone).count("notifications/tools/list_changed")
                smaller = parse_config({"hub": settings, "mcpServers": servers}, env={})
                await hub.apply(smaller)
                assert hub.pool.upstream("beta") is None
                assert "beta__echo" not in [tool["name"] for tool in hub.catalog.items("tools")]
                await heard(everyone, "notifications/tools/list_changed", before + 1)
                gone = (await http.post(url, json=rpc(3, "tools/call", call["params"]), headers=headers)).json()
                assert gone["error"]["code"] == -32602  # no longer a name the hub knows
                assert "notifications/tools/list_changed" not in methods(alpha_only)


async def test_a_removed_upstream_finishes_its_call_in_flight_first() -> None:
    probe = Probe()
    async with (
        serve(http_app("alpha", probe)) as alpha,
        run_hub({"alpha": {"url": f"{alpha}/mcp"}}) as (url, hub),
        httpx.AsyncClient(timeout=WAIT, trust_env=False) as http,
    ):
        headers = await initialize(http, url)
        slow = rpc(2, "tools/call", {"name": "alpha__slow", "arguments": {"seconds": 0.5}})
        call = asyncio.create_task(http.post(url, json=slow, headers=headers))
        await asyncio.wait_for(probe.slow_started.wait(), WAIT)
        empty = parse_config({"hub": {"storage": ":memory:", "drainTimeout": 5}}, env={})
        await hub.apply(empty)
        reply = (await asyncio.wait_for(call, WAIT)).json()
        assert reply["result"]["content"][0]["text"] == "slept"
        assert hub.pool.names == []


async def test_a_changed_upstream_reconnects_and_the_same_session_goes_on() -> None:
    async with (
        serve(http_app("alpha")) as alpha,
        run_hub({"alpha": {"url": f"{alpha}/mcp"}}) as (url, hub),
        httpx.AsyncClient(timeout=WAIT, trust_env=False) as http,
    ):
        headers = await initialize(http, url)
        echo = rpc(2, "tools/call", {"name": "alpha__echo", "arguments": {"text": "a"}})
        assert "result" in (await http.post(url, json=echo, headers=headers)).json()
        first = hub.pool.upstream("alpha")
        changed = {"alpha": {"url": f"{alpha}/mcp", "timeouts": {"request": 30}}}
        await hub.apply(parse_config({"hub": {"storage": ":memory:"}, "mcpServers": changed}, env={}))
        renewed = hub.pool.upstream("alpha")
        assert renewed is not None and renewed is not first
        assert hub.catalog.count("alpha") > 0  # still listed while it reconnects
        await asyncio.wait_for(renewed.settled.wait(), WAIT)
        again = (await http.post(url, json=echo, headers=headers)).json()
        assert again["result"]["content"][0]["text"] == "alpha: a"


async def test_the_drain_ends_the_streams_and_refuses_new_sessions() -> None:
    async with (
        serve(http_app("alpha")) as alpha,
        run_hub({"alpha": {"url": f"{alpha}/mcp"}}) as (url, hub),
        httpx.AsyncClient(timeout=WAIT, trust_env=False) as http,
    ):
        headers = await initialize(http, url)
        async with http.stream("GET", url, headers={**headers, "accept": "text/event-stream"}) as stream:
            assert stream.status_code == 200
            await hub.drain()
            assert hub.state is HubState.DRAINING
            body = b"".join([chunk async for chunk in stream.aiter_bytes()])  # ends: no hang
            assert b"id: " in body  # the priming event lets the client resume after the restart
        refused = await http.post(url, json=rpc(1, "initialize", INIT), headers=HEADERS)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "2"
        ping = await http.post(url, json=rpc(3, "ping"), headers=headers)
        assert ping.json()["result"] == {}  # a session that exists still gets answers
