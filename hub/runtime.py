"""The hub's running parts, wired together: config, pool, catalog, views, sessions, store.

:class:`Hub` is an async context manager run by the app's lifespan. Its
state is explicit (:class:`HubState`): it starts, is ready, drains (no new
sessions or requests, calls in flight get ``drainTimeout`` seconds, then
every stream ends so clients resume on the next start) and closes. A new
config can be applied while it runs (:meth:`Hub.apply`).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import secrets
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from connectors import jsonrpc
from connectors.jsonrpc import Message
from connectors.pool import ConnectorPool
from connectors.spec import UpstreamSpec
from connectors.status import UpstreamState
from hub.audit import AuditLog
from hub.catalog import Catalog, ListKind, Source
from hub.config import Config, ProcessSettings
from hub.context import Caller, ServerFacts
from hub.events import EventLog
from hub.gate import Gate
from hub.health import process_facts, store_report, upstream_report
from hub.listen import Listeners
from hub.live_settings import apply_bounds, parked_per_principal, pool_limits
from hub.metrics import Metrics
from hub.modern import ModernServices
from hub.outbound import for_client
from hub.redis_store import RedisStore
from hub.reload import Reloader
from hub.request_state import StateSeal
from hub.scale_out import ScaleOut
from hub.session_services import SessionServices
from hub.session_streams import StreamSettings
from hub.sessions import SessionManager
from hub.shared_limits import SharedBuckets
from hub.stateless import PrincipalUpstreams, StatelessContexts
from hub.stateless_calls import StatelessCalls
from hub.stateless_policy import StatelessPolicy
from hub.storage import open_store
from hub.upstream_tasks import offers_tasks
from hub.views import Views

__all__ = ["SERVER_INFO", "Hub", "HubState"]

logger = logging.getLogger(__name__)

SERVER_INFO: Final[dict[str, str]] = {"name": "manifold", "version": "0.1.0"}
_REBUILD_DELAY: Final = 0.05
_STOP_GRACE: Final = 2.0
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


class HubState(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    CLOSED = "closed"


class Hub:
    """Everything one running hub holds; an async context manager run by the app's lifespan."""

    def __init__(self, config: Config, config_path: Path | None = None) -> None:
        self.config = config
        self.reloader = Reloader(self, config_path)
        settings = config.hub
        self.state = HubState.STARTING
        self.catalog = Catalog(
            separator=settings.separator, max_name_length=settings.max_name_length, page_size=settings.page_size
        )
        self.views = Views(self.catalog)
        self.pool = ConnectorPool(
            config.upstream_specs(),
            pool_limits(settings),
            on_change=self._upstream_changed,
            on_shared_message=self._shared_message,
        )
        self.run = secrets.token_hex(4)  # names this run of the hub in SSE event ids
        self.seal = StateSeal()
        """Seals stateless clients' ``requestState`` (with replicas, with a key they share)."""
        self.store = open_store(settings, ProcessSettings().redis_password)
        self.scale = (
            ScaleOut(
                self.store,
                self.run,
                lambda: self.config.hub,
                config_digest=lambda: self.reloader.digest,
                adopt_config=self.reloader.adopt,
                refresh_upstream=self.pool.refresh,
                give_up_session=lambda session_id: self.sessions.give_up(session_id),
                rewrite_session=lambda session_id: self.sessions.rewrite(session_id),
            )
            if isinstance(self.store, RedisStore)
            else None
        )
        """With Redis: this replica among the others (ownership, forwarding, the control plane)."""
        self.events = EventLog(
            self.store,
            max_age=settings.events.max_age,
            max_events=settings.events.max_logged,
            durable=settings.redis.timeout * 2 if self.scale is not None else None,
        )
        self.audit = AuditLog(self.store, config.audit)
        self.metrics = Metrics(per_tool=settings.metrics.per_tool)
        self.counting = self.metrics if settings.metrics.enabled else None
        """The metrics the request path counts into, or None with ``hub.metrics.enabled`` off."""
        self.shared_buckets = SharedBuckets(self.store) if isinstance(self.store, RedisStore) else None
        self.gate = Gate(config, self.audit, metrics=self.counting, shared=self.shared_buckets)
        self.server = ServerFacts(info=SERVER_INFO, capabilities=self.server_capabilities)
        services = SessionServices(
            open_upstreams=self.pool.open_session,
            server=self.server,
            run=self.run,
            idle_timeout=settings.session_idle_timeout,
            unused_timeout=settings.unused_session_timeout,
            ask_timeout=settings.client_request_timeout,
            streams=StreamSettings(
                retain=settings.events.per_stream,
                retain_bytes=settings.events.per_stream_bytes,
                retention=settings.events.max_age,
            ),
            log_event=lambda session_id, stream, event: self.events.record(session_id, self.run, stream, event),
            still_held=lambda uri, tenant: self.listeners.held(uri, tenant),
            record=lambda session: self.sessions.record(session),
            audit=self.audit,
            metrics=self.counting,
        )
        self.sessions = SessionManager(
            services,
            self.views,
            store=self.store,
            events=self.events,
            max_sessions=settings.max_sessions,
            store_ready=self._store_ready,
            leases=self.scale.replicas if self.scale is not None else None,
        )
        self.listeners = Listeners(max_total=settings.max_sessions, subscribed=self.sessions.subscribed)
        stateless_upstreams = PrincipalUpstreams(
            self.pool.open_session,
            max_sets=settings.max_sessions,
            idle_timeout=settings.session_idle_timeout,
            lanes=settings.stateless_lanes,
            on_message=self._stateless_message,
        )
        policy = StatelessPolicy(lambda: self.config, self.pool)
        if self.scale is not None:
            self.scale.seal = self.seal
        self.modern = ModernServices(
            views=self.views,
            upstreams=stateless_upstreams,
            calls=StatelessCalls(
                self.seal,
                input_timeout=settings.input_timeout,
                max_parked=settings.max_waiting_calls,
                max_parked_per_principal=parked_per_principal(settings),
                max_parked_per_upstream=policy.parked_cap,
                replica=self.run,
            ),
            listeners=self.listeners,
            contexts=StatelessContexts(self.server),
            in_flight=services.calls,
            list_ttl_ms=policy.list_ttl_ms,
            public=policy.public,
            spreads=policy.spreads,
            audit=self.audit,
            metrics=self.counting,
        )
        self.stopped = asyncio.Event()
        """Set once draining has ended every stream (endpoints that hold connections end theirs)."""
        self._rebuild_due: asyncio.TimerHandle | None = None
        self._drain_deadline: asyncio.Timeout | None = None
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Self:
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(self.store)
            if self.scale is not None:
                self.reloader.on_reloaded = self.scale.control.config_applied
                await stack.enter_async_context(self.scale)
            await stack.enter_async_context(self.events)
            await stack.enter_async_context(self.audit)
            await stack.enter_async_context(self.pool)
            await stack.enter_async_context(self.modern.upstreams)
            await stack.enter_async_context(self.modern.calls)
            await stack.enter_async_context(self.sessions)
            await stack.enter_async_context(self.reloader)
            self._stack = stack.pop_all()
        # Serve a full catalog from the first request when upstreams answer promptly; a slow or
        # dead one joins later (clients get list_changed) without holding up the port.
        await self.pool.wait_settled(self.config.hub.startup_grace)
        self._rebuild()
        self.state = HubState.READY
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.state = HubState.CLOSED
        self.stopped.set()
        if self._rebuild_due is not None:
            self._rebuild_due.cancel()
        await self._stack.aclose()

    @property
    def accepting(self) -> bool:
        """Whether new sessions and requests are taken (not while draining or closed)."""
        return self.state is HubState.READY or self.state is HubState.STARTING

    # -- draining ----------------------------------------------------------------------------------

    async def drain(self, time_limit: float | None = None) -> None:
        """Stop taking new work, let calls in flight finish within ``time_limit`` seconds
        (``hub.drainTimeout`` by default), end every stream and flush the store."""
        if self.state is not HubState.READY:
            return
        limit = self.config.hub.drain_timeout if time_limit is None else time_limit
        self.state = HubState.DRAINING
        self.sessions.stop_accepting()
        calls = self.sessions.services.calls
        logger.info("draining: %d calls in flight, %ds to finish", calls.value, limit)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit) as self._drain_deadline:
                await calls.wait_zero()
        self._drain_deadline = None
        if calls.value:
            logger.warning("draining: %d calls still running after %ds; ending them", calls.value, limit)
            self.sessions.stop_calls()
            self.modern.calls.stop()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_STOP_GRACE):
                    await calls.wait_zero()
        self.sessions.release_streams()
        self.listeners.end_all()
        self.stopped.set()
        await self.events.flush()
        logger.info("drained")

    def hurry(self) -> None:
        """End a drain's wait for calls now (a second signal): they get their error reply at once."""
        if self._drain_deadline is not None:
            self._drain_deadline.reschedule(asyncio.get_running_loop().time())

    # -- config ------------------------------------------------------------------------------------

    async def apply(self, config: Config) -> None:
        """Serve ``config`` from now on: upstreams added, removed (calls in flight finish within
        ``hub.drainTimeout``) and changed (reconnected) without dropping sessions."""
        old = {spec.name: spec for spec in self.pool.specs}
        new = {spec.name: spec for spec in config.upstream_specs()}
        self.config = config
        self.gate = Gate(config, self.audit, metrics=self.counting, shared=self.shared_buckets)
        self.audit.config = config.audit
        self.metrics.per_tool = config.hub.metrics.per_tool
        apply_bounds(
            config.hub,
            catalog=self.catalog,
            sessions=self.sessions,
            listeners=self.listeners,
            stateless=self.modern.upstreams,
            calls=self.modern.calls,
            processes=self.pool.processes,
        )
        deadline = config.hub.drain_timeout
        await asyncio.gather(
            *(self.pool.remove(name, deadline) for name in old if name not in new),
            *(self.pool.update(spec, deadline) for name, spec in new.items() if name in old and old[name] != spec),
        )
        for name, spec in new.items():
            if name not in old:
                self.pool.add(spec)
        self._rebuild()
        # Sessions see their tenant's new view at once, and hear of it if it changed.
        changed = self.sessions.review(lambda caller: self.views.view(self.gate.tenant(caller).rule))
        if changed:
            logger.info("reload: %d sessions see a changed view", changed)

    # -- catalog -----------------------------------------------------------------------------------

    def _upstream_changed(self, name: str) -> None:
        if self.scale is not None:
            upstream = self.pool.upstream(name)
            self.scale.upstream_changed(name, upstream.listing if upstream is not None else None)
        # Changes that come together (fifty upstreams starting) make one rebuild, not fifty.
        if self._rebuild_due is None:
            with contextlib.suppress(RuntimeError):  # no loop: the pool is being built outside one
                self._rebuild_due = asyncio.get_running_loop().call_later(_REBUILD_DELAY, self._rebuild)

    def _rebuild(self) -> None:
        if self._rebuild_due is not None:
            self._rebuild_due.cancel()
            self._rebuild_due = None
        sources = []
        for name in self.config.enabled():
            upstream = self.pool.upstream(name)
            if upstream is not None and upstream.listing is not None:
                state = upstream.status.state
                if state is not UpstreamState.REMOVING:
                    # Down: names known, not listed. Connecting with an earlier listing (new settings):
                    # listed as it was, until it is up or down.
                    listed = state is UpstreamState.UP or state is UpstreamState.CONNECTING
                    sources.append(Source(name, self.config.prefix_of(name), upstream.listing, listed))
        changed = self.views.changed(self.catalog.rebuild(sources))
        for rule, kinds in changed.items():
            if kinds:
                self.listeners.lists_changed(rule, kinds)
            for method in dict.fromkeys(_LIST_CHANGED[kind] for kind in sorted(kinds)):
                self.sessions.broadcast(jsonrpc.notification(method), rule)

    def _shared_message(self, upstream: str, key: str, message: Message) -> None:
        # What a shared upstream session says outside any call concerns the clients of its key.
        out = for_client(self.catalog, upstream, message)
        if out["method"] == "notifications/resources/updated":
            self.sessions.notify_subscribers(out["params"].get("uri", ""), out, key)
            self.listeners.resource_updated(out["params"].get("uri", ""), out, tenant=key)
        elif out["method"] == "notifications/message":
            self.sessions.broadcast_key(out, key)

    def _stateless_message(self, caller: Caller, upstream: str, message: Message) -> None:
        # What a stateless caller's upstream session says outside any call: only resource updates
        # have somewhere to go (that caller's listen streams); list changes reach everyone via the catalog.
        out = for_client(self.catalog, upstream, message)
        if out["method"] == "notifications/resources/updated":
            self.listeners.resource_updated(out["params"].get("uri", ""), out, caller=caller)

    def server_capabilities(self) -> Message:
        """What the hub declares to clients at initialize."""
        capabilities = dict(_CAPABILITIES)
        if any(offers_tasks(status.capabilities) for status in self.pool.statuses()):
            # Tasks pass through to the upstreams that offer them (either era's way).
            capabilities["tasks"] = {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}
        return capabilities

    def upstream_specs(self) -> list[UpstreamSpec]:
        """The upstreams served now."""
        return self.pool.specs

    # -- health ------------------------------------------------------------------------------------

    def liveness(self) -> dict[str, Any]:
        """What ``GET /health`` tells anyone: whether the hub is up."""
        return {"status": self.health()["status"], "server": SERVER_INFO}

    def health(self) -> dict[str, Any]:
        """Liveness and per-upstream state, as served by ``GET /health`` to admins (or without auth)."""
        upstreams = []
        for name in self.pool.names:
            upstream = self.pool.upstream(name)
            if upstream is not None:
                upstreams.append(upstream_report(upstream, self.catalog, self.pool.processes))
        up = sum(u["state"] == UpstreamState.UP.value for u in upstreams)
        state = "ok" if up == len(upstreams) else ("degraded" if up else "down")
        store = self.store_report()
        if store.get("reachable") is False and state == "ok":
            state = "degraded"  # sessions it owns go on; new ones are refused until Redis answers
        if self.state is HubState.DRAINING:
            state = "draining"
        return {
            "status": state,
            "server": SERVER_INFO,
            "sessions": len(self.sessions),
            "tools": len(self.catalog.items("tools")),
            "upstreams": upstreams,
            "collisions": self.catalog.collisions,
            "process": process_facts(),
            "store": store,
            **({"replica": self.scale.report()} if self.scale is not None else {}),
        }

    def _store_ready(self) -> bool:
        # With replicas, also: registered among them (else the others would take its sessions as a gone one's).
        ready = self.store_report().get("reachable") is not False
        return ready and (self.scale is None or self.scale.replicas.registered)

    def store_report(self) -> dict[str, Any]:
        """Which store the hub uses and, for Redis, whether it answers."""
        return store_report(self.store, self.config.hub.storage)
