"""The hub's running parts, wired together: config, pool, catalog and sessions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from types import TracebackType
from typing import Any, Final, Self

from connectors import jsonrpc
from connectors.jsonrpc import Message
from connectors.pool import ConnectorPool, PoolLimits, UpstreamState
from connectors.spec import LATEST_VERSION, SUPPORTED_VERSIONS
from hub.catalog import Catalog, ListKind, Source
from hub.config import Config
from hub.errors import InvalidParams
from hub.events import EventLog
from hub.session import Session, SessionServices, for_client
from hub.sessions import SessionManager
from hub.store import Store

__all__ = ["SERVER_INFO", "Hub"]

logger = logging.getLogger(__name__)

SERVER_INFO: Final[dict[str, str]] = {"name": "manifold", "version": "0.1.0"}
_REBUILD_DELAY: Final = 0.05
_CAPABILITIES: Final[Message] = {
    "tools": {"listChanged": True},
    "prompts": {"listChanged": True},
    "resources": {"listChanged": True, "subscribe": True},
    "logging": {},
    "completions": {},
}
_LIST_CHANGED: Final[dict[ListKind, str]] = {
    "tools": "notifications/tools/list_changed",
    "prompts": "notifications/prompts/list_changed",
    "resources": "notifications/resources/list_changed",
    "resourceTemplates": "notifications/resources/list_changed",
}


class Hub:
    """Everything one running hub holds; an async context manager run by the app's lifespan."""

    def __init__(self, config: Config) -> None:
        self.config = config
        settings = config.hub
        self.catalog = Catalog(
            separator=settings.separator, max_name_length=settings.max_name_length, page_size=settings.page_size
        )
        limits = PoolLimits(
            max_in_flight=settings.max_in_flight,
            queue_size=settings.queue_size,
            queue_timeout=settings.queue_timeout,
            health_interval=settings.health_interval,
            backoff_initial=settings.reconnect.initial_delay,
            backoff_max=settings.reconnect.max_delay,
        )
        self.pool = ConnectorPool(
            config.upstream_specs(), limits, on_change=self._upstream_changed, on_shared_message=self._shared_message
        )
        self.run = secrets.token_hex(4)  # names this run of the hub in SSE event ids
        self.store = Store(settings.storage)
        self.events = EventLog(self.store, max_age=settings.events.max_age, max_events=settings.events.max_logged)
        services = SessionServices(
            pool=self.pool,
            catalog=self.catalog,
            run=self.run,
            idle_timeout=settings.session_idle_timeout,
            ask_timeout=settings.client_request_timeout,
            stream_events=settings.events.per_stream,
            stream_retention=settings.events.max_age,
            log_event=lambda session_id, stream, seq, message: self.events.record(
                session_id, self.run, stream, seq, message
            ),
            subscribers=lambda uri: self.sessions.subscribers(uri),
        )
        self.sessions = SessionManager(
            services, store=self.store, events=self.events, max_sessions=settings.max_sessions
        )
        self._rebuild_due: asyncio.TimerHandle | None = None
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Self:
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(self.store)
            await stack.enter_async_context(self.events)
            await stack.enter_async_context(self.pool)
            await stack.enter_async_context(self.sessions)
            self._stack = stack.pop_all()
        # Serve a full catalog from the first request when upstreams answer promptly;
        # a slow or dead one joins later without holding up the rest.
        specs = self.config.upstream_specs()
        await self.pool.wait_settled(max((s.connect_timeout for s in specs), default=0) + 1)
        self._rebuild()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._rebuild_due is not None:
            self._rebuild_due.cancel()
        await self._stack.aclose()

    # -- catalog -----------------------------------------------------------------------------------

    def _upstream_changed(self, name: str) -> None:
        # Changes that come together (fifty upstreams starting) make one rebuild, not fifty.
        if self._rebuild_due is None:
            self._rebuild_due = asyncio.get_running_loop().call_later(_REBUILD_DELAY, self._rebuild)

    def _rebuild(self) -> None:
        if self._rebuild_due is not None:
            self._rebuild_due.cancel()
            self._rebuild_due = None
        sources = []
        for upstream in self.config.enabled():
            listing = self.pool.status(upstream).listing
            if listing is not None:
                sources.append(Source(upstream, self.config.prefix_of(upstream), listing))
        changed = self.catalog.rebuild(sources)
        for method in dict.fromkeys(_LIST_CHANGED[kind] for kind in sorted(changed)):
            self.sessions.broadcast(jsonrpc.notification(method))

    def _shared_message(self, upstream: str, message: Message) -> None:
        # What a shared upstream session says outside any call concerns every client using it.
        out = for_client(self.catalog, upstream, message)
        if out["method"] == "notifications/resources/updated":
            self.sessions.notify_subscribers(out["params"].get("uri", ""), out)
        elif out["method"] == "notifications/message":
            self.sessions.broadcast(out)

    # -- sessions ----------------------------------------------------------------------------------

    async def initialize(self, params: Message) -> tuple[Session, Message]:
        """Open a session for an ``initialize`` request; returns it and the result to send.

        Raises:
            InvalidParams: the request lacks a protocol version.
            SessionLimit: no room for another session.
        """
        requested = params.get("protocolVersion")
        if not isinstance(requested, str):
            raise InvalidParams("params.protocolVersion must be a string")
        version = requested if requested in SUPPORTED_VERSIONS else LATEST_VERSION
        capabilities = params.get("capabilities")
        client_info = params.get("clientInfo")
        session = await self.sessions.create(
            protocol_version=version,
            client_info=client_info if isinstance(client_info, dict) else {},
            client_capabilities=capabilities if isinstance(capabilities, dict) else {},
        )
        result = {"protocolVersion": version, "capabilities": self.server_capabilities(), "serverInfo": SERVER_INFO}
        return session, result

    def server_capabilities(self) -> Message:
        """What the hub declares to clients at initialize."""
        capabilities = dict(_CAPABILITIES)
        if any("tasks" in status.capabilities for status in self.pool.statuses()):
            # Tasks pass through to the upstreams that offer them.
            capabilities["tasks"] = {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}
        return capabilities

    # -- health ------------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """Liveness and per-upstream state, as served by ``GET /health``."""
        upstreams = []
        for status in self.pool.statuses():
            upstreams.append(
                {
                    "name": status.name,
                    "transport": status.transport,
                    "state": status.state.value,
                    "latencyMs": None if status.latency_ms is None else round(status.latency_ms, 2),
                    "tools": self.catalog.count(status.name, "tools"),
                    "prompts": self.catalog.count(status.name, "prompts"),
                    "resources": self.catalog.count(status.name, "resources"),
                    "lastError": status.last_error,
                    "since": status.since,
                    "server": {k: status.server_info.get(k) for k in ("name", "version") if k in status.server_info},
                }
            )
        up = sum(u["state"] == UpstreamState.UP.value for u in upstreams)
        state = "ok" if up == len(upstreams) else ("degraded" if up else "down")
        return {
            "status": state,
            "server": SERVER_INFO,
            "sessions": len(self.sessions),
            "tools": len(self.catalog.items("tools")),
            "upstreams": upstreams,
            "collisions": self.catalog.collisions,
        }
