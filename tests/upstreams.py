"""Upstream MCP servers for the tests, built with the official SDK.

A :class:`Probe` records what reached the upstream, with events the tests
wait on (with timeouts) instead of sleeping.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel
from starlette.types import ASGIApp


@dataclass
class Probe:
    slow_started: asyncio.Event = field(default_factory=asyncio.Event)
    slow_cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    arrivals: int = 0
    all_arrived: asyncio.Event = field(default_factory=asyncio.Event)
    expected_arrivals: int = 2
    release: asyncio.Event = field(default_factory=asyncio.Event)


class Forecast(BaseModel):
    city: str
    celsius: float


def build_upstream(name: str, probe: Probe | None = None) -> MCPServer:
    """A server with a tool for each behaviour the hub must carry."""
    probe = probe or Probe()
    server = MCPServer(name, version="1.0.0", instructions=f"the {name} test upstream", log_level="WARNING")

    @server.tool()
    def echo(text: str) -> str:
        """Echo the text back, prefixed with the upstream's name."""
        return f"{name}: {text}"

    @server.tool()
    async def progress(ctx: Context, steps: int = 3) -> str:
        """Report progress ``steps`` times, then finish."""
        for step in range(1, steps + 1):
            await ctx.report_progress(step, steps, f"step {step}")
        return f"{steps} steps done"

    @server.tool()
    async def slow(seconds: float = 30.0) -> str:
        """Sleep, recording whether the call was cancelled."""
        probe.slow_started.set()
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            probe.slow_cancelled.set()
            raise
        return "slept"

    @server.tool()
    async def rendezvous(text: str) -> str:
        """Return only once ``expected_arrivals`` calls are in flight together."""
        probe.arrivals += 1
        if probe.arrivals >= probe.expected_arrivals:
            probe.all_arrived.set()
        await asyncio.wait_for(probe.all_arrived.wait(), timeout=10)
        return f"{name}: {text}"

    @server.tool()
    def forecast(city: str) -> Forecast:
        """Structured output."""
        return Forecast(city=city, celsius=21.5)

    @server.tool()
    def fail(reason: str) -> str:
        """Raise, so the result is a tool error."""
        raise ToolError(reason)

    @server.prompt()
    def greet(who: str) -> str:
        """Greet someone."""
        return f"Hello {who}, from {name}"

    @server.resource("file:///readme.txt", mime_type="text/plain")
    def readme() -> str:
        """A file with the same URI on every test upstream."""
        return f"readme of {name}"

    @server.resource("item://{item_id}", mime_type="text/plain")
    def item(item_id: str) -> str:
        """One item by id."""
        return f"{name} item {item_id}"

    return server


def http_app(name: str, probe: Probe | None = None) -> ASGIApp:
    return build_upstream(name, probe).streamable_http_app(streamable_http_path="/mcp")


def sse_app(name: str, probe: Probe | None = None) -> ASGIApp:
    return build_upstream(name, probe).sse_app(sse_path="/sse", message_path="/messages/")
