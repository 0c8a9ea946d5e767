"""Speaking the 2026-07-28 era to the hub on the wire in tests: the envelope, its headers, a POST."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from connectors.spec import TASKS_EXTENSION
from tests.wire import HEADERS, WAIT, rpc, sse_messages

VERSION = "2026-07-28"
CAPABILITIES: dict[str, Any] = {"sampling": {}, "elicitation": {"form": {}}, "roots": {}}
WITH_TASKS: dict[str, Any] = {**CAPABILITIES, "extensions": {TASKS_EXTENSION: {}}}


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


class TaskCaller:
    """One principal (by its API key) speaking the 2026-07-28 era to the hub; its requests declare
    the tasks extension unless they say otherwise."""

    def __init__(self, http: httpx.AsyncClient, url: str, key: str) -> None:
        self.http, self.url, self.key = http, url, key
        self._ids = 0

    async def send(
        self,
        method: str,
        params: dict[str, Any],
        capabilities: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        self._ids += 1
        declared = WITH_TASKS if capabilities is None else capabilities
        message = rpc(self._ids, method, envelope(params, capabilities=declared))
        sent = {**headers_for(message), "authorization": f"Bearer {self.key}", **(headers or {})}
        response, messages = await post(self.http, self.url, message, sent)
        return response.status_code, messages[-1]

    async def result(self, method: str, params: dict[str, Any], capabilities: dict[str, Any] | None = None) -> Any:
        status, reply = await self.send(method, params, capabilities)
        assert status == 200 and "result" in reply, reply
        return reply["result"]

    async def until(self, task_id: str, *statuses: str) -> dict[str, Any]:
        """``tasks/get`` until the task reaches one of ``statuses`` (bounded by WAIT)."""
        async with asyncio.timeout(WAIT):
            while True:
                got: dict[str, Any] = await self.result("tasks/get", {"taskId": task_id})
                assert got["taskId"] == task_id and got["resultType"] == "complete", got
                if got["status"] in statuses:
                    return got
                assert got["status"] in ("working", "input_required"), got
                await asyncio.sleep(got.get("pollIntervalMs", 500) / 1000)  # the interval the task asks for
