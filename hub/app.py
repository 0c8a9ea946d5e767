"""The ASGI application: the MCP endpoints, health, and the lifespan that runs the hub.

The only module (with ``hub.server``) that knows FastAPI, Starlette or uvicorn.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path

from fastapi import FastAPI, Request, Response
from starlette.routing import Route

from connectors import jsonrpc
from hub import admin as admin_routes
from hub.asgi import Receive, Scope, Send
from hub.config import Config, HubSettings
from hub.errors import Forbidden, HubError, InvalidParams, WireError, to_wire
from hub.gate import Gate
from hub.guard import OriginGuard, default_allowed_hosts, default_allowed_origins
from hub.identity import METADATA_PATH, credential
from hub.legacy_sse import LegacySse
from hub.modern import ModernEndpoint
from hub.runtime import Hub
from hub.store import AuditQuery, StoreError
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

    def __init__(self, config: Config, config_path: Path | None = None, host: str | None = None) -> None:
        self.hub = Hub(config, config_path)
        hub = self.hub
        listening = host or config.hub.host
        hub.reloader.listening = listening  # (a reload must not leave it open to anyone either)

        @asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            async with hub:
                yield

        def settings() -> HubSettings:
            return hub.config.hub  # read at use: a reload applies at once

        def accepting() -> bool:
            return hub.accepting

        def gate() -> Gate:
            return hub.gate

        self.api = FastAPI(title="Manifold", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
        modern = ModernEndpoint(hub.modern, gate, accepting)
        self.mcp = McpEndpoint(
            hub.sessions,
            hub.events,
            run=hub.run,
            settings=settings,
            accepting=accepting,
            gate=gate,
            modern=modern,
            affinity=hub.scale.affinity if hub.scale is not None else None,
        )
        legacy = LegacySse(hub.sessions, settings=settings, accepting=accepting, stopped=hub.stopped, gate=gate)
        self.api.router.routes.append(Route("/sse", _Asgi(legacy.stream)))
        self.api.router.routes.append(Route("/messages", _Asgi(legacy.messages)))

        async def admin(request: Request) -> bool:
            """Whether the request carries an admin credential (always, without auth)."""
            if not hub.gate.enabled:
                return True
            headers = {k.lower(): v for k, v in request.headers.items()}
            if credential(headers) is None:
                return False  # a probe without a credential is no failure: it gets the public answer
            try:
                caller = await hub.gate.caller(headers, "GET /health")
            except HubError:
                return False
            return caller.admin

        @self.api.get("/health")
        async def health(request: Request) -> Response:
            if not await admin(request):
                return Response(jsonrpc.dumps(hub.liveness()), media_type="application/json")
            if hub.scale is not None:
                with contextlib.suppress(StoreError):
                    await hub.scale.replicas.refresh()  # the replicas of this moment, not of the last heartbeat
            report = hub.health()
            return Response(jsonrpc.dumps(report), media_type="application/json")

        @self.api.get(METADATA_PATH)
        @self.api.get(f"{METADATA_PATH}/mcp")
        async def protected_resource() -> Response:
            document = hub.gate.authenticator.metadata(hub.config)
            return Response(jsonrpc.dumps(document), media_type="application/json")

        @self.api.get("/audit")
        async def audit(request: Request) -> Response:
            """Recent audit records (admin only): ``tenant``, ``since`` (unix seconds), ``tool`` (a glob), ``limit``."""
            headers = {k.lower(): v for k, v in request.headers.items()}
            try:
                caller = await hub.gate.caller(headers, "GET /audit")
                if hub.gate.enabled and not caller.admin:
                    refusal = Forbidden("Forbidden: the audit trail needs an admin credential")
                    hub.gate.refused(caller, "GET /audit", {}, refusal.code, refusal.message)
                    raise refusal
                query = AuditQuery(
                    since=float(request.query_params.get("since", 0)),
                    tenant=request.query_params.get("tenant"),
                    name_glob=request.query_params.get("tool"),
                    limit=min(int(request.query_params.get("limit", 1000)), 10_000),
                )
            except ValueError:
                return _error(to_wire(InvalidParams("since and limit must be numbers")))
            except HubError as exc:
                return _error(to_wire(exc))
            records = await hub.audit.query(query)
            return Response(jsonrpc.dumps([asdict(r) for r in records]), media_type="application/json")

        admin_routes.install(self.api, hub, hub.reloader)
        hub_settings = config.hub
        origins = default_allowed_origins() if hub_settings.allowed_origins is None else hub_settings.allowed_origins
        hosts = default_allowed_hosts(listening) if hub_settings.allowed_hosts is None else hub_settings.allowed_hosts
        self._guarded = OriginGuard(self._route, origins=origins, hosts=hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._guarded(scope, receive, send)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/mcp":
            await self.mcp(scope, receive, send)
        else:
            await self.api(scope, receive, send)


def _error(wire: WireError) -> Response:
    body = jsonrpc.dumps(jsonrpc.error_response(None, wire.error))
    return Response(body, status_code=wire.status, headers=wire.headers, media_type="application/json")


def create_app(
    config: Config, config_path: str | os.PathLike[str] | None = None, host: str | None = None
) -> ManifoldApp:
    """An ASGI app serving ``config`` (read from ``config_path``, which reloads read again); the hub
    starts and stops with the app's lifespan. ``host`` is where it listens, when not ``hub.host``."""
    return ManifoldApp(config, None if config_path is None else Path(config_path), host)
