"""Session lifetimes across hub restarts: records are kept, restored, and forgotten when they should be."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from hub.sqlite_store import SqliteStore
from hub.store import SessionRecord
from tests.servers import run_hub, serve
from tests.upstreams import http_app
from tests.wire import HEADERS, INIT, initialize, rpc

pytestmark = pytest.mark.anyio


async def test_a_restarted_hub_takes_back_a_live_session(tmp_path: Path) -> None:
    storage = str(tmp_path / "hub.db")
    async with serve(http_app("alpha")) as alpha, httpx.AsyncClient(timeout=10, trust_env=False) as http:
        servers = {"alpha": {"url": f"{alpha}/mcp"}}
        async with run_hub(servers, storage=storage) as (url, _):
            headers = await initialize(http, url)
        async with run_hub(servers, storage=storage) as (url, hub):
            call = rpc(2, "tools/call", {"name": "alpha__echo", "arguments": {"text": "again"}})
            response = await http.post(url, json=call, headers=headers)
            assert response.status_code == 200
            assert response.json()["result"]["content"][0]["text"] == "alpha: again"
            session = hub.sessions.get(headers["mcp-session-id"])
            assert session is not None and session.protocol_version == "2025-11-25"
            assert session.client_info == {"name": "t", "version": "0"}


async def test_a_deleted_session_is_not_taken_back(tmp_path: Path) -> None:
    storage = str(tmp_path / "hub.db")
    async with serve(http_app("alpha")) as alpha, httpx.AsyncClient(timeout=10, trust_env=False) as http:
        servers = {"alpha": {"url": f"{alpha}/mcp"}}
        async with run_hub(servers, storage=storage) as (url, hub):
            headers = await initialize(http, url)
            assert (await http.delete(url, headers=headers)).status_code == 200
            session = hub.sessions.get(headers["mcp-session-id"])
            if session is not None:
                await asyncio.wait_for(session.ended.wait(), 10)
        async with run_hub(servers, storage=storage) as (url, _):
            response = await http.post(url, json=rpc(2, "ping"), headers=headers)
            assert response.status_code == 404


async def test_unknown_ids_never_become_sessions(tmp_path: Path) -> None:
    async with (
        serve(http_app("alpha")) as alpha,
        httpx.AsyncClient(timeout=10, trust_env=False) as http,
        run_hub({"alpha": {"url": f"{alpha}/mcp"}}, storage=str(tmp_path / "hub.db")) as (url, hub),
    ):
        for made_up in ("0" * 32, "not-even-hex"):
            response = await http.post(url, json=rpc(1, "ping"), headers={**HEADERS, "mcp-session-id": made_up})
            assert response.status_code == 404
        assert len(hub.sessions) == 0


async def test_a_session_idle_past_its_timeout_is_not_taken_back(tmp_path: Path) -> None:
    storage = str(tmp_path / "hub.db")
    stale = SessionRecord("ab" * 16, "2025-11-25", {"name": "old", "version": "1"}, {}, 0.0, 0.0)
    async with SqliteStore(storage) as store:
        await store.save(stale)
    async with (
        serve(http_app("alpha")) as alpha,
        httpx.AsyncClient(timeout=10, trust_env=False) as http,
        run_hub({"alpha": {"url": f"{alpha}/mcp"}}, storage=storage) as (url, _),
    ):
        response = await http.post(url, json=rpc(1, "ping"), headers={**HEADERS, "mcp-session-id": stale.id})
        assert response.status_code == 404
    async with SqliteStore(storage) as store:
        assert await store.load(stale.id) is None


async def test_a_session_ends_even_when_an_upstream_never_accepts_a_notification() -> None:
    from tests.scripted import Script, reply

    class Stuck(Script):
        async def answer(self, method: str, headers: dict[str, str], body: bytes) -> httpx.Response:
            if b"roots/list_changed" in body:
                await asyncio.Event().wait()  # never accepted; ends when the server stops
            return await super().answer(method, headers, body)

    async def tools(message: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
        if message["method"] == "tools/list":
            return httpx.Response(
                200, json=reply(message, {"tools": [{"name": "t", "inputSchema": {"type": "object"}}]})
            )
        return httpx.Response(200, json=reply(message, {"content": []}))

    stuck = Stuck(tools, init_result={"protocolVersion": "2025-06-18", "capabilities": {"tools": {}}})
    async with (
        serve(stuck) as upstream,
        run_hub({"up": {"url": f"{upstream}/mcp"}}) as (url, hub),
        httpx.AsyncClient(timeout=10, trust_env=False) as http,
    ):
        headers = await initialize(http, url)
        assert (await http.post(url, json=rpc(2, "tools/call", {"name": "up__t"}), headers=headers)).status_code == 200
        note = {"jsonrpc": "2.0", "method": "notifications/roots/list_changed"}
        assert (await http.post(url, json=note, headers=headers)).status_code == 202
        session = hub.sessions.get(headers["mcp-session-id"])
        assert session is not None
        assert (await http.delete(url, headers=headers)).status_code == 200
        await asyncio.wait_for(session.ended.wait(), 10)
        assert len(hub.sessions) == 0


async def test_the_audit_trail_records_calls_with_their_arguments_as_configured() -> None:
    import hashlib

    from hub.store import AuditQuery
    from tests.servers import run_config

    key = "mfd_audit"
    entry = {"name": "k", "sha256": hashlib.sha256(key.encode()).hexdigest(), "tenant": "t"}
    async with serve(http_app("alpha")) as alpha, httpx.AsyncClient(timeout=10, trust_env=False) as http:
        for mode, expect in (("none", None), ("hash", "hash"), ("full", '{"text":"secret-ish"}')):
            document = {
                "mcpServers": {"alpha": {"url": f"{alpha}/mcp"}},
                "auth": {"apiKeys": [entry]},
                "tenants": {"t": {}},
                "audit": {"arguments": mode},
            }
            async with run_config(document) as (url, hub):
                headers = {**HEADERS, "authorization": f"Bearer {key}"}
                headers = await initialize_with(http, url, headers)
                call = rpc(2, "tools/call", {"name": "alpha__echo", "arguments": {"text": "secret-ish"}})
                assert (await http.post(url, json=call, headers=headers)).status_code == 200
                failed = rpc(3, "tools/call", {"name": "alpha__fail", "arguments": {"reason": "no"}})
                assert (await http.post(url, json=failed, headers=headers)).status_code == 200
                records = await hub.audit.query(AuditQuery(name_glob="alpha__*"))
                by_name = {r.name: r for r in records}
                echo = by_name["alpha__echo"]
                assert (echo.tenant, echo.principal, echo.upstream, echo.outcome) == ("t", "key:k", "alpha", "ok")
                assert echo.bytes_in > 0 and echo.bytes_out > 0 and echo.session == headers["mcp-session-id"]
                assert by_name["alpha__fail"].outcome == "isError"
                if expect == "hash":
                    assert echo.arguments == hashlib.sha256(b'{"text":"secret-ish"}').hexdigest()
                else:
                    assert echo.arguments == expect


async def initialize_with(http: httpx.AsyncClient, url: str, headers: dict[str, str]) -> dict[str, str]:
    response = await http.post(url, json=rpc(1, "initialize", INIT), headers=headers)
    assert response.status_code == 200, response.text
    return {**headers, "mcp-session-id": response.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
