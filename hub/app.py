"""The ASGI application: the MCP endpoints, health, and the lifespan that runs the hub.

The only module (with ``hub.server``) that knows FastAPI, Starlette or uvicorn.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Response
from starlette.routing import Route

from connectors import jsonrpc
from hub.asgi import Receive, Scope, Send
from hub.config import Config, HubSettings
from hub.guard import OriginGuard, default_allowed_hosts, default_allowed_origins
from hub.legacy_sse import LegacySse
from hub.runtime import Hub
from hub.transport import McpEndpoint

__all__ = ["ManifoldApp", "create_app"]


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

        def settings() -> HubSettings:
            return hub.config.hub  # read at use: a reload applies at once

        def accepting() -> bool:
            return hub.accepting

        self.api = FastAPI(title="Manifold", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
        self.mcp = McpEndpoint(hub.sessions, hub.events, run=hub.run, settings=settings, accepting=accepting)
        legacy = LegacySse(hub.sessions, settings=settings, accepting=accepting, stopped=hub.stopped)
        self.api.router.routes.append(Route("/sse", _Asgi(legacy.stream)))
        self.api.router.routes.append(Route("/messages", _Asgi(legacy.messages)))

        @self.api.get("/health")
        async def health() -> Response:
            return Response(jsonrpc.dumps(hub.health()), media_type="application/json")

        hub_settings = config.hub
        origins = default_allowed_origins() if hub_settings.allowed_origins is None else hub_settings.allowed_origins
        hosts = (
            default_allowed_hosts(hub_settings.host)
            if hub_settings.allowed_hosts is None
            else hub_settings.allowed_hosts
        )
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
