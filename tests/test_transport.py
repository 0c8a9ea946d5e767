"""The /mcp endpoint on the wire: status codes and JSON-RPC errors for every kind of bad input."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from hub.runtime import Hub
from tests.servers import run_hub, serve
from tests.upstreams import http_app
from tests.wire import HEADERS, INIT, WAIT, initialize, next_data, rpc

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def hub_with_alpha(**settings: Any) -> AsyncIterator[tuple[str, Hub, httpx.AsyncClient]]:
    async with (
        serve(http_app("alpha")) as alpha,
        run_hub({"alpha": {"url": f"{alpha}/mcp"}}, **settings) as (url, hub),
        httpx.AsyncClient(timeout=WAIT, trust_env=False) as http,
    ):
        yield url, hub, http


async def test_initialize_negotiates_a_version_and_opens_a_session() -> None:
    async with hub_with_alpha() as (url, hub, http):
        response = await http.post(url, json=rpc(1, "initialize", INIT), headers=HEADERS)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        result = response.json()["result"]
        assert result["protocolVersion"] == "2025-11-25"
        assert result["serverInfo"]["name"] == "manifold"
        assert result["capabilities"]["tools"] == {"listChanged": True}
        assert hub.sessions.get(response.headers["mcp-session-id"]) is not None
        older = await http.post(
            url, json=rpc(1, "initialize", {**INIT, "protocolVersion": "2025-03-26"}), headers=HEADERS
        )
        assert older.json()["result"]["protocolVersion"] == "2025-03-26"
        unknown = await http.post(
            url, json=rpc(1, "initialize", {**INIT, "protocolVersion": "1999-01-01"}), headers=HEADERS
        )
        assert unknown.json()["result"]["protocolVersion"] == "2025-11-25"


async def test_ping_and_notifications() -> None:
    async with hub_with_alpha() as (url, _, http):
        headers = await initialize(http, url)
        note = await http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
        assert note.status_code == 202
        assert note.content == b""
        ping = await http.post(url, json=rpc("p", "ping"), headers=headers)
        assert ping.json() == {"jsonrpc": "2.0", "id": "p", "result": {}}


async def test_malformed_json_is_a_parse_error() -> None:
    async with hub_with_alpha() as (url, _, http):
        headers = await initialize(http, url)
        response = await http.post(url, content=b'{"jsonrpc": "2.0", "id": 1, "meth', headers=headers)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == -32700
        assert response.json()["id"] is None


@pytest.mark.parametrize(
    "body",
    [
        {"jsonrpc": "1.0", "id": 1, "method": "ping"},
        {"jsonrpc": "2.0", "id": 1},
        {"jsonrpc": "2.0", "id": 1, "method": 5},
        {"jsonrpc": "2.0", "id": 1, "method": "ping", "params": [1, 2]},
        {"jsonrpc": "2.0", "id": None, "method": "ping"},
        "just a string",
    ],
)
async def test_invalid_requests_are_refused(body: Any) -> None:
    async with hub_with_alpha() as (url, _, http):
        headers = await initialize(http, url)
        response = await http.post(url, json=body, headers=headers)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == -32600


async def test_batches_are_refused_clearly() -> None:
    async with hub_with_alpha() as (url, _, http):
        headers = await initialize(http, url)
        response = await http.post(url, json=[rpc(1, "ping"), rpc(2, "ping")], headers=headers)
        assert response.status_code == 400
        assert "batch" in response.json()["error"]["message"]


async def test_unknown_method_is_method_not_found() -> None:
    async with hub_with_alpha() as (url, _, http):
        headers = await initialize(http, url)
        response = await http.post(url, json=rpc(3, "tools/frobnicate"), headers=headers)
        assert response.status_code == 200
        assert response.json()["error"] == {"code": -32601, "message": "method not found: tools/frobnicate"}
        assert response.json()["id"] == 3


async def test_unknown_tool_and_bad_params_are_invalid_params() -> None:
    async with hub_with_alpha() as (url, _, http):
        headers = await initialize(http, url)
        unknown = await http.post(url, json=rpc(4, "tools/call", {"name": "ghost", "arguments": {}}), headers=headers)
        assert unknown.json()["error"]["code"] == -32602
        assert "ghost" in unknown.json()["error"]["message"]
        nameless = await http.post(url, json=rpc(5, "tools/call", {"arguments": {}}), headers=headers)
        assert nameless.json()["error"]["code"] == -32602
        resource = await http.post(url, json=rpc(6, "resources/read", {"uri": "nowhere://x"}), headers=headers)
        assert resource.json()["error"]["code"] == -32002


async def test_missing_session_id_is_400_and_unknown_session_is_404() -> None:
    async with hub_with_alpha() as (url, _, http):
        missing = await http.post(url, json=rpc(1, "tools/list"), headers=HEADERS)
        assert missing.status_code == 400
        assert "Mcp-Session-Id" in missing.json()["error"]["message"]
        unknown = await http.post(url, json=rpc(1, "tools/list"), headers={**HEADERS, "mcp-session-id": "nope"})
        assert unknown.status_code == 404
        stream = await http.get(url, headers={"accept": "text/event-stream", "mcp-session-id": "nope"})
        assert stream.status_code == 404


async def test_delete_ends_the_session() -> None:
    async with hub_with_alpha() as (url, hub, http):
        headers = await initialize(http, url)
        session = hub.sessions.get(headers["mcp-session-id"])
        assert session is not None
        deleted = await http.delete(url, headers=headers)
        assert deleted.status_code == 200
        await asyncio.wait_for(session.ended.wait(), WAIT)
        after = await http.post(url, json=rpc(2, "ping"), headers=headers)
        assert after.status_code == 404


async def test_unsupported_protocol_version_header_is_400_naming_the_supported_ones() -> None:
    async with hub_with_alpha() as (url, _, http):
        headers = await initialize(http, url)
        response = await http.post(url, json=rpc(2, "ping"), headers={**headers, "mcp-protocol-version": "2099-01-01"})
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == -32022
        assert error["data"]["supported"] == ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"]


async def test_http_level_refusals() -> None:
    async with hub_with_alpha(maxBodyBytes=2048) as (url, _, http):
        headers = await initialize(http, url)
        wrong_type = await http.post(url, content=b"{}", headers={**headers, "content-type": "text/plain"})
        assert wrong_type.status_code == 415
        json_only = await http.post(url, json=rpc(2, "ping"), headers={**headers, "accept": "application/json"})
        assert json_only.status_code == 406
        get_json = await http.get(url, headers={**headers, "accept": "application/json"})
        assert get_json.status_code == 406
        put = await http.put(url, json=rpc(2, "ping"), headers=headers)
        assert put.status_code == 405
        assert put.headers["allow"] == "GET, POST, DELETE"
        huge = await http.post(url, json=rpc(2, "ping", {"pad": "x" * 4096}), headers=headers)
        assert huge.status_code == 413


async def test_one_get_stream_per_session_and_list_changed_arrives_on_it() -> None:
    async with hub_with_alpha() as (url, hub, http):
        headers = await initialize(http, url)
        session = hub.sessions.get(headers["mcp-session-id"])
        assert session is not None
        stream_headers = {**headers, "accept": "text/event-stream"}
        async with http.stream("GET", url, headers=stream_headers) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"] == "text/event-stream"
            second = await http.get(url, headers=stream_headers)
            assert second.status_code == 409
            hub.sessions.broadcast({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
            lines = stream.aiter_lines()
            data = await asyncio.wait_for(next_data(lines), WAIT)
            assert data == '{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}'


async def test_the_session_cap_answers_503() -> None:
    async with hub_with_alpha(maxSessions=1) as (url, _, http):
        headers = await initialize(http, url)
        assert (await http.post(url, json=rpc(2, "ping"), headers=headers)).status_code == 200  # in use
        refused = await http.post(url, json=rpc(1, "initialize", INIT), headers=HEADERS)
        assert refused.status_code == 503
        assert "maximum of 1 sessions" in refused.json()["error"]["message"]


async def test_an_idle_session_expires_and_then_answers_404() -> None:
    async with hub_with_alpha(sessionIdleTimeout=0.2) as (url, hub, http):
        headers = await initialize(http, url)
        call = await http.post(
            url, json=rpc(2, "tools/call", {"name": "alpha__echo", "arguments": {"text": "x"}}), headers=headers
        )
        assert call.json()["result"]["content"][0]["text"] == "alpha: x"
        session = hub.sessions.get(headers["mcp-session-id"])
        assert session is not None and session.upstreams is not None
        assert session.upstreams.open_upstreams == ["alpha"]
        await asyncio.wait_for(session.ended.wait(), WAIT)
        assert session.upstreams.open_upstreams == []
        assert len(hub.sessions) == 0
        after = await http.post(url, json=rpc(3, "ping"), headers=headers)
        assert after.status_code == 404


async def test_lists_are_paginated_with_opaque_cursors() -> None:
    async with hub_with_alpha(pageSize=2) as (url, hub, http):
        headers = await initialize(http, url)
        names: list[str] = []
        cursor = None
        pages = 0
        while True:
            params: dict[str, Any] = {"cursor": cursor} if cursor else {}
            page = (await http.post(url, json=rpc(pages, "tools/list", params), headers=headers)).json()["result"]
            assert len(page["tools"]) <= 2
            names += [tool["name"] for tool in page["tools"]]
            pages += 1
            cursor = page.get("nextCursor")
            if cursor is None:
                break
        total = len(hub.catalog.items("tools"))
        assert total > 4
        assert pages == (total + 1) // 2 and len(names) == total == len(set(names))
        bad = await http.post(url, json=rpc(9, "tools/list", {"cursor": "bm90IG91cnM"}), headers=headers)
        assert bad.json()["error"]["code"] == -32602
