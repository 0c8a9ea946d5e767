"""A shared upstream session (one per tenant) subscribed for sessions and listen streams alike.

A session-era client subscribes with ``resources/subscribe``; a 2026-07-28 client holds the same
subscription with ``subscriptions/listen``. On a shared upstream session both are one upstream
subscription: neither may end it while the other still holds it, and the last to let go ends it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
import pytest

from hub.runtime import Hub
from tests.modern_wire import envelope, headers_for
from tests.polling import until
from tests.servers import run_hub, serve
from tests.upstreams import Probe, http_app
from tests.wire import WAIT, RawClient, next_data, rpc

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

URI = "manifold://alpha/item://7"
ORIGINAL = "item://7"


@asynccontextmanager
async def shared_alpha(probe: Probe) -> AsyncIterator[tuple[str, Hub, RawClient, httpx.AsyncClient]]:
    async with AsyncExitStack() as stack:
        up = await stack.enter_async_context(serve(http_app("alpha", probe)))
        url, hub = await stack.enter_async_context(run_hub({"alpha": {"url": f"{up}/mcp", "sessionMode": "shared"}}))
        session = await stack.enter_async_context(RawClient(url))
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=WAIT, trust_env=False))
        yield url, hub, session, http


@asynccontextmanager
async def listening(http: httpx.AsyncClient, url: str) -> AsyncIterator[None]:
    """A listen stream holding URI, open until the block ends (the client closes it)."""
    listen = rpc(9, "subscriptions/listen", envelope({"notifications": {"resourceSubscriptions": [URI]}}))
    async with http.stream("POST", url, json=listen, headers=headers_for(listen)) as stream:
        lines = stream.aiter_lines()  # held until the block ends: a dropped iterator closes the stream
        ack = json.loads(await next_data(lines))
        assert ack["params"]["notifications"] == {"resourceSubscriptions": [URI]}
        yield


async def settled(hub: Hub) -> None:
    """Until the closed listen stream's clean-up is over (it lets go of the URI before its request ends)."""
    await until(
        lambda: len(hub.listeners) == 0 and all(users == 0 for *_, users in hub.modern.upstreams.callers()),
        "the listen stream ended and let go",
    )


async def test_a_listen_stream_that_ends_leaves_a_sessions_subscription_in_place() -> None:
    probe = Probe()
    async with shared_alpha(probe) as (url, hub, session, http):
        assert "error" not in (await session.stream("resources/subscribe", {"uri": URI}))[-1]
        async with listening(http, url):
            pass
        await settled(hub)
        assert probe.unsubscribed == []  # the session still holds it
        assert "error" not in (await session.stream("resources/unsubscribe", {"uri": URI}))[-1]
        assert probe.unsubscribed == [ORIGINAL]  # the last to let go ends it


async def test_a_session_that_unsubscribes_leaves_a_listen_streams_subscription_in_place() -> None:
    probe = Probe()
    async with shared_alpha(probe) as (url, hub, session, http):
        async with listening(http, url):
            assert "error" not in (await session.stream("resources/subscribe", {"uri": URI}))[-1]
            assert "error" not in (await session.stream("resources/unsubscribe", {"uri": URI}))[-1]
            assert len(hub.listeners) == 1
            assert probe.unsubscribed == []  # the listen stream still holds it
        await settled(hub)
        assert probe.unsubscribed == [ORIGINAL]
