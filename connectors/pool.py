"""The connector pool: every upstream's connection, health and concurrency cap.

Each upstream gets a supervisor task that keeps a *discovery* session open
(handshake, listing, a ping per health interval), reconnects with exponential
backoff and jitter when it drops, and reports every change. While an upstream
is down its circuit is open: calls fail at once with an error naming it, and
no other upstream notices.

Client sessions reach upstreams through a :class:`PoolSession`, which opens
one upstream session per upstream on first use (isolated mode) or borrows
the discovery session (shared mode). Every connector lives in one task of
the pool's task group that enters and exits it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import TYPE_CHECKING, Final, Self

import httpx

from connectors.base import Connector, RequestHandler
from connectors.errors import NotRelayed, UpstreamError, UpstreamUnavailable
from connectors.http1 import Http1Pool
from connectors.jsonrpc import Message
from connectors.limits import Limiter
from connectors.spec import UpstreamSpec
from connectors.sse import SseConnector
from connectors.streamable_http import StreamableHttpConnector

if TYPE_CHECKING:
    from connectors.pool_session import PoolSession

__all__ = [
    "ConnectorPool",
    "Listing",
    "PoolLimits",
    "Upstream",
    "UpstreamMessageHandler",
    "UpstreamRequestHandler",
    "UpstreamState",
    "UpstreamStatus",
]

logger = logging.getLogger(__name__)

UpstreamMessageHandler = Callable[[str, Message], None]
"""Receives (upstream name, notification) for notifications that belong to no call."""

UpstreamRequestHandler = Callable[[str, Message], Awaitable[Message]]
"""Answers (upstream name, server-to-client request) for requests that belong to no call."""

_MAX_LIST_PAGES = 1000

# The discovery session declares every client capability the hub can relay: some servers list
# capability-gated tools only to sessions that declare them. A client that lacks one gets a clear
# error when such a tool asks it. (In shared mode this session also serves calls; requests tied
# to a call are relayed to that call's client.)
DISCOVERY_CAPABILITIES: Final[Message] = {
    "roots": {"listChanged": True},
    "sampling": {},
    "elicitation": {"form": {}, "url": {}},
}


class UpstreamState(enum.Enum):
    CONNECTING = "connecting"
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True)
class Listing:
    """What one upstream offers, as it sent it."""

    tools: tuple[Message, ...] = ()
    prompts: tuple[Message, ...] = ()
    resources: tuple[Message, ...] = ()
    resource_templates: tuple[Message, ...] = ()


@dataclass(frozen=True)
class UpstreamStatus:
    """A snapshot of one upstream's health."""

    name: str
    transport: str
    state: UpstreamState = UpstreamState.CONNECTING
    latency_ms: float | None = None
    last_error: str | None = None
    server_info: Message = field(default_factory=dict)
    capabilities: Message = field(default_factory=dict)
    listing: Listing | None = None
    since: float = field(default_factory=time.time)


@dataclass(frozen=True)
class PoolLimits:
    """Caps and timings shared by every upstream."""

    max_in_flight: int = 512
    queue_size: int = 256
    queue_timeout: float = 10.0
    health_interval: float = 15.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0


class Upstream:
    """One upstream's runtime state inside the pool."""

    def __init__(self, spec: UpstreamSpec, limits: PoolLimits, http: httpx.AsyncClient) -> None:
        self.spec = spec
        self.http = http
        self.posts = (
            Http1Pool(spec.url, idle_limit=spec.max_concurrency + 4, connect_timeout=spec.connect_timeout)
            if spec.transport == "streamable-http"
            else None
        )
        self.status = UpstreamStatus(name=spec.name, transport=spec.transport)
        self.limiter = Limiter(spec.max_concurrency, queue_size=limits.queue_size, wait=limits.queue_timeout)
        self.discovery: Connector | None = None
        self.refresh = asyncio.Event()
        self.settled = asyncio.Event()  # the first connection attempt has finished, either way


class ConnectorPool:
    """Owns every upstream connector; an async context manager run by the app's lifespan."""

    def __init__(
        self,
        specs: Sequence[UpstreamSpec],
        limits: PoolLimits | None = None,
        *,
        on_change: Callable[[str], None] | None = None,
        on_shared_message: UpstreamMessageHandler | None = None,
    ) -> None:
        self.limits = limits or PoolLimits()
        self._specs = list(specs)
        self._on_change = on_change
        self._on_shared_message = on_shared_message
        self._upstreams: dict[str, Upstream] = {}
        self._global = Limiter(
            self.limits.max_in_flight, queue_size=self.limits.queue_size, wait=self.limits.queue_timeout
        )
        self._tg = asyncio.TaskGroup()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle ---------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self._tg.__aenter__()
        # One TLS context for every upstream: httpx would load the CA bundle again for each client.
        tls = ssl.create_default_context()
        for spec in self._specs:
            http = httpx.AsyncClient(
                timeout=httpx.Timeout(spec.connect_timeout, read=None),
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=spec.max_concurrency + 4),
                trust_env=False,
                verify=tls,
            )
            upstream = Upstream(spec, self.limits, http)
            self._upstreams[spec.name] = upstream
            self.start(self._supervise(upstream))
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for task in self._tasks:
            task.cancel()
        try:
            await self._tg.__aexit__(None, None, None)
        finally:
            for upstream in self._upstreams.values():
                if upstream.posts is not None:
                    upstream.posts.close()
                await upstream.http.aclose()

    def start(self, coro: object) -> asyncio.Task[None]:
        """Run ``coro`` as a task of the pool's task group (cancelled when the pool closes)."""
        task: asyncio.Task[None] = self._tg.create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def wait_settled(self, time_limit: float) -> None:
        """Wait until every upstream has finished its first connection attempt, or ``time_limit`` seconds."""
        waits = [asyncio.ensure_future(u.settled.wait()) for u in self._upstreams.values()]
        if not waits:
            return
        _, pending = await asyncio.wait(waits, timeout=time_limit)
        for task in pending:
            task.cancel()

    # -- facts -------------------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return [spec.name for spec in self._specs]

    def upstream(self, name: str) -> Upstream | None:
        return self._upstreams.get(name)

    @property
    def global_limiter(self) -> Limiter:
        return self._global

    def status(self, name: str) -> UpstreamStatus:
        return self._upstreams[name].status

    def statuses(self) -> list[UpstreamStatus]:
        return [self._upstreams[name].status for name in self.names]

    def open_session(
        self,
        *,
        capabilities: Message | None = None,
        on_message: UpstreamMessageHandler | None = None,
        on_request: UpstreamRequestHandler | None = None,
    ) -> PoolSession:
        """A client session's view of the upstreams; close it with :meth:`PoolSession.aclose`.

        ``capabilities`` are declared to every upstream session it opens; ``on_message`` and
        ``on_request`` receive what those upstream sessions send outside any call.
        """
        from connectors.pool_session import PoolSession

        return PoolSession(self, capabilities or {}, on_message, on_request)

    def in_flight(self, name: str) -> int:
        """Requests to one upstream that hold a slot now."""
        return self._upstreams[name].limiter.in_use

    def reconnect(self, name: str) -> None:
        """Ask an upstream's supervisor to retry now instead of waiting out its backoff."""
        self._upstreams[name].refresh.set()

    def refresh(self, name: str) -> None:
        """Ask for an upstream's listing again (it said list_changed); a down one retries now."""
        self._upstreams[name].refresh.set()

    # -- supervision -------------------------------------------------------------------------------

    def make_connector(
        self,
        upstream: Upstream,
        capabilities: Message,
        on_message: Callable[[Message], None] | None,
        on_request: RequestHandler | None = None,
    ) -> Connector:
        """A connector for ``upstream``; the caller enters it in a task of this pool (see :meth:`start`)."""
        if upstream.posts is None:
            return SseConnector(
                upstream.spec, upstream.http, capabilities=capabilities, on_message=on_message, on_request=on_request
            )
        return StreamableHttpConnector(
            upstream.spec,
            upstream.http,
            posts=upstream.posts,
            capabilities=capabilities,
            on_message=on_message,
            on_request=on_request,
        )

    def _set_status(self, upstream: Upstream, status: UpstreamStatus) -> None:
        changed = (status.state, status.listing) != (upstream.status.state, upstream.status.listing)
        upstream.status = status
        if changed and self._on_change is not None:
            try:
                self._on_change(upstream.spec.name)
            except Exception:
                logger.exception("change listener failed for upstream %s", upstream.spec.name)

    async def _supervise(self, upstream: Upstream) -> None:
        name = upstream.spec.name
        attempt = 0
        while True:
            error = "connection closed"
            try:
                connector = self.make_connector(
                    upstream,
                    DISCOVERY_CAPABILITIES,
                    lambda message: self._on_discovery_message(upstream, message),
                    self._answer_discovery,
                )
                started = time.perf_counter()
                async with connector:
                    listing = await self._discover(connector)
                    upstream.discovery = connector
                    attempt = 0
                    self._set_status(
                        upstream,
                        UpstreamStatus(
                            name=name,
                            transport=upstream.spec.transport,
                            state=UpstreamState.UP,
                            latency_ms=(time.perf_counter() - started) * 1000,
                            server_info=connector.server_info,
                            capabilities=connector.server_capabilities,
                            listing=listing,
                        ),
                    )
                    logger.info("upstream %s is up (%d tools)", name, len(listing.tools))
                    upstream.settled.set()
                    await self._watch(upstream, connector)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = exc.reason if isinstance(exc, UpstreamError) else f"{type(exc).__name__}: {exc}"
            finally:
                upstream.discovery = None
            logger.warning("upstream %s is down: %s", name, error)
            self._set_status(
                upstream,
                UpstreamStatus(
                    name=name, transport=upstream.spec.transport, state=UpstreamState.DOWN, last_error=error
                ),
            )
            upstream.settled.set()
            delay = min(self.limits.backoff_max, self.limits.backoff_initial * 2**attempt)
            attempt += 1
            upstream.refresh.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay * random.uniform(0.5, 1.0)):
                    await upstream.refresh.wait()

    async def _watch(self, upstream: Upstream, connector: Connector) -> None:
        """Return or raise when the discovery session is lost; refresh the listing on request."""
        while True:
            lost = asyncio.ensure_future(connector.lost.wait())
            refresh = asyncio.ensure_future(upstream.refresh.wait())
            try:
                await asyncio.wait({lost, refresh}, timeout=self.limits.health_interval, return_when="FIRST_COMPLETED")
            finally:
                lost.cancel()
                refresh.cancel()
            if connector.lost.is_set():
                raise UpstreamUnavailable(upstream.spec.name, f"connection lost ({connector.lost_reason})")
            if upstream.refresh.is_set():
                upstream.refresh.clear()
                listing = await self._discover(connector)
                self._set_status(upstream, replace(upstream.status, listing=listing))
                continue
            started = time.perf_counter()
            await connector.request("ping", time_limit=min(self.limits.health_interval, upstream.spec.request_timeout))
            self._set_status(upstream, replace(upstream.status, latency_ms=(time.perf_counter() - started) * 1000))

    async def _answer_discovery(self, message: Message) -> Message:
        # Requests to the discovery session belong to no client: the hub has no roots of its own,
        # and nobody to ask a model or a user.
        if message["method"] == "roots/list":
            return {"roots": []}
        raise NotRelayed(f"{message['method']} has no client to go to outside a call")

    def _on_discovery_message(self, upstream: Upstream, message: Message) -> None:
        if message["method"].endswith("/list_changed"):
            upstream.refresh.set()
        elif upstream.spec.shared and self._on_shared_message is not None:
            # In shared mode this session serves every client: the hub decides who hears what.
            self._on_shared_message(upstream.spec.name, message)

    async def _discover(self, connector: Connector) -> Listing:
        capabilities = connector.server_capabilities
        empty: tuple[Message, ...] = ()
        tools, prompts, resources, templates = empty, empty, empty, empty
        if "tools" in capabilities:
            tools = await self._list_all(connector, "tools/list", "tools")
        if "prompts" in capabilities:
            prompts = await self._list_all(connector, "prompts/list", "prompts")
        if "resources" in capabilities:
            resources = await self._list_all(connector, "resources/list", "resources")
            templates = await self._list_all(connector, "resources/templates/list", "resourceTemplates")
        return Listing(tools=tools, prompts=prompts, resources=resources, resource_templates=templates)

    async def _list_all(self, connector: Connector, method: str, key: str) -> tuple[Message, ...]:
        items: list[Message] = []
        cursor: str | None = None
        for _ in range(_MAX_LIST_PAGES):
            result = await connector.request(method, {"cursor": cursor} if cursor else None)
            page = result.get(key)
            if isinstance(page, list):
                items.extend(item for item in page if isinstance(item, dict))
            next_cursor = result.get("nextCursor")
            if not isinstance(next_cursor, str) or not next_cursor:
                break
            cursor = next_cursor
        return tuple(items)
