"""Upstream MCP servers for the tests, built with the official SDK.

A :class:`Probe` records what reached the upstream, with events the tests
wait on (with timeouts) instead of sleeping.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Annotated, Any

import mcp_types as types
from mcp.server import MCPServer
from mcp.server.caching import CacheableMethod, CacheHint
from mcp.server.elicitation import AcceptedElicitation
from mcp.server.mcpserver import Context, Elicit, Resolve
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata
from pydantic import BaseModel, Field
from starlette.types import ASGIApp


@dataclass
class Probe:
    slow_started: asyncio.Event = field(default_factory=asyncio.Event)
    slow_cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    arrivals: int = 0
    all_arrived: asyncio.Event = field(default_factory=asyncio.Event)
    expected_arrivals: int = 2
    arrived: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    """The upstream session of each rendezvous call, as it arrives."""
    log_levels: list[str] = field(default_factory=list)
    subscribed: list[str] = field(default_factory=list)
    unsubscribed: list[str] = field(default_factory=list)
    subscription_changed: asyncio.Event = field(default_factory=asyncio.Event)
    roots_changed: asyncio.Event = field(default_factory=asyncio.Event)
    steps: asyncio.Queue[None] = field(default_factory=asyncio.Queue)
    stepper_done: asyncio.Event = field(default_factory=asyncio.Event)
    stepper_cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    replays: int = 0
    notes: dict[str, str] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)
    """What clients' refusals of ask_user said."""
    elicit_refused: asyncio.Event = field(default_factory=asyncio.Event)


class Forecast(BaseModel):
    city: str
    celsius: float


class Colour(BaseModel):
    colour: str


def _session_of(ctx: Context) -> str:
    """The upstream session a request belongs to (its Mcp-Session-Id)."""
    return str((ctx.headers or {}).get("mcp-session-id", ""))


def _shared_tools(server: MCPServer, name: str, probe: Probe) -> None:
    """The tools every test upstream has, whatever era it speaks."""

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
    def regional(region: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Region"})], text: str) -> str:
        """An argument a stateless client (the hub, here) must mirror in an Mcp-Param header."""
        return f"{region}: {text}"


def build_upstream(name: str, probe: Probe | None = None) -> MCPServer:
    """A server with a tool for each behaviour the hub must carry."""
    probe = probe or Probe()
    server = MCPServer(name, version="1.0.0", instructions=f"the {name} test upstream", log_level="WARNING")

    _shared_tools(server, name, probe)

    @server.tool()
    async def rendezvous(ctx: Context, text: str) -> str:
        """Return only once ``expected_arrivals`` calls are in flight together."""
        probe.arrived.put_nowait(_session_of(ctx))
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

    @server.tool()
    async def stepper(ctx: Context, steps: int = 3) -> str:
        """Report progress, waiting for the test's go-ahead before each step."""
        try:
            for step in range(1, steps + 1):
                await asyncio.wait_for(probe.steps.get(), timeout=10)
                await ctx.report_progress(step, steps, f"step {step}")
        except asyncio.CancelledError:
            probe.stepper_cancelled.set()
            raise
        probe.stepper_done.set()
        return f"{steps} steps done"

    @server.tool()
    async def hiccup(ctx: Context, steps: int = 4) -> str:
        """Report progress, closing the reply stream after the first step (the client must resume)."""
        for step in range(1, steps + 1):
            await ctx.report_progress(step, steps, f"step {step}")
            if step == 1:
                await ctx.close_sse_stream()
        return f"{steps} steps done after a hiccup"

    @server.tool()
    async def ask_model(ctx: Context, prompt: str) -> str:
        """Ask the client's model (sampling), on this call's stream."""
        message = types.SamplingMessage(role="user", content=types.TextContent(type="text", text=prompt))
        try:
            result = await ctx.session.create_message([message], max_tokens=20, related_request_id=ctx.request_id)
        except MCPError as exc:
            return f"refused: {exc.error.message}"
        assert isinstance(result.content, types.TextContent)
        return f"{name} heard: {result.content.text}"

    @server.tool()
    async def ask_user(ctx: Context, question: str) -> str:
        """Ask the user (form elicitation)."""
        try:
            answer = await ctx.elicit(question, Colour)
        except MCPError as exc:
            probe.refused.append(exc.error.message)
            probe.elicit_refused.set()
            return f"refused: {exc.error.message}"
        if isinstance(answer, AcceptedElicitation):
            return f"{name}: the user chose {answer.data.colour}"
        return f"{name}: the user said {answer.action}"

    @server.tool()
    async def client_roots(ctx: Context) -> str:
        """List the client's roots (a request unrelated to any call)."""
        roots = await ctx.session.list_roots()
        return ",".join(str(root.uri) for root in roots.roots)

    @server.tool()
    async def call_roots(ctx: Context) -> str:
        """List the client's roots within this call."""
        related = ServerMessageMetadata(related_request_id=ctx.request_id)
        roots = await ctx.session.send_request(types.ListRootsRequest(), types.ListRootsResult, metadata=related)
        return ",".join(str(root.uri) for root in roots.roots)

    @server.tool()
    async def ask_twice(ctx: Context, rounds: int = 2) -> str:
        """Ask the user twice, reporting progress between the questions (two rounds for a stateless client)."""
        answers = []
        for step in range(1, rounds + 1):
            answer = await ctx.elicit(f"colour {step}?", Colour)
            answers.append(answer.data.colour if isinstance(answer, AcceptedElicitation) else answer.action)
            await ctx.report_progress(step, rounds, f"asked {step}")
        return f"{name}: " + ",".join(answers)

    @server.tool()
    def remember(ctx: Context, text: str) -> str:
        """Keep a note in this upstream session (state a server keeps per client)."""
        probe.notes[_session_of(ctx)] = text
        return "kept"

    @server.tool()
    def recall(ctx: Context) -> str:
        """The note this upstream session kept, if any."""
        return probe.notes.get(_session_of(ctx), "")

    @server.tool()
    async def say(ctx: Context, level: str, text: str) -> str:
        """Send a log message on this call's stream."""
        await ctx.session.send_log_message(level, text, logger="tests", related_request_id=ctx.request_id)
        return "said"

    @server.tool()
    async def touch(ctx: Context, uri: str) -> str:
        """Tell subscribers a resource changed."""
        await ctx.session.send_resource_updated(uri)
        return "touched"

    @server.tool()
    async def grow(ctx: Context) -> str:
        """Add a tool and say the list changed."""

        def grown() -> str:
            return "I am new"

        server.add_tool(grown, name="grown", description="Added at run time.")
        await ctx.session.send_tool_list_changed()
        return "grown"

    @server.tool()
    async def grow_here(ctx: Context) -> str:
        """Add a tool and say the list changed on this call's own reply stream."""

        def grown_here() -> str:
            return "I am new too"

        server.add_tool(grown_here, name="grown_here", description="Added at run time.")
        changed = types.ToolListChangedNotification(method="notifications/tools/list_changed")
        await ctx.session.send_notification(changed, related_request_id=ctx.request_id)
        return "grown here"

    @server.tool()
    def big(megabytes: float) -> str:
        """A text result of ``megabytes`` MB (the SDK sends it twice: content and structured content)."""
        return "b" * int(megabytes * 1_000_000)

    @server.tool()
    async def tick(ctx: Context, seconds: float, every: float = 0.1) -> str:
        """Report progress every ``every`` seconds for ``seconds`` seconds, then finish."""
        steps = max(int(seconds / every), 1)
        for step in range(1, steps + 1):
            await asyncio.sleep(every)
            await ctx.report_progress(step, steps)
        return f"ticked {steps} times"

    @server.completion()  # type: ignore[no-untyped-call]
    async def complete(ref: Any, argument: Any, context: Any) -> types.Completion | None:
        if isinstance(ref, types.PromptReference) and ref.name == "greet":
            values = [v for v in ("Ada", "Alan", "Grace") if v.startswith(argument.value)]
            return types.Completion(values=[f"{name}:{v}" for v in values])
        return None

    async def set_level(ctx: Any, params: types.SetLevelRequestParams) -> types.EmptyResult:
        probe.log_levels.append(params.level)
        return types.EmptyResult()

    async def subscribe(ctx: Any, params: types.SubscribeRequestParams) -> types.EmptyResult:
        probe.subscribed.append(str(params.uri))
        probe.subscription_changed.set()
        return types.EmptyResult()

    async def unsubscribe(ctx: Any, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
        probe.unsubscribed.append(str(params.uri))
        probe.subscription_changed.set()
        return types.EmptyResult()

    async def roots_changed(ctx: Any, params: types.NotificationParams) -> None:
        probe.roots_changed.set()

    lowlevel = server._lowlevel_server
    lowlevel.add_request_handler("logging/setLevel", types.SetLevelRequestParams, set_level)
    lowlevel.add_request_handler("resources/subscribe", types.SubscribeRequestParams, subscribe)
    lowlevel.add_request_handler("resources/unsubscribe", types.UnsubscribeRequestParams, unsubscribe)
    lowlevel.add_notification_handler("notifications/roots/list_changed", types.NotificationParams, roots_changed)

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


class MemoryEventStore(EventStore):
    """Keeps every event, so a client can resume a stream with Last-Event-ID."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        self.events: list[tuple[str, str, types.JSONRPCMessage | None]] = []

    async def store_event(self, stream_id: str, message: types.JSONRPCMessage | None) -> str:
        event_id = str(len(self.events) + 1)
        self.events.append((event_id, stream_id, message))
        return event_id

    async def replay_events_after(self, last_event_id: str, send_callback: EventCallback) -> str | None:
        after = next((i for i, (eid, _, _) in enumerate(self.events) if eid == last_event_id), None)
        if after is None:
            return None
        self.probe.replays += 1
        stream_id = self.events[after][1]
        for event_id, stream, message in self.events[after + 1 :]:
            if stream == stream_id and message is not None:
                await send_callback(EventMessage(message, event_id))
        return stream_id


def http_app(name: str, probe: Probe | None = None, *, resumable: bool = False) -> ASGIApp:
    probe = probe or Probe()
    server = build_upstream(name, probe)
    if resumable:
        store = MemoryEventStore(probe)
        return server.streamable_http_app(streamable_http_path="/mcp", event_store=store, retry_interval=20)
    return server.streamable_http_app(streamable_http_path="/mcp")


def sse_app(name: str, probe: Probe | None = None) -> ASGIApp:
    return build_upstream(name, probe).sse_app(sse_path="/sse", message_path="/messages/")


def _first_colour() -> Elicit[Colour]:
    return Elicit("first colour?", Colour)


def _second_colour(first: Annotated[Colour, Resolve(_first_colour)]) -> Elicit[Colour]:
    return Elicit(f"after {first.colour}, which colour?", Colour)


def build_modern_upstream(name: str, probe: Probe | None = None, *, list_ttl_ms: int = 0) -> MCPServer:
    """A server written for 2026-07-28: its questions to the client are input_required rounds;
    its lists say they stay fresh ``list_ttl_ms``."""
    probe = probe or Probe()
    lists: tuple[CacheableMethod, ...] = ("tools/list", "prompts/list", "resources/list", "resources/templates/list")
    hints = dict.fromkeys(lists, CacheHint(ttl_ms=list_ttl_ms, scope="public")) if list_ttl_ms else None
    server = MCPServer(name, version="1.0.0", log_level="WARNING", cache_hints=hints)

    _shared_tools(server, name, probe)

    @server.tool()
    def pick(colour: Annotated[Colour, Resolve(_first_colour)]) -> str:
        """One question (one round of input)."""
        return f"{name}: picked {colour.colour}"

    @server.tool()
    def pick_two(
        first: Annotated[Colour, Resolve(_first_colour)], second: Annotated[Colour, Resolve(_second_colour)]
    ) -> str:
        """Two questions, the second depending on the first (two rounds of input)."""
        return f"{name}: {first.colour} then {second.colour}"

    @server.tool()
    async def grow(ctx: Context) -> str:
        """Add a tool and tell listeners the list changed."""

        def sprout() -> str:
            return "I am new"

        server.add_tool(sprout)
        await ctx.notify_tools_changed()
        return "grown"

    @server.tool()
    async def say(ctx: Context, text: str) -> str:
        """Log ``text`` at info level (a 2026-07-28 server logs only to requests that ask for a level)."""
        await ctx.info(text)
        return "said"

    @server.resource("note://{n}", mime_type="text/plain")
    def note(n: str) -> str:
        """A resource whose updates go to listen streams that asked for it."""
        return f"note {n}"

    @server.tool()
    async def touch(ctx: Context, uri: str) -> str:
        """Tell the listeners of ``uri`` it changed."""
        await ctx.notify_resource_updated(uri)
        return "touched"

    @server.tool()
    def grow_quietly() -> str:
        """Add a tool and tell nobody: only a list made after its list's ttlMs shows it."""

        def seedling() -> str:
            return "I am new and nobody knows"

        server.add_tool(seedling)
        return "grown quietly"

    return server


def modern_only_app(name: str, probe: Probe | None = None, *, list_ttl_ms: int = 0) -> ASGIApp:
    """``build_modern_upstream`` served over Streamable HTTP, refusing every request of the session era
    as a server that speaks only 2026-07-28 does (``-32022`` naming its one version; GET is 405)."""
    server = build_modern_upstream(name, probe, list_ttl_ms=list_ttl_ms)
    inner = server.streamable_http_app(streamable_http_path="/mcp")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            if headers.get("mcp-protocol-version") != "2026-07-28":
                status, body = 405, b""
                if scope["method"] == "POST":
                    raw = b""
                    while True:
                        event = await receive()
                        raw += event.get("body", b"")
                        if not event.get("more_body"):
                            break
                    request_id = json.loads(raw).get("id") if raw else None
                    error = {
                        "code": -32022,
                        "message": "Unsupported protocol version",
                        "data": {"supported": ["2026-07-28"]},
                    }
                    status, body = 400, json.dumps({"jsonrpc": "2.0", "id": request_id, "error": error}).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": status,
                        "headers": [(b"content-type", b"application/json")],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await inner(scope, receive, send)

    return app
