"""Local servers from npm through the hub, each in its sandbox: server-everything on stdio, server-filesystem
per tenant. They need the npm peers `make test` installs (MANIFOLD_NODE_MODULES)."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import httpx2
import mcp_types as types
import pytest
from mcp import Client
from mcp.client import ClientRequestContext
from mcp.client.streamable_http import streamable_http_client

from tests.servers import run_config
from tests.stdio_helpers import WAIT

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

KEYS = {"ann": "key-ann-0123456789abcdef", "eve": "key-eve-0123456789abcdef"}


def text(result: types.CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, types.TextContent))


def npm_server(modules: Path, package: str, *args: str) -> dict[str, Any]:
    entry = modules / "@modelcontextprotocol" / package / "dist" / "index.js"
    node = modules / "node" / "bin" / "node"
    return {"command": str(node), "args": [str(entry), *args], "sandbox": {"paths": [str(modules)]}}


async def test_server_everything_on_stdio_progress_sampling_and_its_list_change(
    node_modules: Path, tmp_path: Path
) -> None:
    updates: list[float] = []
    sampled: list[str] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append(progress)

    async def sampling(context: ClientRequestContext, params: types.CreateMessageRequestParams) -> Any:
        content = params.messages[0].content
        assert isinstance(content, types.TextContent)
        sampled.append(content.text)
        return types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text="42"), model="m")

    changed = asyncio.Event()
    gated = "everything__trigger-sampling-request"

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    servers = {"everything": npm_server(node_modules, "server-everything", "stdio")}
    document = {"hub": {"workspaces": str(tmp_path / "ws")}, "mcpServers": servers}
    async with run_config(document) as (url, hub):
        # It registers its capability-gated tools once initialized and says the list changed: the hub
        # hears that on the discovery process's stdout and lists again.
        async with Client(url, mode="legacy", message_handler=on_message):
            if gated not in {tool["name"] for tool in hub.catalog.items("tools")}:
                await asyncio.wait_for(changed.wait(), WAIT)
        async with Client(url, mode="legacy", sampling_callback=sampling) as client:
            assert "over stdio" in text(await client.call_tool("everything__echo", {"message": "over stdio"}))
            done = await client.call_tool(
                "everything__trigger-long-running-operation",
                {"duration": 0.3, "steps": 3},
                progress_callback=on_progress,
            )
            assert "Steps: 3" in text(done) and updates == [1, 2, 3]
            answer = await client.call_tool(gated, {"prompt": "six times seven?"})
            assert sampled and "six times seven?" in sampled[0] and "42" in text(answer)
        [health] = hub.health()["upstreams"]
        assert health["transport"] == "stdio" and {p["role"] for p in health["processes"]} == {"discovery", "tenant"}


async def test_server_filesystem_gives_each_tenant_its_own_workspace(node_modules: Path, tmp_path: Path) -> None:
    keys = [
        {"name": n, "sha256": hashlib.sha256(k.encode()).hexdigest(), "tenant": t}
        for (n, k), t in zip(KEYS.items(), ("acme", "zeta"), strict=True)
    ]
    document = {
        "hub": {"workspaces": str(tmp_path / "ws")},
        "auth": {"apiKeys": keys},
        "tenants": {"acme": {}, "zeta": {}},
        "mcpServers": {"files": npm_server(node_modules, "server-filesystem", "/workspace")},
    }
    async with run_config(document) as (url, _):
        clients = []
        for name in KEYS:
            http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {KEYS[name]}"}, timeout=WAIT)
            clients.append((http, Client(streamable_http_client(url, http_client=http), mode="legacy")))
        (ann_http, ann), (eve_http, eve) = clients
        async with ann_http, eve_http, ann, eve:
            wrote = await ann.call_tool("files__write_file", {"path": "/workspace/plan.md", "content": "acme's plan"})
            assert not wrote.is_error, text(wrote)
            mine = await ann.call_tool("files__read_text_file", {"path": "/workspace/plan.md"})
            assert text(mine) == "acme's plan"
            listed = await eve.call_tool("files__list_directory", {"path": "/workspace"})
            assert "plan.md" not in text(listed)
            stolen = await eve.call_tool("files__read_text_file", {"path": "/workspace/plan.md"})
            assert stolen.is_error and "acme's plan" not in text(stolen)
            outside = await eve.call_tool("files__read_text_file", {"path": "/etc/passwd"})
            assert outside.is_error
    assert (tmp_path / "ws" / "acme" / "files" / "plan.md").read_text() == "acme's plan"
    assert not (tmp_path / "ws" / "zeta" / "files" / "plan.md").exists()
