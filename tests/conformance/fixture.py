"""The fixture upstream for the official MCP conformance suite's server scenarios.

Built with the official Python SDK's low-level server, so every tool, prompt
and resource has exactly the shape the scenarios check. The suite runs
against this server directly (the baseline) and through the hub in front of
it with an empty prefix; everything that passes directly must pass through
the hub.

Run: ``python -m tests.conformance.fixture --port N`` (listens on 127.0.0.1).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from typing import Any, cast

import mcp_types as types
import uvicorn
from mcp.server.lowlevel import Server
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler, PromptsListChanged, ToolsListChanged
from starlette.types import ASGIApp

from tests.conformance import input_required, tasks
from tests.conformance.schemas import CUSTOM_HEADERS, NO_ARGS, SCHEMA_2020_12, SEP1034, SEP1330

__all__ = ["build_fixture", "fixture_app"]

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
WAV = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA="


def _tool(name: str, description: str, schema: dict[str, Any] | None = None) -> types.Tool:
    return types.Tool.model_validate({"name": name, "description": description, "inputSchema": schema or NO_ARGS})


TOOLS = [
    _tool("test_simple_text", "Returns simple text content"),
    _tool("test_image_content", "Returns image content"),
    _tool("test_audio_content", "Returns audio content"),
    _tool("test_embedded_resource", "Returns an embedded resource"),
    _tool("test_multiple_content_types", "Returns text, image and resource content"),
    _tool("test_tool_with_logging", "Sends log messages while it runs"),
    _tool("test_error_handling", "Always returns a tool error"),
    _tool("test_tool_with_progress", "Reports progress"),
    _tool(
        "test_sampling",
        "Asks the client's model",
        {"type": "object", "properties": {"prompt": {"type": "string"}}, "required": ["prompt"]},
    ),
    _tool(
        "test_elicitation",
        "Asks the user",
        {"type": "object", "properties": {"message": {"type": "string"}}, "required": ["message"]},
    ),
    _tool("test_elicitation_sep1034_defaults", "Elicits with default values"),
    _tool("test_elicitation_sep1330_enums", "Elicits with every enum form"),
    _tool("json_schema_2020_12_tool", "Has a JSON Schema 2020-12 input schema", SCHEMA_2020_12),
    _tool("test_reconnection", "Closes its reply stream before replying, so the client must resume"),
    _tool("test_logging_tool", "Sends a log message while it runs (2026-07-28: only to requests that ask)"),
    _tool("test_custom_headers", "Has arguments mirrored in Mcp-Param headers", CUSTOM_HEADERS),
    *(_tool(name, "Asks the client through an input_required result (2026-07-28)") for name in input_required.TOOLS),
    _tool("test_trigger_tool_change", "Adds a tool, and says the tool list changed"),
    _tool("test_trigger_prompt_change", "Adds a prompt, and says the prompt list changed"),
    *tasks.TOOLS,
]
BUS = InMemorySubscriptionBus()
"""What the fixture's subscriptions/listen streams hear (2026-07-28)."""


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _result(*content: dict[str, Any], is_error: bool = False) -> types.CallToolResult:
    return types.CallToolResult.model_validate({"content": list(content), "isError": is_error})


async def _call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult | types.InputRequiredResult:
    name = params.name
    args = params.arguments or {}
    session = ctx.session
    tasked = await tasks.call_tool(ctx, name, ctx.params if isinstance(ctx.params, dict) else {})
    if tasked is not None:
        # (A task's create result is the extension's own shape, which the SDK passes on as it is.)
        return cast(types.CallToolResult, tasked)
    answers, ask = input_required.responses(params), input_required.asker(ctx)
    asked = await input_required.call_tool(name, answers, params.request_state, session.client_capabilities, ask)
    if asked is not None:
        return asked
    if name in ("test_trigger_tool_change", "test_trigger_prompt_change"):
        return await _change_list(session, name.endswith("tool_change"))
    if name == "test_simple_text":
        return _result(_text("This is a simple text response for testing."))
    if name == "test_image_content":
        return _result({"type": "image", "data": PNG, "mimeType": "image/png"})
    if name == "test_audio_content":
        return _result({"type": "audio", "data": WAV, "mimeType": "audio/wav"})
    if name == "test_embedded_resource":
        resource = {
            "uri": "test://embedded-resource",
            "mimeType": "text/plain",
            "text": "This is an embedded resource content.",
        }
        return _result({"type": "resource", "resource": resource})
    if name == "test_multiple_content_types":
        resource = {
            "uri": "test://mixed-content-resource",
            "mimeType": "application/json",
            "text": '{"test":"data","value":123}',
        }
        return _result(
            _text("Multiple content types test:"),
            {"type": "image", "data": PNG, "mimeType": "image/png"},
            {"type": "resource", "resource": resource},
        )
    if name == "test_tool_with_logging":
        for line in ("Tool execution started", "Tool processing data", "Tool execution completed"):
            await session.send_log_message("info", line, related_request_id=ctx.request_id)
            await asyncio.sleep(0.05)
        return _result(_text("Tool with logging executed successfully"))
    if name == "test_logging_tool":
        await session.send_log_message("info", "test_logging_tool ran", related_request_id=ctx.request_id)
        return _result(_text("logged"))
    if name == "test_custom_headers":
        return _result(_text(f"region={args.get('region')} priority={args.get('priority')}"))
    if name == "test_error_handling":
        return _result(_text("This tool intentionally returns an error for testing"), is_error=True)
    if name == "test_tool_with_progress":
        for progress in (0, 50, 100):
            await session.report_progress(progress, 100, f"Completed step {progress} of 100")
            await asyncio.sleep(0.05)
        meta = ctx.meta
        token = meta.get("progressToken") if isinstance(meta, dict) else getattr(meta, "progress_token", None)
        return _result(_text(str(token)))
    if name == "test_sampling":
        message = types.SamplingMessage(
            role="user", content=types.TextContent(type="text", text=str(args.get("prompt")))
        )
        reply = await session.create_message([message], max_tokens=100, related_request_id=ctx.request_id)
        text = reply.content.text if isinstance(reply.content, types.TextContent) else str(reply.content)
        return _result(_text(f"LLM response: {text}"))
    if name == "test_elicitation":
        schema = {
            "type": "object",
            "properties": {
                "username": {"type": "string", "description": "User's response"},
                "email": {"type": "string", "description": "User's email address"},
            },
            "required": ["username", "email"],
        }
        answer = await session.elicit(str(args.get("message")), schema, related_request_id=ctx.request_id)
        return _result(_text(f"User response: action={answer.action}, content={json.dumps(answer.content)}"))
    if name in ("test_elicitation_sep1034_defaults", "test_elicitation_sep1330_enums"):
        schema = SEP1034 if name.endswith("defaults") else SEP1330
        answer = await session.elicit("Please review these fields", schema, related_request_id=ctx.request_id)
        return _result(_text(f"Elicitation completed: action={answer.action}, content={json.dumps(answer.content)}"))
    if name == "json_schema_2020_12_tool":
        return _result(_text(f"Received: {json.dumps(args)}"))
    if name == "test_reconnection":
        if ctx.close_sse_stream is not None:
            await ctx.close_sse_stream()
        await asyncio.sleep(0.1)
        return _result(_text("Reconnection test completed"))
    return _result(_text(f"Unknown tool: {name}"), is_error=True)


async def _change_list(session: Any, tools: bool) -> types.CallToolResult:
    """One more tool (or prompt), announced both eras' ways: on listen streams and on the session."""
    if tools:
        TOOLS.append(_tool(f"test_added_tool_{len(TOOLS)}", "Added by test_trigger_tool_change"))
        await BUS.publish(ToolsListChanged())
    else:
        PROMPTS.append({"name": f"test_added_prompt_{len(PROMPTS)}", "description": "Added by a trigger"})
        await BUS.publish(PromptsListChanged())
    with contextlib.suppress(Exception):  # (a 2026-07-28 request has no session stream to say it on)
        await (session.send_tool_list_changed() if tools else session.send_prompt_list_changed())
    return _result(_text("the list changed"))


async def _list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
    return types.ListToolsResult(tools=TOOLS)


RESOURCES = [
    {"uri": "test://static-text", "name": "static-text", "description": "Static text", "mimeType": "text/plain"},
    {"uri": "test://static-binary", "name": "static-binary", "description": "Static binary", "mimeType": "image/png"},
    {"uri": "test://watched-resource", "name": "watched-resource", "description": "Watched", "mimeType": "text/plain"},
]


async def _list_resources(ctx: Any, params: Any) -> types.ListResourcesResult:
    return types.ListResourcesResult.model_validate({"resources": RESOURCES})


async def _list_templates(ctx: Any, params: Any) -> types.ListResourceTemplatesResult:
    template = {"uriTemplate": "test://template/{id}/data", "name": "template", "mimeType": "application/json"}
    return types.ListResourceTemplatesResult.model_validate({"resourceTemplates": [template]})


async def _read_resource(ctx: Any, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
    uri = str(params.uri)
    if uri == "test://static-text":
        content: dict[str, Any] = {
            "uri": uri,
            "mimeType": "text/plain",
            "text": "This is the content of the static text resource.",
        }
    elif uri == "test://static-binary":
        content = {"uri": uri, "mimeType": "image/png", "blob": PNG}
    elif uri == "test://watched-resource":
        content = {"uri": uri, "mimeType": "text/plain", "text": "Watched resource content."}
    elif uri.startswith("test://template/") and uri.endswith("/data"):
        item = uri.removeprefix("test://template/").removesuffix("/data")
        text = json.dumps({"id": item, "templateTest": True, "data": f"Data for ID: {item}"})
        content = {"uri": uri, "mimeType": "application/json", "text": text}
    else:
        raise ValueError(f"unknown resource {uri}")
    return types.ReadResourceResult.model_validate({"contents": [content]})


PROMPTS = [
    {"name": "test_simple_prompt", "description": "A simple prompt"},
    {
        "name": "test_prompt_with_arguments",
        "description": "A prompt with arguments",
        "arguments": [
            {"name": "arg1", "description": "First argument", "required": True},
            {"name": "arg2", "description": "Second argument", "required": True},
        ],
    },
    {
        "name": "test_prompt_with_embedded_resource",
        "description": "A prompt with an embedded resource",
        "arguments": [{"name": "resourceUri", "description": "URI of the resource", "required": True}],
    },
    {"name": "test_prompt_with_image", "description": "A prompt with an image"},
    *({"name": name, "description": "Asks for its context first (2026-07-28)"} for name in input_required.PROMPTS),
]


async def _list_prompts(ctx: Any, params: Any) -> types.ListPromptsResult:
    return types.ListPromptsResult.model_validate({"prompts": PROMPTS})


async def _get_prompt(
    ctx: Any, params: types.GetPromptRequestParams
) -> types.GetPromptResult | types.InputRequiredResult:
    asked = await input_required.get_prompt(params.name, input_required.responses(params), input_required.asker(ctx))
    if asked is not None:
        return asked
    args = params.arguments or {}
    if params.name == "test_simple_prompt":
        messages: list[dict[str, Any]] = [{"role": "user", "content": _text("This is a simple prompt for testing.")}]
    elif params.name == "test_prompt_with_arguments":
        text = f"Prompt with arguments: arg1='{args.get('arg1')}', arg2='{args.get('arg2')}'"
        messages = [{"role": "user", "content": _text(text)}]
    elif params.name == "test_prompt_with_embedded_resource":
        resource = {
            "uri": args.get("resourceUri"),
            "mimeType": "text/plain",
            "text": "Embedded resource content for testing.",
        }
        messages = [
            {"role": "user", "content": {"type": "resource", "resource": resource}},
            {"role": "user", "content": _text("Please process the embedded resource above.")},
        ]
    elif params.name == "test_prompt_with_image":
        messages = [
            {"role": "user", "content": {"type": "image", "data": PNG, "mimeType": "image/png"}},
            {"role": "user", "content": _text("Please analyze the image above.")},
        ]
    else:
        raise ValueError(f"unknown prompt {params.name}")
    return types.GetPromptResult.model_validate({"messages": messages})


async def _complete(ctx: Any, params: types.CompleteRequestParams) -> types.CompleteResult:
    return types.CompleteResult(completion=types.Completion(values=[], total=0, has_more=False))


async def _empty(ctx: Any, params: Any) -> types.EmptyResult:
    return types.EmptyResult()


class _MemoryEventStore(EventStore):
    """Keeps every event so a client can resume a stream with Last-Event-ID."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, types.JSONRPCMessage | None]] = []

    async def store_event(self, stream_id: str, message: types.JSONRPCMessage | None) -> str:
        self.events.append((str(len(self.events) + 1), stream_id, message))
        return self.events[-1][0]

    async def replay_events_after(self, last_event_id: str, send_callback: EventCallback) -> str | None:
        index = next((i for i, event in enumerate(self.events) if event[0] == last_event_id), None)
        if index is None:
            return None
        stream_id = self.events[index][1]
        for event_id, stream, message in self.events[index + 1 :]:
            if stream == stream_id and message is not None:
                await send_callback(EventMessage(message, event_id))
        return stream_id


def build_fixture() -> Server[Any]:
    server: Server[Any] = Server(
        "conformance-fixture",
        version="1.0.0",
        on_list_tools=_list_tools,
        on_call_tool=_call_tool,
        on_list_resources=_list_resources,
        on_list_resource_templates=_list_templates,
        on_read_resource=_read_resource,
        on_subscribe_resource=_empty,
        on_unsubscribe_resource=_empty,
        on_list_prompts=_list_prompts,
        on_get_prompt=_get_prompt,
        on_set_logging_level=_empty,
        on_completion=_complete,
        on_subscriptions_listen=ListenHandler(BUS),
    )
    tasks.serve_tasks(server)
    return server


def fixture_app() -> ASGIApp:
    return build_fixture().streamable_http_app(event_store=_MemoryEventStore(), retry_interval=500)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(fixture_app(), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
