"""Local MCP servers as upstreams, end to end: a real SDK server on stdio, in its sandbox, through the hub."""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

import httpx2
import mcp_types as types
import pytest
from mcp import Client
from mcp.client import ClientRequestContext
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from hub.runtime import Hub
from tests.servers import run_config
from tests.stdio_helpers import ROOT, WAIT, local_server, tree, wait_gone

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

KEYS = {"ann": "key-ann-0123456789abcdef", "eve": "key-eve-0123456789abcdef"}
TENANT = {"ann": "acme", "eve": "zeta"}


def text(result: types.CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, types.TextContent))


def processes(hub: Hub, upstream: str = "local") -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = next(u for u in hub.health()["upstreams"] if u["name"] == upstream)["processes"]
    return found


def keyed(document: dict[str, Any]) -> dict[str, Any]:
    keys = [{"name": n, "sha256": hashlib.sha256(k.encode()).hexdigest(), "tenant": TENANT[n]} for n, k in KEYS.items()]
    return {**document, "auth": {"apiKeys": keys}, "tenants": {"acme": {}, "zeta": {}}}


def as_principal(url: str, name: str) -> tuple[httpx2.AsyncClient, Client]:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {KEYS[name]}"}, timeout=WAIT)
    return http, Client(streamable_http_client(url, http_client=http), mode="legacy")


async def test_a_local_sdk_server_serves_tools_progress_sampling_and_list_changes(tmp_path: Path) -> None:
    updates: list[float] = []

    async def sampling(context: ClientRequestContext, params: types.CreateMessageRequestParams) -> Any:
        return types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text="42"), model="m")

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append(progress)

    document = {"hub": {"workspaces": str(tmp_path / "ws")}, "mcpServers": {"local": local_server()}}
    async with (
        run_config(document) as (url, hub),
        Client(url, mode="legacy", sampling_callback=sampling) as client,
    ):
        assert hub.health()["upstreams"][0]["state"] == "up"
        assert hub.health()["upstreams"][0]["sandbox"] == {"on": True, "loosened": [f"reads {ROOT}"]}
        assert text(await client.call_tool("local__echo", {"text": "over stdio"})) == "local: over stdio"
        done = await client.call_tool("local__progress", {"steps": 3}, progress_callback=on_progress)
        assert text(done) == "3 steps done" and updates == [1, 2, 3]
        assert text(await client.call_tool("local__ask_model", {"prompt": "six times seven?"})) == "local heard: 42"

        running = processes(hub)
        # One process discovers the catalog; the client's tenant (here the default) has one of its own.
        assert len(running) == 2 and len({p["pid"] for p in running}) == 2
        assert all(p["rssBytes"] > 0 and p["restarts"] == 0 for p in running), running
        pids = [pid for p in running for pid in tree(p["pid"])]

        async with Client(url) as modern:  # a 2026-07-28 client reaches it too
            assert text(await modern.call_tool("local__echo", {"text": "stateless"})) == "local: stateless"
    await wait_gone(pids)  # the hub stopped: every process it started, and theirs, ended


async def test_two_tenants_each_have_a_process_and_a_workspace_neither_sees_the_other(tmp_path: Path) -> None:
    workspaces = tmp_path / "ws"
    document = keyed({"hub": {"workspaces": str(workspaces)}, "mcpServers": {"local": local_server()}})
    async with run_config(document) as (url, hub):
        ann_http, ann = as_principal(url, "ann")
        eve_http, eve = as_principal(url, "eve")
        async with ann_http, eve_http, ann, eve:
            wrote = await ann.call_tool("local__attempt_write", {"path": "/workspace/plan.txt", "text": "acme's plan"})
            assert text(wrote) == "wrote"
            assert (
                text(await ann.call_tool("local__attempt_read", {"path": "/workspace/plan.txt"})) == "read: acme's plan"
            )
            stolen = await eve.call_tool("local__attempt_read", {"path": "/workspace/plan.txt"})
            assert text(stolen) == "refused: No such file or directory"
            ann_is = json.loads(text(await ann.call_tool("local__whoami", {})))
            eve_is = json.loads(text(await eve.call_tool("local__whoami", {})))
            assert ann_is["cwd"] == eve_is["cwd"] == "/workspace" and ann_is["host"] == "sandbox"

            tenants = {p["tenant"]: p["pid"] for p in processes(hub)}
            assert set(tenants) == {None, "acme", "zeta"} and len(set(tenants.values())) == 3, tenants
        assert (workspaces / "acme" / "local" / "plan.txt").read_text() == "acme's plan"
        assert not (workspaces / "zeta" / "local" / "plan.txt").exists()
        if ann_is["uid"] != 1000:  # a hub run as root gives each tenant's sandbox a user of its own
            assert ann_is["uid"] != eve_is["uid"]


async def test_what_a_local_server_says_on_stderr_and_stdout_beside_the_protocol(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "tok-0123456789-secret"
    entry = local_server(env={"PYTHONPATH": str(ROOT), "API_TOKEN": secret})
    # A shell says something that is not JSON on stdout before the server starts.
    entry["sandbox"]["paths"].append(sys.base_prefix)
    entry |= {
        "command": "/bin/sh",
        "args": ["-c", 'echo this is not JSON; exec "$0" "$@"', *[sys.executable, *entry["args"]]],
    }
    document = {
        "hub": {"workspaces": str(tmp_path / "ws")},
        "mcpServers": {"local": {**entry, "maxResultBytes": 65536}},
    }
    caplog.set_level(logging.INFO, logger="connectors")
    async with run_config(document) as (url, hub), Client(url, mode="legacy") as client:
        assert text(await client.call_tool("local__say_on_stderr", {"text": f"token is {secret}"})) == "said"
        assert text(await client.call_tool("local__echo", {"text": "still here"})) == "local: still here"

        before = {p["pid"] for p in processes(hub)}
        with pytest.raises(MCPError) as refused:
            await client.call_tool("local__big", {"megabytes": 0.1})
        assert "upstream 'local'" in refused.value.error.message
        assert "larger than the limit of 65536 bytes (maxResultBytes)" in refused.value.error.message
        # The process that sent too much was stopped; the next call has a new one.
        assert text(await client.call_tool("local__echo", {"text": "again"})) == "local: again"
        after = {p["pid"] for p in processes(hub)}
        assert len(after) == 2 and len(after - before) == 1
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "token is ***" in logged and secret not in logged
    assert "a line on stdout is not JSON (17 bytes); skipped" in logged
