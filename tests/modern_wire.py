"""Speaking the 2026-07-28 era to the hub on the wire in tests: the envelope, its headers, a POST."""

from __future__ import annotations

from typing import Any

import httpx

from tests.wire import HEADERS, rpc, sse_messages

VERSION = "2026-07-28"
CAPABILITIES: dict[str, Any] = {"sampling": {}, "elicitation": {"form": {}}, "roots": {}}


def envelope(
    params: dict[str, Any] | None = None,
    *,
    capabilities: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
) -> Any:
    """``params`` with the stateless envelope (and ``meta``) in ``_meta``."""
    params = dict(params or {})
    params["_meta"] = {
        "io.modelcontextprotocol/protocolVersion": VERSION,
        "io.modelcontextprotocol/clientCapabilities": CAPABILITIES if capabilities is None else capabilities,
        "io.modelcontextprotocol/clientInfo": {"name": "wire", "version": "0"},
        **(meta or {}),
        **params.get("_meta", {}),
    }
    return params


def headers_for(message: dict[str, Any], **extra: str) -> dict[str, str]:
    """The routing headers a stateless request must carry."""
    out = {**HEADERS, "mcp-protocol-version": VERSION, "mcp-method": message["method"]}
    params = message.get("params") or {}
    name = params.get("uri") if message["method"] == "resources/read" else params.get("name")
    if message["method"] in ("tools/call", "prompts/get", "resources/read") and name is not None:
        out["mcp-name"] = name
    return {**out, **extra}


def request(
    request_id: Any, method: str, params: dict[str, Any] | None = None, *, meta: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """A stateless request and its headers."""
    message = rpc(request_id, method, envelope(params, meta=meta))
    return message, headers_for(message)


async def post(
    http: httpx.AsyncClient, url: str, message: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[httpx.Response, list[dict[str, Any]]]:
    """POST one stateless request; returns the response and every JSON-RPC message in its body."""
    response = await http.post(url, json=message, headers=headers or headers_for(message))
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        messages = sse_messages(response.text)
    elif response.content:
        messages = [response.json()]
    else:
        messages = []
    return response, messages
