"""Local server processes are capped, reaped and never leaked: on session end, when idle, on upstream
removal, on shutdown, and when the hub itself is killed with SIGKILL."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from connectors.engine import Connector
from connectors.errors import UpstreamBusy, UpstreamUnavailable
from connectors.processes import Processes, descendants
from connectors.stdio import StdioTransport
from hub.config import parse_config
from hub.runtime import Hub
from tests.servers import reserve_port, run_config
from tests.stdio_helpers import ROOT, WAIT, alive, local_server, tree, wait_gone

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


def text(result: types.CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, types.TextContent))


def processes(hub: Hub) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = hub.health()["upstreams"][0]["processes"]
    return found


def tenant_pids(hub: Hub) -> list[int]:
    return [p["pid"] for p in processes(hub) if p["role"] == "tenant"]


async def test_isolated_sessions_have_processes_of_their_own_capped_and_stopped_with_the_session(
    tmp_path: Path,
) -> None:
    entry = local_server(sessionMode="isolated", maxProcesses=2)
    document = {"hub": {"workspaces": str(tmp_path / "ws")}, "mcpServers": {"local": entry}}
    async with run_config(document) as (url, hub), Client(url, mode="legacy") as second:
        async with Client(url, mode="legacy") as first:
            assert text(await first.call_tool("local__echo", {"text": "one"})) == "local: one"
            [mine] = tenant_pids(hub)
            owned = tree(mine)
            # The discovery process and the first session's take both places.
            with pytest.raises(MCPError) as refused:
                await second.call_tool("local__echo", {"text": "two"})
            assert "upstream 'local'" in refused.value.error.message
            assert "2 processes are running (maxProcesses)" in refused.value.error.message
            assert text(await first.call_tool("local__echo", {"text": "unharmed"})) == "local: unharmed"
        await wait_gone(owned)  # the first session ended: its process went
        assert text(await second.call_tool("local__echo", {"text": "two"})) == "local: two"
        assert tenant_pids(hub) != [mine] and len(tenant_pids(hub)) == 1


async def test_a_tenants_idle_process_is_stopped_and_started_again_on_use(tmp_path: Path) -> None:
    entry = local_server(idleTimeout=0.2)
    document = {"hub": {"workspaces": str(tmp_path / "ws")}, "mcpServers": {"local": entry}}
    async with run_config(document) as (url, hub), Client(url, mode="legacy") as client:
        assert text(await client.call_tool("local__echo", {"text": "one"})) == "local: one"
        [first] = tenant_pids(hub)
        await wait_gone(tree(first), within=10)
        assert text(await client.call_tool("local__echo", {"text": "two"})) == "local: two"
        [second] = tenant_pids(hub)
        assert second != first


async def test_a_process_that_dies_is_started_again_and_counted(tmp_path: Path) -> None:
    document = {"hub": {"workspaces": str(tmp_path / "ws")}, "mcpServers": {"local": local_server()}}
    async with run_config(document) as (url, hub), Client(url, mode="legacy") as client:
        assert text(await client.call_tool("local__echo", {"text": "one"})) == "local: one"
        [first] = tenant_pids(hub)
        os.kill(first, signal.SIGKILL)
        await wait_gone(tree(first))
        # The first call after the death may meet the dead process before the hub has seen its stdout
        # close; that loses the session at once, so the next call starts another process.
        try:
            answer = await client.call_tool("local__echo", {"text": "two"})
        except MCPError as exc:
            assert "upstream 'local'" in exc.error.message
            answer = await client.call_tool("local__echo", {"text": "two"})
        assert text(answer) == "local: two"
        [again] = [p for p in processes(hub) if p["role"] == "tenant"]
        assert again["pid"] != first and again["restarts"] == 1
        assert hub.health()["upstreams"][0]["breaker"]["state"] == "closed"  # one death is no reason to open it


async def test_removing_an_upstream_stops_its_processes(tmp_path: Path) -> None:
    document = {"hub": {"workspaces": str(tmp_path / "ws")}, "mcpServers": {"local": local_server()}}
    async with run_config(document) as (url, hub), Client(url, mode="legacy") as client:
        assert text(await client.call_tool("local__attempt_fork", {"count": 2})) == "started 2"
        pids = [pid for p in processes(hub) for pid in tree(p["pid"])]
        assert len(pids) >= 4
        await hub.pool.remove("local", deadline=5.0)
        await wait_gone(pids)
        assert len(hub.pool.processes) == 0


def test_no_zombie_is_left_behind_by_the_test_process() -> None:
    zombies = [pid for pid in descendants(os.getpid()) if not alive(pid) and os.path.exists(f"/proc/{pid}")]
    assert zombies == []


@asynccontextmanager
async def hub_process(tmp_path: Path) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """``python -m hub serve`` in front of the local server, until its health says the upstream is up."""
    sock = reserve_port()
    port = sock.getsockname()[1]
    sock.close()
    config = {
        "hub": {"port": port, "storage": ":memory:", "workspaces": str(tmp_path / "ws")},
        "mcpServers": {"local": local_server()},
    }
    path = tmp_path / "hub.json"
    path.write_text(json.dumps(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MANIFOLD_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hub", "serve", "--config", str(path), cwd=ROOT, env=env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        async with asyncio.timeout(WAIT), httpx.AsyncClient(trust_env=False) as http:
            while True:  # polling a port another process opens: bounded by the timeout
                with contextlib.suppress(httpx.HTTPError):
                    health = (await http.get(f"{base}/health")).json()
                    if health["upstreams"][0]["state"] == "up":
                        break
                await asyncio.sleep(0.1)
        yield process, f"{base}/mcp"
    finally:
        if process.returncode is None:
            process.kill()
        await asyncio.wait_for(process.wait(), WAIT)


async def test_nothing_outlives_a_hub_killed_with_sigkill(tmp_path: Path) -> None:
    async with hub_process(tmp_path) as (hub, url), Client(url, mode="legacy") as client:
        assert text(await client.call_tool("local__attempt_outlive", {})) == "left a daemon"
        assert text(await client.call_tool("local__attempt_fork", {"count": 3})) == "started 3"
        started = descendants(hub.pid)
        # Two processes (discovery, the client's tenant), each bubblewrap, its init, the server;
        # and what the server started: a daemon in a session of its own, three children.
        assert len(started) >= 10, started
        hub.kill()
        await hub.wait()
    await wait_gone(started)


async def test_in_the_2026_era_an_isolated_local_server_runs_a_process_per_principal(tmp_path: Path) -> None:
    keys = {"ann": "key-ann-0123456789abcdef", "bob": "key-bob-0123456789abcdef"}
    document = {
        "hub": {"workspaces": str(tmp_path / "ws")},
        "auth": {
            "apiKeys": [
                {"name": n, "sha256": hashlib.sha256(k.encode()).hexdigest(), "tenant": "acme"} for n, k in keys.items()
            ]
        },
        "tenants": {"acme": {}},
        "mcpServers": {"local": local_server(sessionMode="isolated")},
    }
    async with run_config(document) as (url, hub):
        for name, key in keys.items():
            http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=WAIT)
            async with http, Client(streamable_http_client(url, http_client=http)) as client:
                assert client.protocol_version == "2026-07-28"
                assert text(await client.call_tool("local__echo", {"text": name})) == f"local: {name}"
                again = await client.call_tool("local__echo", {"text": name})  # the same principal: the same process
                assert text(again) == f"local: {name}"
        assert len(tenant_pids(hub)) == 2


async def test_a_process_that_cannot_be_written_to_loses_its_session_at_once(tmp_path: Path) -> None:
    """A write that fails loses the session then, not once the process's stdout is seen to close
    (which may be later, or never): the next use opens a new session instead of failing again."""
    config = parse_config(
        {"hub": {"workspaces": str(tmp_path / "ws")}, "mcpServers": {"local": local_server()}}, env={}
    )
    [spec] = config.upstream_specs()
    table = Processes()
    transport = StdioTransport(spec, table, "acme")
    try:
        async with Connector(spec, transport) as connector:
            assert (await connector.request("tools/call", {"name": "echo", "arguments": {"text": "one"}}))["content"]
            running = table.of("local")[0]
            assert running.process.stdin is not None
            running.process.stdin.close()  # the pipe is gone; the process itself still runs
            with pytest.raises(UpstreamUnavailable, match="upstream 'local': the process exited"):
                await connector.request("tools/call", {"name": "echo", "arguments": {"text": "two"}})
            assert connector.is_lost and alive(running.pid)
    finally:
        await table.aclose()
    await wait_gone([running.pid])


async def test_the_hub_wide_cap_on_processes_refuses_the_next_one_naming_it(tmp_path: Path) -> None:

    config = parse_config(
        {"hub": {"workspaces": str(tmp_path / "ws")}, "mcpServers": {"local": local_server()}}, env={}
    )
    [spec] = config.upstream_specs()
    table = Processes(max_total=1)
    running = await table.start(spec, "acme")
    try:
        with pytest.raises(
            UpstreamBusy, match=r"upstream 'local': the hub runs 1 local processes \(hub.maxProcesses\)"
        ):
            await table.start(spec, "zeta")
        assert [p.key for p in table.of("local")] == ["acme"]
    finally:
        await table.aclose()
    await wait_gone([running.pid])
    assert len(table) == 0
