"""The JSON log format: one object per line, with the ids of what a line is about, and no credential."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path

import httpx
import pytest
from mcp import Client

from connectors import log_context
from hub.logs import JsonFormatter
from tests.servers import reserve_port, serve
from tests.upstreams import http_app
from tests.wire import WAIT

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent


def test_a_json_line_carries_the_ids_in_context_and_masks_credentials() -> None:
    record = logging.LogRecord("hub.x", logging.WARNING, __file__, 1, "refused %s", ("Bearer abcdef123456",), None)
    tokens = [log_context.TENANT.set("acme"), log_context.UPSTREAM.set("alpha")]
    try:
        line = json.loads(JsonFormatter().format(record))
    finally:
        log_context.UPSTREAM.reset(tokens[1])
        log_context.TENANT.reset(tokens[0])
    assert line["level"] == "warning" and line["logger"] == "hub.x"
    assert line["event"] == "refused Bearer ***" and line["tenant"] == "acme" and line["upstream"] == "alpha"
    assert line["time"].endswith("+00:00") and "session" not in line


async def test_a_hub_started_with_the_json_format_logs_json_lines(tmp_path: Path) -> None:
    sock = reserve_port()
    port = sock.getsockname()[1]
    sock.close()
    async with serve(http_app("alpha")) as alpha:
        path = tmp_path / "hub.json"
        path.write_text(
            json.dumps({"hub": {"port": port, "storage": ":memory:"}, "mcpServers": {"alpha": {"url": f"{alpha}/mcp"}}})
        )
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("MANIFOLD_")}, "MANIFOLD_LOG_FORMAT": "json"}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hub", "serve", "--config", str(path), "--log-level", "info", cwd=ROOT, env=env,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert process.stderr is not None
        lines: list[dict[str, object]] = []
        try:
            async with asyncio.timeout(WAIT):
                while not any("Uvicorn running" in str(line.get("event")) for line in lines):
                    raw = await process.stderr.readline()
                    assert raw, "the hub exited"
                    lines.append(json.loads(raw))  # every line is one JSON object
            async with Client(f"http://127.0.0.1:{port}/mcp", mode="legacy") as client:
                await client.call_tool("alpha__echo", {"text": "hi"})
            async with httpx.AsyncClient(trust_env=False) as http:
                await http.get(f"http://127.0.0.1:{port}/health")
        finally:
            process.terminate()
            _, rest = await asyncio.wait_for(process.communicate(), WAIT)
        lines += [json.loads(raw) for raw in rest.splitlines()]  # the drain's lines too: all JSON
    events = [str(line["event"]) for line in lines]
    assert any(event.startswith("upstream alpha is up") for event in events)
    assert any("GET /health" in str(line["event"]) and line["logger"] == "uvicorn.access" for line in lines)
    assert "drained" in events
    assert all({"time", "level", "logger", "event"} <= line.keys() for line in lines)
