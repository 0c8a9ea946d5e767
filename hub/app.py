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


def create_app(config: Config) -> FastAPI:
    """An ASGI app serving ``config``; the hub starts and stops with the app's lifespan."""
    hub = Hub(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with hub:
            yield

    app = FastAPI(title="Manifold", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.hub = hub
    # The MCP endpoints are plain ASGI: they stream, and /mcp is the hot path.
    app.router.routes.append(Route("/mcp", McpEndpoint(hub)))
    legacy = LegacySse(hub, message_path="/messages")
    app.router.routes.append(Route("/sse", _Asgi(legacy.stream)))
    app.router.routes.append(Route("/messages", _Asgi(legacy.messages)))
    settings = config.hub
    app.add_middleware(
        OriginGuard,
        origins=default_allowed_origins() if settings.allowed_origins is None else settings.allowed_origins,
        hosts=default_allowed_hosts(settings.host) if settings.allowed_hosts is None else settings.allowed_hosts,
    )

    @app.get("/health")
    async def health() -> Response:
        return Response(jsonrpc.dumps(hub.health()), media_type="application/json")

    return app
