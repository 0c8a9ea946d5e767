"""A lean JSON-RPC client over httpx, so the client's own cost stays small next to what it measures."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

__all__ = ["RpcSession"]

_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
_INIT = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}


class RpcSession:
    """One MCP session spoken as plain JSON-RPC posts."""

    def __init__(self, http: httpx.AsyncClient, url: str, headers: dict[str, str] | None = None) -> None:
        self.http = http
        self.url = url
        self.headers = {**_HEADERS, **(headers or {})}
        self._ids = 0

    async def open(self) -> RpcSession:
        response = await self.http.post(self.url, content=self._body("initialize", _INIT), headers=self.headers)
        response.raise_for_status()
        self.headers["mcp-session-id"] = response.headers["mcp-session-id"]
        reply = _decode(response)
        self.headers["mcp-protocol-version"] = reply["result"]["protocolVersion"]
        note = orjson.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"})
        await self.http.post(self.url, content=note, headers=self.headers)
        return self

    async def close(self) -> None:
        await self.http.delete(self.url, headers=self.headers)

    def _body(self, method: str, params: dict[str, Any] | None) -> bytes:
        self._ids += 1
        return orjson.dumps({"jsonrpc": "2.0", "id": self._ids, "method": method, "params": params or {}})

    async def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """One request; its reply (read from JSON or from the end of an SSE stream)."""
        response = await self.http.post(self.url, content=self._body(method, params), headers=self.headers)
        reply = _decode(response)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply

    async def raw(self, method: str, params: dict[str, Any] | None = None) -> bytes:
        """One request whose JSON reply is received whole but not decoded."""
        response = await self.http.post(self.url, content=self._body(method, params), headers=self.headers)
        response.raise_for_status()
        return response.content

    async def events(self, method: str, params: dict[str, Any]) -> AsyncIterator[tuple[int, dict[str, Any]]]:
        """Every message of one request's reply stream, each with its arrival time (monotonic ns)."""
        async with self.http.stream(
            "POST", self.url, content=self._body(method, params), headers=self.headers
        ) as response:
            async for line in response.aiter_lines():
                if line.startswith("data:") and line[5:].strip():
                    yield time.monotonic_ns(), orjson.loads(line[5:])


def _decode(response: httpx.Response) -> dict[str, Any]:
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        data = [line[5:] for line in response.text.splitlines() if line.startswith("data:") and line[5:].strip()]
        decoded: dict[str, Any] = orjson.loads(data[-1])
        return decoded
    decoded = orjson.loads(response.content)
    return decoded
