"""Speaking to the hub on the wire in tests: headers, requests, a session, a bare client."""

from __future__ import annotations

import json
from typing import Any

import httpx

WAIT = 10.0
HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
INIT = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}


async def initialize(http: httpx.AsyncClient, url: str, version: str = "2025-11-25") -> dict[str, str]:
    """Open a session; returns the headers to use it with."""
    response = await http.post(url, json=rpc(1, "initialize", {**INIT, "protocolVersion": version}), headers=HEADERS)
    assert response.status_code == 200, response.text
    return {**HEADERS, "mcp-session-id": response.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}


def rpc(request_id: Any, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    return message


async def next_data(lines: Any) -> str:
    """The next non-empty ``data:`` line of an SSE stream's lines."""
    async for line in lines:
        if line.startswith("data: ") and line[6:].strip():
            return str(line[6:])
    raise AssertionError("stream ended")


def sse_messages(text: str) -> list[dict[str, Any]]:
    """Every JSON message in an SSE body."""
    return [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:") and line[5:].strip()]


class RawClient:
    """A bare JSON-RPC client over httpx, to see exactly what goes over the wire."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.AsyncClient(timeout=WAIT, trust_env=False)
        self.headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
        self.next_id = 100

    async def __aenter__(self) -> RawClient:
        params = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}
        response = await self.http.post(self.url, json=rpc(0, "initialize", params), headers=self.headers)
        response.raise_for_status()
        self.headers["mcp-session-id"] = response.headers["mcp-session-id"]
        self.headers["mcp-protocol-version"] = "2025-11-25"
        await self.http.post(
            self.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=self.headers
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.delete(self.url, headers=self.headers)
        await self.http.aclose()

    async def stream(self, method: str, params: dict[str, Any], request_id: int | None = None) -> list[dict[str, Any]]:
        """Every message the hub sends back for one request, in order."""
        if request_id is None:
            self.next_id += 1
            request_id = self.next_id
        response = await self.http.post(self.url, json=rpc(request_id, method, params), headers=self.headers)
        response.raise_for_status()
        if response.headers["content-type"].startswith("application/json"):
            return [response.json()]
        return sse_messages(response.text)

    async def call(self, tool: str, arguments: dict[str, Any], request_id: int | None = None) -> dict[str, Any]:
        events = await self.stream("tools/call", {"name": tool, "arguments": arguments}, request_id)
        return events[-1]


class AnsweringSession:
    """A session-era client of the hub (an API key's), that declares elicitation and answers what it is asked."""

    def __init__(self, http: httpx.AsyncClient, url: str, key: str) -> None:
        self.http, self.url = http, url
        self.headers = {**HEADERS, "authorization": f"Bearer {key}"}
        self._ids = 0
        self.asked = 0
        """How many questions the hub asked this client."""
        self.questions: list[dict[str, Any]] = []

    async def open(self) -> dict[str, Any]:
        init = {
            "protocolVersion": "2025-11-25",
            "capabilities": {"elicitation": {}},
            "clientInfo": {"name": "s", "version": "0"},
        }
        response = await self.http.post(self.url, json=rpc(0, "initialize", init), headers=self.headers)
        assert response.status_code == 200, response.text
        self.headers = {
            **self.headers,
            "mcp-session-id": response.headers["mcp-session-id"],
            "mcp-protocol-version": "2025-11-25",
        }
        await self.http.post(
            self.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=self.headers
        )
        result: dict[str, Any] = json.loads(response.text[response.text.index("{") :])["result"]
        return result

    async def request(
        self, method: str, params: dict[str, Any], answer: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """One request's reply; a question the hub asks on its stream meanwhile gets ``answer``."""
        self._ids += 1
        request_id = self._ids
        async with self.http.stream(
            "POST", self.url, json=rpc(request_id, method, params), headers=self.headers
        ) as got:
            assert got.status_code == 200
            if got.headers["content-type"].startswith("application/json"):
                replied: dict[str, Any] = json.loads(await got.aread())
                return replied
            async for line in got.aiter_lines():
                if not line.startswith("data:") or not line[5:].strip():
                    continue
                message: dict[str, Any] = json.loads(line[5:])
                if message.get("id") == request_id and "method" not in message:
                    return message
                if "method" in message and "id" in message:  # the hub asks: answered on a POST of its own
                    assert answer is not None, message
                    self.asked += 1
                    self.questions.append(message)
                    reply = {"jsonrpc": "2.0", "id": message["id"], "result": answer}
                    await self.http.post(self.url, json=reply, headers=self.headers)
        raise AssertionError("the reply stream ended without a reply")
