"""The FastAPI application: the MCP endpoint, health, and the lifespan that runs the hub."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Response
from starlette.routing import Route

from connectors import jsonrpc
from hub.config import Config
from hub.runtime import Hub
from hub.transport import McpEndpoint

__all__ = ["create_app"]


def create_app(config: Config) -> FastAPI:
    """An ASGI app serving ``config``; the hub starts and stops with the app's lifespan."""
    hub = Hub(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with hub:
            yield

    app = FastAPI(title="Manifold", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.hub = hub
    # The MCP endpoint is plain ASGI: it streams, and it is the hot path.
    app.router.routes.append(Route("/mcp", McpEndpoint(hub)))

    @app.get("/health")
    async def health() -> Response:
        return Response(jsonrpc.dumps(hub.health()), media_type="application/json")

    return app
