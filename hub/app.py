"""The FastAPI application: the MCP endpoint, health, and the lifespan that runs the hub."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Response
from starlette.routing import Route

from connectors import jsonrpc
from hub.config import Config
from hub.guard import OriginGuard, default_allowed_hosts, default_allowed_origins
from hub.legacy_sse import LegacySse
from hub.runtime import Hub
from hub.transport import McpEndpoint, Receive, Scope, Send

__all__ = ["create_app"]


class _Asgi:
    """Marks a coroutine function as a raw ASGI app for Starlette's router."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


class ManifoldApp:
    """The ASGI app. ``/mcp`` goes straight to its endpoint (the hot path skips the framework's
    middleware); everything else, and the lifespan that runs the hub, goes through FastAPI.
    The Origin/Host guard stands in front of both."""

    def __init__(self, config: Config) -> None:
        self.hub = Hub(config)
        hub = self.hub

        @asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            async with hub:
                yield

        self.api = FastAPI(title="Manifold", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
        self.mcp = McpEndpoint(hub)
        legacy = LegacySse(hub, message_path="/messages")
        self.api.router.routes.append(Route("/sse", _Asgi(legacy.stream)))
        self.api.router.routes.append(Route("/messages", _Asgi(legacy.messages)))

        @self.api.get("/health")
        async def health() -> Response:
            return Response(jsonrpc.dumps(hub.health()), media_type="application/json")

        settings = config.hub
        origins = default_allowed_origins() if settings.allowed_origins is None else settings.allowed_origins
        hosts = default_allowed_hosts(settings.host) if settings.allowed_hosts is None else settings.allowed_hosts
        self._guarded = OriginGuard(self._route, origins=origins, hosts=hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._guarded(scope, receive, send)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/mcp":
            await self.mcp(scope, receive, send)
        else:
            await self.api(scope, receive, send)


def create_app(config: Config) -> ManifoldApp:
    """An ASGI app serving ``config``; the hub starts and stops with the app's lifespan."""
    return ManifoldApp(config)
