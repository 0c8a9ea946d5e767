"""Nothing lost when a stream drops: clients resume with Last-Event-ID, and so does the hub upstream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import mcp_types as types
import pytest
from mcp import Client

from tests.servers import run_hub, serve, two_upstreams
from tests.upstreams import Probe, http_app
from tests.wire import RawClient, initialize

pytestmark = pytest.mark.anyio

WAIT = 10.0


@dataclass
class Event:
    id: str | None
    data: str
    retry: int | None

    @property
    def message(self) -> dict[str, Any]:
        decoded: dict[str, Any] = json.loads(self.data)
        return decoded


async def sse_events(response: httpx.Response) -> AsyncIterator[Event]:
    """The events of an SSE response, comments skipped."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line == "":
            if fields:
                retry = fields.get("retry")
                yield Event(fields.get("id"), fields.get("data", ""), int(retry) if retry else None)
            fields = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(":")
            fields[key] = value.removeprefix(" ")


async def test_a_client_that_drops_a_call_stream_resumes_it_and_misses_nothing() -> None:
    probe = Probe()
    async with two_upstreams(probe, probe) as (url, _), RawClient(url) as raw:
        call = {"name": "alpha__stepper", "arguments": {"steps": 4}, "_meta": {"progressToken": "t"}}
        body = {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": call}
        probe.steps.put_nowait(None)
        seen: list[Event] = []
        async with raw.http.stream("POST", url, json=body, headers=raw.headers) as response:
            assert response.headers["content-type"] == "text/event-stream"
            async for event in sse_events(response):
                seen.append(event)
                if event.data:
                    break  # the first step arrived; now the connection drops
        priming, first = seen
        assert priming.data == "" and priming.retry == 1000 and priming.id is not None
        assert first.message["params"] == {"progressToken": "t", "progress": 1, "total": 4, "message": "step 1"}

        for _ in range(3):
            probe.steps.put_nowait(None)
        await asyncio.wait_for(probe.stepper_done.wait(), WAIT)  # the call went on without a reader

        resume = {**raw.headers, "accept": "text/event-stream", "last-event-id": str(first.id)}
        async with raw.http.stream("GET", url, headers=resume) as resumed:
            rest = [event async for event in sse_events(resumed) if event.data]
    assert [e.message["params"]["progress"] for e in rest[:-1]] == [2, 3, 4]
    assert rest[-1].message == {
        "jsonrpc": "2.0",
        "id": 9,
        "result": {
            "content": [{"type": "text", "text": "4 steps done"}],
            "structuredContent": {"result": "4 steps done"},
            "isError": False,
        },
    }
    ids = [e.id for e in [first, *rest]]
    assert len(set(ids)) == len(ids) == 5


async def test_an_unknown_or_malformed_last_event_id_is_refused() -> None:
    async with two_upstreams() as (url, hub), RawClient(url) as raw:
        stream_headers = {**raw.headers, "accept": "text/event-stream"}
        malformed = await raw.http.get(url, headers={**stream_headers, "last-event-id": "nonsense"})
        assert malformed.status_code == 400
        gone = await raw.http.get(url, headers={**stream_headers, "last-event-id": f"{hub.run}-99-1"})
        assert gone.status_code == 404


async def test_a_restarted_hub_replays_the_get_stream_events_a_client_missed(tmp_path: Path) -> None:
    storage = str(tmp_path / "hub.db")
    seen = {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "seen"}}
    missed = {**seen, "params": {"level": "info", "data": "missed"}}
    after = {**seen, "params": {"level": "info", "data": "after the restart"}}
    async with serve(http_app("alpha")) as alpha, httpx.AsyncClient(timeout=WAIT, trust_env=False) as http:
        servers = {"alpha": {"url": f"{alpha}/mcp"}}
        async with run_hub(servers, storage=storage) as (url, hub):
            headers = await initialize(http, url)
            session = hub.sessions.get(headers["mcp-session-id"])
            assert session is not None
            async with http.stream("GET", url, headers={**headers, "accept": "text/event-stream"}) as stream:
                events = sse_events(stream)
                assert (await anext(events)).data == ""  # priming
                session.send(seen)
                last = await anext(events)
                assert last.message == seen
            session.send(missed)  # nobody is reading now
        async with run_hub(servers, storage=storage) as (url, hub):
            resume = {**headers, "accept": "text/event-stream", "last-event-id": str(last.id)}
            async with http.stream("GET", url, headers=resume) as stream:
                events = sse_events(stream)
                replayed = await anext(events)
                assert replayed.message == missed
                session = hub.sessions.get(headers["mcp-session-id"])
                assert session is not None
                session.send(after)
                live = await anext(events)
                assert live.message == after
                assert live.id is not None and live.id.startswith(hub.run)


async def test_the_hub_resumes_an_upstream_reply_stream_that_drops_mid_call() -> None:
    updates: list[float] = []
    probe = Probe()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append(progress)

    async with (
        serve(http_app("alpha", probe, resumable=True)) as alpha,
        run_hub({"alpha": {"url": f"{alpha}/mcp"}}) as (url, _),
        Client(url) as client,
    ):
        result = await asyncio.wait_for(
            client.call_tool("alpha__hiccup", {"steps": 4}, progress_callback=on_progress), WAIT
        )
    block = result.content[0]
    assert isinstance(block, types.TextContent) and block.text == "4 steps done after a hiccup"
    assert updates == [1, 2, 3, 4]
    assert probe.replays == 1  # the hub came back for the rest of the stream with Last-Event-ID


async def test_old_clients_get_no_priming_event() -> None:
    async with two_upstreams() as (url, _), httpx.AsyncClient(timeout=WAIT, trust_env=False) as http:
        headers = await initialize(http, url, version="2025-06-18")
        headers["mcp-protocol-version"] = "2025-06-18"
        call = {"name": "alpha__progress", "arguments": {"steps": 2}, "_meta": {"progressToken": 1}}
        body = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": call}
        async with http.stream("POST", url, json=body, headers=headers) as response:
            events = [event async for event in sse_events(response)]
    assert all(event.data for event in events)
    assert [e.message.get("method", "reply") for e in events] == ["notifications/progress"] * 2 + ["reply"]
