"""The legacy HTTP+SSE connector against a real SDK server and scripted failures."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest

from connectors.engine import Connector
from connectors.errors import UpstreamUnavailable
from connectors.spec import UpstreamSpec
from tests.scripted import connected
from tests.servers import serve
from tests.upstreams import sse_app

pytestmark = pytest.mark.anyio


async def test_concurrent_requests_are_routed_by_id_over_one_stream() -> None:
    async with (
        serve(sse_app("beta")) as url,
        connected(UpstreamSpec(name="beta", url=f"{url}/sse", transport="sse")) as upstream,
    ):
        assert upstream.server_info["name"] == "beta"
        calls = [upstream.request("tools/call", {"name": "echo", "arguments": {"text": str(i)}}) for i in range(20)]
        results = await asyncio.gather(*calls)
    assert [r["content"][0]["text"] for r in results] == [f"beta: {i}" for i in range(20)]


class ScriptedStream:
    """A legacy SSE upstream whose event stream the test controls."""

    def __init__(self, endpoint: str = "/messages?session=1") -> None:
        self.endpoint = endpoint
        self.events: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.posted: list[dict[str, Any]] = []
        self.request_posted = asyncio.Event()

    async def _stream(self) -> AsyncIterator[bytes]:
        yield f"event: endpoint\ndata: {self.endpoint}\n\n".encode()
        while (chunk := await self.events.get()) is not None:
            yield chunk

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=self._stream())
        message = json.loads(request.content)
        self.posted.append(message)
        if message.get("method") not in ("initialize", "notifications/initialized"):
            self.request_posted.set()
        if message.get("method") == "initialize":
            result = {"protocolVersion": "2024-11-05", "capabilities": {}, "serverInfo": {"name": "old"}}
            self.send({"jsonrpc": "2.0", "id": message["id"], "result": result})
        return httpx.Response(202)

    def send(self, message: dict[str, Any]) -> None:
        self.events.put_nowait(b"event: message\ndata: " + json.dumps(message).encode() + b"\n\n")


def scripted(script: ScriptedStream, connect: float = 5.0) -> AbstractAsyncContextManager[Connector]:
    spec = UpstreamSpec(name="old", url="http://127.0.0.1:1/sse", transport="sse", connect_timeout=connect)
    return connected(spec, httpx.AsyncClient(transport=httpx.MockTransport(script)))


async def test_a_dropped_stream_fails_waiting_requests_at_once() -> None:
    script = ScriptedStream()
    async with scripted(script) as upstream:
        assert upstream.protocol_version == "2024-11-05"
        call = asyncio.create_task(upstream.request("tools/list"))
        await asyncio.wait_for(script.request_posted.wait(), 5)
        script.events.put_nowait(None)
        with pytest.raises(UpstreamUnavailable, match="connection lost"):
            await asyncio.wait_for(call, 5)
        assert upstream.is_lost
        with pytest.raises(UpstreamUnavailable):
            await upstream.request("ping")


async def test_an_endpoint_on_another_origin_is_refused() -> None:
    with pytest.raises(UpstreamUnavailable, match="another origin"):
        async with scripted(ScriptedStream(endpoint="http://elsewhere.example/steal")):
            pass


async def test_no_handshake_within_the_connect_timeout_is_unavailable() -> None:
    class Silent(ScriptedStream):
        async def __call__(self, request: httpx.Request) -> httpx.Response:
            if request.method == "POST":
                self.posted.append(json.loads(request.content))
                return httpx.Response(202)  # accepted, never answered
            return await super().__call__(request)

    with pytest.raises(UpstreamUnavailable, match=r"no handshake within 0\.05s"):
        async with scripted(Silent(), connect=0.05):
            pass
