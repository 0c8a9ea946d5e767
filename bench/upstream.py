"""Upstreams for the benchmark, built with the official SDK, each run as its own process.

``fast``: one server with ``echo(text)``, ``slow(ms)`` and ``progress(steps)``
(``stdio``: the same on stdin and stdout);
each progress notification carries the monotonic clock (ns) at which it was
sent, so a client can time its way to it (CLOCK_MONOTONIC is shared by every
process on the machine). ``farm``: ``--count`` servers of ``--tools`` tools
each, on consecutive ports, for the catalog-scale run.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import uvicorn
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from starlette.types import ASGIApp

__all__ = ["farm_app", "fast_app", "fast_server"]


def fast_server() -> MCPServer:
    server = MCPServer("bench", version="1.0.0", log_level="WARNING")

    @server.tool()
    def echo(text: str) -> str:
        """Echo the text."""
        return text

    @server.tool()
    async def slow(ms: int) -> str:
        """Sleep for ``ms`` milliseconds."""
        await asyncio.sleep(ms / 1000)
        return "done"

    @server.tool()
    async def progress(ctx: Context, steps: int = 100) -> str:
        """Send ``steps`` progress notifications, each stamped with its send time."""
        for step in range(1, steps + 1):
            await ctx.report_progress(step, steps, str(time.monotonic_ns()))
        return f"{steps} steps"

    return server


def fast_app() -> ASGIApp:
    return fast_server().streamable_http_app(streamable_http_path="/mcp")


def farm_app(index: int, tools: int) -> ASGIApp:
    server = MCPServer(f"farm{index}", version="1.0.0", log_level="WARNING")
    for number in range(tools):

        def tool(text: str, number: int = number) -> str:
            return f"{number}: {text}"

        server.add_tool(tool, name=f"tool_{number:03d}", description=f"Tool {number} of server {index}.")
    return server.streamable_http_app(streamable_http_path="/mcp")


async def serve_all(apps: list[tuple[ASGIApp, int]]) -> None:
    servers = [
        uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")) for app, port in apps
    ]
    await asyncio.gather(*(server.serve() for server in servers))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=["fast", "farm", "stdio"])
    parser.add_argument("--port", type=int, default=0, help="the (first) port")
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--tools", type=int, default=100)
    args = parser.parse_args()
    if args.kind == "stdio":  # the fast server on stdin and stdout, as a local server
        fast_server().run("stdio")
        return
    if args.kind == "fast":
        apps = [(fast_app(), args.port)]
    else:
        apps = [(farm_app(i, args.tools), args.port + i) for i in range(args.count)]
    asyncio.run(serve_all(apps))


if __name__ == "__main__":
    main()
