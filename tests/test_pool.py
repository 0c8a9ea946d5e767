"""The connector pool against real SDK upstreams: caps, queues, dead upstreams, restarts, session modes."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from connectors.errors import UpstreamBusy, UpstreamUnavailable
from connectors.limits import PoolLimits
from connectors.pool import ConnectorPool
from connectors.spec import UpstreamSpec
from connectors.status import UpstreamState
from tests.servers import reserve_port, serve
from tests.upstreams import Probe, http_app

pytestmark = pytest.mark.anyio

WAIT = 10.0
ECHO = {"name": "echo", "arguments": {"text": "hi"}}


@asynccontextmanager
async def pool_for(url: str, limits: PoolLimits | None = None, **spec: Any) -> AsyncIterator[ConnectorPool]:
    async with ConnectorPool([UpstreamSpec(name="alpha", url=url, **spec)], limits) as pool:
        await pool.wait_settled(WAIT)
        yield pool


async def test_discovery_lists_everything_and_reports_up() -> None:
    async with serve(http_app("alpha")) as url, pool_for(f"{url}/mcp") as pool:
        status = pool.status("alpha")
        assert status.state is UpstreamState.UP
        assert status.listing is not None
        assert {t["name"] for t in status.listing.tools} >= {"echo", "slow", "progress"}
        assert [p["name"] for p in status.listing.prompts] == ["greet"]
        assert status.server_info["name"] == "alpha"
        assert status.latency_ms is not None


async def test_a_full_queue_is_refused_at_once_naming_the_upstream() -> None:
    probe = Probe()
    limits = PoolLimits(queue_size=0)
    async with serve(http_app("alpha", probe)) as url, pool_for(f"{url}/mcp", limits, max_concurrency=1) as pool:
        session = pool.open_session()
        slow = asyncio.create_task(session.request("alpha", "tools/call", {"name": "slow", "arguments": {}}))
        await asyncio.wait_for(probe.slow_started.wait(), WAIT)
        with pytest.raises(UpstreamBusy, match=r"upstream 'alpha': 1 requests in flight"):
            await session.request("alpha", "tools/call", ECHO)
        slow.cancel()
        await asyncio.gather(slow, return_exceptions=True)
        await session.aclose()


async def test_a_wait_past_the_queue_deadline_is_refused() -> None:
    probe = Probe()
    limits = PoolLimits(queue_size=4, queue_timeout=0.05)
    async with serve(http_app("alpha", probe)) as url, pool_for(f"{url}/mcp", limits, max_concurrency=1) as pool:
        session = pool.open_session()
        slow = asyncio.create_task(session.request("alpha", "tools/call", {"name": "slow", "arguments": {}}))
        await asyncio.wait_for(probe.slow_started.wait(), WAIT)
        with pytest.raises(UpstreamBusy, match=r"no free slot within 0\.05s"):
            await session.request("alpha", "tools/call", ECHO)
        slow.cancel()
        await asyncio.gather(slow, return_exceptions=True)
        await session.aclose()


async def test_a_dead_upstream_fails_fast_with_its_last_error() -> None:
    dead = reserve_port()
    try:
        async with pool_for(f"http://127.0.0.1:{dead.getsockname()[1]}/mcp", connect_timeout=2) as pool:
            status = pool.status("alpha")
            assert status.state is UpstreamState.DOWN
            assert status.last_error is not None and "Connection refused" in status.last_error
            with pytest.raises(UpstreamUnavailable, match="upstream 'alpha': down"):
                await pool.open_session().request("alpha", "tools/call", ECHO)
    finally:
        dead.close()


async def test_each_client_session_gets_its_own_upstream_session_in_isolated_mode() -> None:
    async with serve(http_app("alpha")) as url, pool_for(f"{url}/mcp") as pool:
        first, second = pool.open_session(), pool.open_session()
        await first.request("alpha", "tools/call", ECHO)
        await second.request("alpha", "tools/call", ECHO)
        assert first.open_upstreams == ["alpha"] == second.open_upstreams
        assert first._held["alpha"].ready.result() is not second._held["alpha"].ready.result()
        await first.aclose()
        await second.aclose()
        assert first.open_upstreams == []


async def test_shared_mode_uses_the_one_discovery_session() -> None:
    async with serve(http_app("alpha")) as url, pool_for(f"{url}/mcp", shared=True) as pool:
        session = pool.open_session()
        result = await session.request("alpha", "tools/call", ECHO)
        assert result["content"][0]["text"] == "alpha: hi"
        assert session.open_upstreams == []


async def test_an_upstream_restart_is_invisible_to_callers() -> None:
    first = reserve_port()
    port = first.getsockname()[1]
    running = serve(http_app("alpha"), sock=first)
    url = await running.__aenter__()
    try:
        async with pool_for(f"{url}/mcp") as pool:
            session = pool.open_session()
            await session.request("alpha", "tools/call", ECHO)
            await running.__aexit__(None, None, None)
            # A new server on the same port knows none of the hub's upstream sessions (404):
            # the connector initializes again and the call goes through.
            again = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            again.bind(("127.0.0.1", port))
            async with serve(http_app("alpha"), sock=again):
                result = await session.request("alpha", "tools/call", ECHO)
                assert result["content"][0]["text"] == "alpha: hi"
            await session.aclose()
    finally:
        first.close()


async def test_a_refused_log_level_does_not_spoil_the_upstream_session() -> None:
    from tests.scripted import Script, reply

    async def refuse_levels(message: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
        if message["method"] == "logging/setLevel":
            return httpx.Response(
                200, json={"jsonrpc": "2.0", "id": message["id"], "error": {"code": -32602, "message": "no"}}
            )
        return httpx.Response(200, json=reply(message, {"ok": True}))

    script = Script(refuse_levels, init_result={"protocolVersion": "2025-06-18", "capabilities": {"logging": {}}})
    async with serve(script) as url, pool_for(f"{url}/mcp") as pool:
        session = pool.open_session()
        await session.set_log_level("debug")  # nothing open yet: applied when the session opens
        for _ in range(2):
            assert await session.request("alpha", "tools/call", ECHO) == {"ok": True}
        await session.aclose()
    assert script.sessions == 2  # the discovery session and this client's one; none opened again
