"""Scripted upstreams for the tests, and connectors to them.

A :class:`Script` is a tiny ASGI upstream served by uvicorn on 127.0.0.1: it
answers ``initialize``, records every message with its headers, and hands
the rest to a handler that returns the reply to send.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx

from connectors.clients import HttpClients, UpstreamClients
from connectors.engine import Connector
from connectors.factory import make_connector
from connectors.spec import UpstreamSpec
from connectors.stream_budget import StreamBudget
from tests.servers import asgi_body, asgi_lifespan, serve

HEADERS = {"authorization": "Bearer s3cret"}
Handler = Callable[[dict[str, Any], dict[str, str]], Awaitable[httpx.Response]]
INIT_RESULT = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}}, "serverInfo": {"name": "s"}}


class Script:
    """A scripted upstream (an ASGI app): answers initialize, records every message, delegates the rest."""

    def __init__(self, handler: Handler | None = None, *, init_result: dict[str, Any] = INIT_RESULT) -> None:
        self.handler = handler
        self.init_result = init_result
        self.received: list[tuple[dict[str, Any], dict[str, str]]] = []
        self.sessions = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await asgi_lifespan(receive, send)
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        response = await self.answer(scope["method"], headers, await asgi_body(receive))
        raw_headers = [(k.encode(), v.encode()) for k, v in response.headers.items()]
        await send({"type": "http.response.start", "status": response.status_code, "headers": raw_headers})
        await send({"type": "http.response.body", "body": response.content})

    async def answer(self, method: str, headers: dict[str, str], body: bytes) -> httpx.Response:
        if method == "DELETE":
            return httpx.Response(200)
        if method == "GET":
            return httpx.Response(405)
        message = json.loads(body)
        self.received.append((message, headers))
        if message.get("method") == "initialize":
            self.sessions += 1
            session = {"mcp-session-id": f"s{self.sessions}"}
            return httpx.Response(200, json=reply(message, self.init_result), headers=session)
        if "id" not in message:
            return httpx.Response(202)
        if self.handler is None:
            return httpx.Response(200, json=reply(message, {"ok": True}))
        return await self.handler(message, headers)

    def methods(self) -> list[str]:
        return [m.get("method", "response") for m, _ in self.received]


def reply(message: dict[str, Any], result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": message["id"], "result": result}


@asynccontextmanager
async def clients_for(spec: UpstreamSpec, http: httpx.AsyncClient | None = None) -> AsyncIterator[UpstreamClients]:
    """The clients the pool would give ``spec`` (with ``http`` in place of its httpx client)."""
    clients = HttpClients().for_upstream(spec)
    if http is not None:
        await clients.http.aclose()
        clients = UpstreamClients(
            http=http, posts=clients.posts, streams=StreamBudget(spec.max_streams), processes=clients.processes
        )
    try:
        yield clients
    finally:
        if http is None:
            await clients.aclose()
        elif clients.posts is not None:
            clients.posts.close()


@asynccontextmanager
async def connected(
    spec: UpstreamSpec, http: httpx.AsyncClient | None = None, **options: Any
) -> AsyncIterator[Connector]:
    """A connector to ``spec``, entered (``options`` go to :func:`connectors.factory.make_connector`)."""
    async with clients_for(spec, http) as clients, make_connector(spec, clients, **options) as connector:
        yield connector


@asynccontextmanager
async def scripted(script: Script, **spec: Any) -> AsyncIterator[Connector]:
    """A connector to ``script`` served on 127.0.0.1, entered."""
    async with serve(script) as url:
        options = {"name": "up", "url": f"{url}/mcp", "headers": HEADERS, **spec}
        async with connected(UpstreamSpec(**options)) as upstream:
            yield upstream
