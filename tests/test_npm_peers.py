"""Real npm-packaged peers: the reference `server-everything` upstream and the MCP Inspector CLI client.

They need Node 22 and the npm packages that `make test` installs under .cache/node and names in
MANIFOLD_NODE_MODULES; run outside make without them, these tests are skipped with that reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import mcp_types as types
import pytest
from mcp import Client
from mcp.client import ClientRequestContext

from tests.modern_wire import post, request
from tests.npm_peers import WAIT, everything, node_env
from tests.servers import run_config, run_hub, serve
from tests.upstreams import http_app
from tests.wire import AnsweringSession, RawClient

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(("mode", "version"), [("auto", "2026-07-28"), ("legacy", "2025-11-25")])
async def test_server_everything_through_the_hub(node_modules: Path, mode: str, version: str) -> None:
    updates: list[tuple[float, float | None]] = []
    sampled: list[str] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append((progress, total))

    async def sampling(context: ClientRequestContext, params: types.CreateMessageRequestParams) -> Any:
        content = params.messages[0].content
        assert isinstance(content, types.TextContent)
        sampled.append(content.text)
        return types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text="42"), model="m")

    async def elicitation(context: ClientRequestContext, params: types.ElicitRequestParams) -> types.ElicitResult:
        assert isinstance(params, types.ElicitRequestFormParams)
        properties = params.requested_schema.get("properties", {})
        required = params.requested_schema.get("required", [])
        answer = {name: _sample_value(properties[name]) for name in required}
        return types.ElicitResult(action="accept", content=answer)

    changed = asyncio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    gated = "everything__trigger-sampling-request"
    async with (
        everything(node_modules) as upstream,
        run_hub({"everything": {"url": upstream, "timeouts": {"request": 60}}}) as (url, hub),
        AsyncExitStack() as stack,
    ):
        # server-everything registers its capability-gated tools only once initialized, then says
        # list_changed; the hub lists it again and tells its (session-era) clients.
        async with Client(url, mode="legacy", message_handler=on_message):
            if gated not in {tool["name"] for tool in hub.catalog.items("tools")}:
                await asyncio.wait_for(changed.wait(), WAIT)
        client = await stack.enter_async_context(
            Client(url, mode=mode, sampling_callback=sampling, elicitation_callback=elicitation)
        )
        assert client.protocol_version == version
        names = {tool.name for tool in (await client.list_tools(cache_mode="bypass")).tools}
        assert {"everything__echo", "everything__trigger-long-running-operation", gated} <= names

        echoed = await client.call_tool("everything__echo", {"message": "through the hub"})
        assert "through the hub" in _text(echoed)

        arguments = {"duration": 0.3, "steps": 3}
        done = await client.call_tool(
            "everything__trigger-long-running-operation", arguments, progress_callback=on_progress
        )
        assert "Steps: 3" in _text(done)
        assert updates == [(1, 3), (2, 3), (3, 3)]

        answer = await client.call_tool("everything__trigger-sampling-request", {"prompt": "six times seven?"})
        assert len(sampled) == 1 and "six times seven?" in sampled[0]
        assert "42" in _text(answer)

        elicited = await client.call_tool("everything__trigger-elicitation-request", {})
        assert "accept" in _text(elicited).lower()
        assert hub.modern.calls.parked == 0

        # server-everything announces its list changes, so stateless clients may cache the list a while.
        async with httpx.AsyncClient(timeout=WAIT, trust_env=False) as http:
            _, (listed,) = await post(http, url, *request(1, "tools/list"))
        assert listed["result"]["ttlMs"] == 60_000 and listed["result"]["cacheScope"] == "public"


def _text(result: types.CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, types.TextContent))


def _sample_value(schema: dict[str, Any]) -> Any:
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "boolean":
        return True
    if kind in ("integer", "number"):
        return schema.get("minimum", 1)
    if kind == "array":
        items = schema.get("items", {})
        return [_sample_value(items)] if items else []
    if schema.get("format") == "email":
        return "ada@example.com"
    return "Ada"


async def inspector_refused(modules: Path, url: str, *args: str) -> int:
    """The Inspector's exit code for a call expected to fail (its output need not be JSON)."""
    cli = modules / "@modelcontextprotocol" / "inspector" / "clients" / "launcher" / "build" / "index.js"
    process = await asyncio.create_subprocess_exec(
        str(modules / "node" / "bin" / "node"),
        str(cli),
        "--cli",
        url,
        "--transport",
        "http",
        "--format",
        "json",
        *args,
        env=node_env(modules),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    await asyncio.wait_for(process.communicate(), WAIT)
    assert process.returncode is not None
    return process.returncode


async def inspector(modules: Path, url: str, *args: str) -> tuple[int, dict[str, Any]]:
    cli = modules / "@modelcontextprotocol" / "inspector" / "clients" / "launcher" / "build" / "index.js"
    process = await asyncio.create_subprocess_exec(
        str(modules / "node" / "bin" / "node"),
        str(cli),
        "--cli",
        url,
        "--transport",
        "http",
        "--format",
        "json",
        *args,
        env=node_env(modules),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), WAIT)
    assert process.returncode is not None
    output = stdout.decode().strip().splitlines()
    assert output, f"no output; stderr: {stderr.decode()[-2000:]}"
    decoded: dict[str, Any] = json.loads(output[-1])
    return process.returncode, decoded


async def test_the_mcp_inspector_cli_lists_and_calls_through_the_hub(node_modules: Path) -> None:
    async with serve(http_app("alpha")) as alpha, run_hub({"alpha": {"url": f"{alpha}/mcp"}}) as (url, _):
        code, listed = await inspector(node_modules, url, "--method", "tools/list")
        assert code == 0
        assert "alpha__echo" in {tool["name"] for tool in listed["result"]["tools"]}
        code, called = await inspector(
            node_modules, url, "--method", "tools/call", "--tool-name", "alpha__echo", "--tool-arg", "text=inspected"
        )
        assert code == 0
        assert called["result"]["content"] == [{"type": "text", "text": "alpha: inspected"}]


async def test_tasks_pass_through_to_an_upstream_that_offers_them(node_modules: Path) -> None:
    research = {"name": "everything__simulate-research-query", "arguments": {"topic": "tides"}, "task": {"ttl": 60000}}
    async with (
        everything(node_modules) as upstream,
        run_hub({"everything": {"url": upstream}}) as (url, hub),
        RawClient(url) as raw,
    ):
        assert hub.server_capabilities()["tasks"]["requests"] == {"tools": {"call": {}}}
        first = (await raw.stream("tools/call", research))[-1]["result"]["task"]
        second = (await raw.stream("tools/call", research))[-1]["result"]["task"]
        assert first["taskId"].startswith("everything:") and first["status"] == "working"

        got = (await raw.stream("tasks/get", {"taskId": first["taskId"]}))[-1]["result"]
        assert got["taskId"] == first["taskId"] and got["status"] in ("working", "completed")
        listed = (await raw.stream("tasks/list", {}))[-1]["result"]["tasks"]
        assert {first["taskId"], second["taskId"]} <= {task["taskId"] for task in listed}

        cancelled = (await raw.stream("tasks/cancel", {"taskId": second["taskId"]}))[-1]["result"]
        assert cancelled == {**cancelled, "taskId": second["taskId"], "status": "cancelled"}

        outcome = (await raw.stream("tasks/result", {"taskId": first["taskId"]}))[-1]["result"]
        assert "tides" in outcome["content"][0]["text"]
        related = outcome.get("_meta", {}).get("io.modelcontextprotocol/related-task")
        assert related is None or related["taskId"] == first["taskId"]

        unknown = (await raw.stream("tasks/get", {"taskId": "nope"}))[-1]
        assert unknown["error"]["code"] == -32602


async def test_a_question_asked_during_tasks_result_names_the_task_by_its_public_id(node_modules: Path) -> None:
    """server-everything's ambiguous research asks for clarification on the ``tasks/result`` stream,
    naming its task in ``_meta``: the client knows that task only by the hub's public id."""
    key = "key-ann-0123456789abcdef"
    entry = {"name": "ann", "sha256": hashlib.sha256(key.encode()).hexdigest(), "tenant": "t"}
    async with everything(node_modules) as upstream:
        document = {"auth": {"apiKeys": [entry]}, "tenants": {"t": {}}, "mcpServers": {"everything": {"url": upstream}}}
        async with run_config(document, env={}) as (url, _), httpx.AsyncClient(timeout=WAIT, trust_env=False) as http:
            ann = AnsweringSession(http, url, key)
            await ann.open()
            research = {"topic": "python", "ambiguous": True}
            call = {"name": "everything__simulate-research-query", "arguments": research, "task": {"ttl": 60000}}
            task_id = (await ann.request("tools/call", call))["result"]["task"]["taskId"]
            answer = {"action": "accept", "content": {"interpretation": "the snake"}}
            outcome = (await ann.request("tasks/result", {"taskId": task_id}, answer))["result"]
    assert "the snake" in outcome["content"][0]["text"]
    [question] = ann.questions
    assert question["method"] == "elicitation/create"
    assert question["params"]["_meta"]["io.modelcontextprotocol/related-task"] == {"taskId": task_id}


async def test_the_mcp_inspector_cli_connects_with_a_bearer_key(node_modules: Path) -> None:
    key = "mfd_inspector-key"
    entry = {"name": "inspector", "sha256": hashlib.sha256(key.encode()).hexdigest(), "tenant": "t"}
    async with serve(http_app("alpha")) as alpha:
        document = {
            "mcpServers": {"alpha": {"url": f"{alpha}/mcp"}},
            "auth": {"apiKeys": [entry]},
            "tenants": {"t": {}},
        }
        async with run_config(document) as (url, _):
            code, listed = await inspector(
                node_modules, url, "--method", "tools/list", "--header", f"Authorization: Bearer {key}"
            )
            assert code == 0
            assert "alpha__echo" in {tool["name"] for tool in listed["result"]["tools"]}
            refused = await inspector_refused(node_modules, url, "--method", "tools/list")
            assert refused != 0  # no key: refused
