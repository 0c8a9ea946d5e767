"""The 2026-07-28 era as spoken to upstreams, one module: envelope, headers, era verdicts, input rounds."""

from __future__ import annotations

from typing import Any

import pytest

from connectors.calls import CallHooks
from connectors.eras import (
    INPUT_KEY,
    LOG_LEVEL_KEY,
    MAX_ROUNDS,
    MODERN,
    envelope,
    modern_only,
    resolve_input,
    routing_headers,
    without_log_level,
)
from connectors.errors import UpstreamProtocolError, UpstreamRpcError, UpstreamUnavailable
from connectors.jsonrpc import Message
from connectors.spec import TASKS_EXTENSION

pytestmark = pytest.mark.anyio


def test_the_envelope_carries_version_capabilities_and_info_beside_the_callers_meta() -> None:
    params = envelope({"name": "t", "_meta": {"progressToken": 7}}, {"elicitation": {}})
    meta = params["_meta"]
    assert meta["progressToken"] == 7 and meta["io.modelcontextprotocol/protocolVersion"] == MODERN
    assert meta["io.modelcontextprotocol/clientCapabilities"] == {"elicitation": {}}
    assert meta["io.modelcontextprotocol/clientInfo"]["name"] == "manifold"
    assert envelope(None, {})["_meta"]["io.modelcontextprotocol/clientCapabilities"] == {}


def test_routing_headers_name_the_method_and_what_it_names() -> None:
    call = {"method": "tools/call", "params": {"name": "echo"}}
    assert routing_headers(call) == {"mcp-protocol-version": MODERN, "mcp-method": "tools/call", "mcp-name": "echo"}
    read = routing_headers({"method": "resources/read", "params": {"uri": "file:///a"}})
    assert read["mcp-name"] == "file:///a"
    assert routing_headers({"method": "tools/call", "params": {"name": "café"}})["mcp-name"] == "=?base64?Y2Fmw6k=?="
    assert "mcp-name" not in routing_headers({"method": "tools/list", "params": {}})


def test_only_a_refusal_that_names_stateless_versions_or_a_4xx_means_a_stateless_only_upstream() -> None:
    modern = UpstreamRpcError("u", {"code": -32022, "message": "no", "data": {"supported": [MODERN]}})
    legacy = UpstreamRpcError("u", {"code": -32022, "message": "no", "data": {"supported": ["2025-06-18"]}})
    other = UpstreamRpcError("u", {"code": -32600, "message": "no"})
    assert modern_only(modern) and not modern_only(legacy) and not modern_only(other)
    assert modern_only(UpstreamProtocolError("u", "HTTP 400: bad"))
    assert not modern_only(UpstreamProtocolError("u", "invalid JSON"))
    assert not modern_only(UpstreamUnavailable("u", "HTTP 503"))


def _rounds(count: int) -> tuple[list[Message], Any]:
    sent: list[Message] = []

    async def retry(params: Message) -> Message:
        sent.append(params)
        if len(sent) < count:
            return {"resultType": "input_required", "inputRequests": _asked(), "requestState": f"s{len(sent)}"}
        return {"content": [{"type": "text", "text": "done"}]}

    return sent, retry


def _asked() -> Message:
    return {"colour": {"method": "elicitation/create", "params": {"message": "?"}}, "roots": {"method": "roots/list"}}


async def test_input_rounds_are_asked_through_the_hooks_and_retried_with_answers_and_state() -> None:
    asked: list[Message] = []

    async def ask(message: Message) -> Message:
        asked.append(message)
        return {"roots": []} if message["method"] == "roots/list" else {"action": "accept", "content": {"c": "red"}}

    sent, retry = _rounds(2)
    first = {"resultType": "input_required", "inputRequests": _asked(), "requestState": "s0"}
    result = await resolve_input("u", {"name": "t"}, first, CallHooks(request=ask), retry)
    assert result["content"][0]["text"] == "done"
    assert [p["requestState"] for p in sent] == ["s0", "s1"]
    assert sent[0]["name"] == "t" and sent[0]["inputResponses"]["roots"] == {"roots": []}
    assert sent[0]["inputResponses"]["colour"]["action"] == "accept"
    assert [m[INPUT_KEY] for m in asked] == ["colour", "roots", "colour", "roots"]


async def test_input_rounds_are_bounded_and_need_someone_to_ask() -> None:
    async def ask(message: Message) -> Message:
        return {"roots": []}

    first = {"resultType": "input_required", "inputRequests": _asked(), "requestState": "s0"}
    _, endless = _rounds(MAX_ROUNDS + 5)
    with pytest.raises(UpstreamProtocolError, match="more than"):
        await resolve_input("u", {}, first, CallHooks(request=ask), endless)
    _, retry = _rounds(1)
    with pytest.raises(UpstreamRpcError):
        await resolve_input("u", {}, first, None, retry)
    bad = {"resultType": "input_required", "inputRequests": {"x": {"method": "tools/call"}}}
    with pytest.raises(UpstreamProtocolError, match=r"inputRequests\.x"):
        await resolve_input("u", {}, bad, CallHooks(request=ask), retry)


def test_a_log_level_goes_with_stateless_requests_and_never_to_session_era_ones() -> None:
    assert envelope({}, {}, "info")["_meta"][LOG_LEVEL_KEY] == "info"
    asked = {"name": "t", "_meta": {LOG_LEVEL_KEY: "error", "progressToken": 1}}
    assert envelope(asked, {}, "info")["_meta"][LOG_LEVEL_KEY] == "error"  # the request's own wins
    assert LOG_LEVEL_KEY not in envelope({}, {})["_meta"]
    assert without_log_level(asked) == {"name": "t", "_meta": {"progressToken": 1}}
    assert without_log_level({"_meta": {LOG_LEVEL_KEY: "info"}}) == {}
    assert without_log_level(None) is None


def test_answers_given_ahead_go_only_to_a_stateless_upstream() -> None:
    ahead = {"name": "t", "arguments": {}, "inputResponses": {"user_name": {"action": "accept"}}}
    assert envelope(ahead, {})["inputResponses"] == ahead["inputResponses"]
    assert without_log_level(ahead) == {"name": "t", "arguments": {}}  # the session era asks mid-call instead


def test_a_call_wanted_as_a_task_declares_the_tasks_extension_for_that_request_only() -> None:
    capabilities: dict[str, Any] = {"sampling": {}, "extensions": {"x.example/other": {}}}
    wanted = envelope({"name": "t", "task": {"ttl": 300000}}, capabilities, method="tools/call")
    assert "task" not in wanted  # (the session era's way to ask; this era's servers decide)
    declared = wanted["_meta"]["io.modelcontextprotocol/clientCapabilities"]
    assert declared == {"sampling": {}, "extensions": {"x.example/other": {}, TASKS_EXTENSION: {}}}
    assert capabilities == {"sampling": {}, "extensions": {"x.example/other": {}}}  # the session's own: unchanged
    plain = envelope({"name": "t"}, capabilities, method="tools/call")
    assert plain["_meta"]["io.modelcontextprotocol/clientCapabilities"] is capabilities
    for method in ("tasks/get", "tasks/update", "tasks/cancel"):
        asked = envelope({"taskId": "t1"}, {}, method=method)["_meta"]["io.modelcontextprotocol/clientCapabilities"]
        assert asked == {"extensions": {TASKS_EXTENSION: {}}}, method
        assert routing_headers({"method": method, "params": {"taskId": "t1"}})["mcp-name"] == "t1"
    assert without_log_level({"name": "t", "task": {"ttl": 1}}) == {"name": "t", "task": {"ttl": 1}}  # 2025 tasks
