"""Two small MCP servers, written with the official SDK, to put behind the hub.

``notes`` speaks Streamable HTTP on 127.0.0.1:8801/mcp and ``clock`` speaks
the legacy HTTP+SSE transport on 127.0.0.1:8802/sse. Run this module to serve
both (``make run`` does, before it starts the hub).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import zoneinfo

import uvicorn
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from starlette.types import ASGIApp

__all__ = ["build_clock", "build_notes", "clock_app", "notes_app"]


def build_notes() -> MCPServer:
    """A notebook: add and search notes, index them with progress, a prompt and a resource."""
    server = MCPServer("notes", version="1.0.0", instructions="A small notebook.", log_level="WARNING")
    notes: list[str] = []

    @server.tool()
    def add_note(text: str) -> str:
        """Add a note and return its number."""
        notes.append(text)
        return f"note {len(notes)} saved"

    @server.tool()
    def search_notes(query: str) -> list[str]:
        """Return the notes that contain the query (case-insensitive)."""
        return [note for note in notes if query.lower() in note.lower()]

    @server.tool()
    async def index_notes(ctx: Context, steps: int = 5) -> str:
        """Rebuild the search index, reporting progress at each step."""
        for step in range(1, steps + 1):
            await ctx.report_progress(step, steps, f"indexed part {step} of {steps}")
            await asyncio.sleep(0.05)
        return f"index rebuilt in {steps} steps over {len(notes)} notes"

    @server.prompt()
    def summarize(style: str = "short") -> str:
        """Ask for a summary of every note."""
        body = "\n".join(f"- {note}" for note in notes) or "(no notes yet)"
        return f"Summarize these notes in a {style} style:\n{body}"

    @server.resource("notes://all", mime_type="text/plain")
    def all_notes() -> str:
        """Every note, one a line."""
        return "\n".join(notes)

    return server


def build_clock() -> MCPServer:
    """A clock: the time anywhere, a countdown with progress, a prompt and resources."""
    server = MCPServer("clock", version="1.0.0", instructions="Tells the time.", log_level="WARNING")

    @server.tool()
    def now(timezone: str = "UTC") -> str:
        """The current time in an IANA time zone, ISO 8601."""
        return dt.datetime.now(zoneinfo.ZoneInfo(timezone)).isoformat(timespec="seconds")

    @server.tool()
    async def countdown(ctx: Context, seconds: int = 3) -> str:
        """Count down, reporting progress every tick (ticks are 100 ms)."""
        for tick in range(1, seconds + 1):
            await ctx.report_progress(tick, seconds, f"{seconds - tick} left")
            await asyncio.sleep(0.1)
        return "liftoff"

    @server.prompt()
    def schedule(event: str) -> str:
        """Ask for a good time for an event."""
        return f"Suggest a good time for: {event}"

    @server.resource("clock://zones", mime_type="text/plain")
    def zones() -> str:
        """A few well-known time zones."""
        return "\n".join(["UTC", "Europe/Paris", "America/New_York", "Asia/Tokyo"])

    @server.resource("clock://zone/{name}", mime_type="text/plain")
    def zone(name: str) -> str:
        """The current UTC offset of one time zone."""
        offset = dt.datetime.now(zoneinfo.ZoneInfo(name)).strftime("%z")
        return f"{name} {offset}"

    return server


def notes_app() -> ASGIApp:
    return build_notes().streamable_http_app(streamable_http_path="/mcp")


def clock_app() -> ASGIApp:
    return build_clock().sse_app(sse_path="/sse", message_path="/messages/")


async def serve(notes_port: int, clock_port: int) -> None:
    servers = [
        uvicorn.Server(uvicorn.Config(notes_app(), host="127.0.0.1", port=notes_port, log_level="warning")),
        uvicorn.Server(uvicorn.Config(clock_app(), host="127.0.0.1", port=clock_port, log_level="warning")),
    ]
    print(f"demo upstreams: notes on http://127.0.0.1:{notes_port}/mcp, clock on http://127.0.0.1:{clock_port}/sse")
    await asyncio.gather(*(server.serve() for server in servers))


async def wait_listening(ports: list[int], deadline: float) -> bool:
    """True once every port accepts a connection on 127.0.0.1, False after ``deadline`` seconds."""
    try:
        async with asyncio.timeout(deadline):
            for port in ports:
                while True:
                    try:
                        _, writer = await asyncio.open_connection("127.0.0.1", port)
                    except OSError:
                        await asyncio.sleep(0.1)
                        continue
                    writer.close()
                    await writer.wait_closed()
                    break
    except TimeoutError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--notes-port", type=int, default=8801)
    parser.add_argument("--clock-port", type=int, default=8802)
    parser.add_argument("--wait", action="store_true", help="only wait (up to 15 s) until both are listening")
    args = parser.parse_args()
    if args.wait:
        raise SystemExit(0 if asyncio.run(wait_listening([args.notes_port, args.clock_port], 15)) else 1)
    asyncio.run(serve(args.notes_port, args.clock_port))


if __name__ == "__main__":
    main()
