"""Old clients on the 2024-11-05 HTTP+SSE transport: GET /sse and POST /messages, same hub."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import mcp_types as types
import pytest
from mcp import Client
from mcp.client import ClientRequestContext
from mcp.client.sse import sse_client

from tests.servers import two_upstreams

pytestmark = pytest.mark.anyio

WAIT = 10.0


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_an_sse_client_uses_the_whole_catalog_with_progress_and_sampling(mode: Any) -> None:
    updates: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append(progress)

    async def sampling(context: ClientRequestContext, params: types.CreateMessageRequestParams) -> Any:
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="yes"), model="m"
        )

    async with two_upstreams() as (url, hub):
        base = url.removesuffix("/mcp")
        async with Client(sse_client(f"{base}/sse"), mode=mode, sampling_callback=sampling) as client:
            assert client.protocol_version == "2025-11-25"
            names = {tool.name for tool in (await client.list_tools()).tools}
            assert {"alpha__echo", "beta__echo"} <= names
            result = await client.call_tool("beta__progress", {"steps": 3}, progress_callback=on_progress)
            assert result.structured_content == {"result": "3 steps done"}
            sampled = await client.call_tool("alpha__ask_model", {"prompt": "ok?"})
            assert sampled.structured_content == {"result": "alpha heard: yes"}
            assert len(hub.sessions) == 1
        assert updates == [1, 2, 3]
        # Closing the event stream ends the session and its upstream sessions.
        session_ended = [session.ended for session in hub.sessions]
        for ended in session_ended:
            await asyncio.wait_for(ended.wait(), WAIT)
        assert len(hub.sessions) == 0


async def test_bad_posts_to_the_message_endpoint() -> None:
    async with two_upstreams() as (url, _), httpx.AsyncClient(timeout=WAIT, trust_env=False) as http:
        base = url.removesuffix("/mcp")
        unknown = await http.post(f"{base}/messages?session_id=nope", json={"jsonrpc": "2.0", "method": "x"})
        assert unknown.status_code == 404
        async with http.stream("GET", f"{base}/sse", headers={"accept": "text/event-stream"}) as stream:
            lines = stream.aiter_lines()
            assert await anext(lines) == "event: endpoint"
            endpoint = (await anext(lines)).removeprefix("data: ")
            assert endpoint.startswith("/messages?session_id=")
            garbage = await http.post(
                f"{base}{endpoint}", content=b"{nope", headers={"content-type": "application/json"}
            )
            assert garbage.status_code == 400
            early = await http.post(f"{base}{endpoint}", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
            assert early.status_code == 202
            async for line in lines:
                if line.startswith("data: "):
                    assert '"initialize first"' in line
                    break
