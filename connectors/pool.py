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
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Self

import httpx

from connectors.base import Connector, ProgressHandler
from connectors.errors import UpstreamBusy, UpstreamError, UpstreamUnavailable
from connectors.jsonrpc import Message
from connectors.limits import Limiter, LimitExceeded
from connectors.spec import UpstreamSpec
from connectors.sse import SseConnector
from connectors.streamable_http import StreamableHttpConnector

__all__ = [
    "ConnectorPool",
    "Listing",
    "PoolLimits",
    "PoolSession",
    "UpstreamMessageHandler",
    "UpstreamState",
    "UpstreamStatus",
]

logger = logging.getLogger(__name__)

UpstreamMessageHandler = Callable[[str, Message], None]
"""Receives (upstream name, notification) for notifications that belong to no call."""

_MAX_LIST_PAGES = 1000
_CLOSE_DEADLINE = 5.0


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


class _Upstream:
    def __init__(self, spec: UpstreamSpec, limits: PoolLimits, http: httpx.AsyncClient) -> None:
        self.spec = spec
        self.http = http
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
    ) -> None:
        self.limits = limits or PoolLimits()
        self._specs = list(specs)
        self._on_change = on_change
        self._upstreams: dict[str, _Upstream] = {}
        self._global = Limiter(
            self.limits.max_in_flight, queue_size=self.limits.queue_size, wait=self.limits.queue_timeout
        )
        self._tg = asyncio.TaskGroup()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle ---------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self._tg.__aenter__()
        for spec in self._specs:
            http = httpx.AsyncClient(
                timeout=httpx.Timeout(spec.connect_timeout, read=None),
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=spec.max_concurrency + 4),
                trust_env=False,
            )
            upstream = _Upstream(spec, self.limits, http)
            self._upstreams[spec.name] = upstream
            self._start(self._supervise(upstream))
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
                await upstream.http.aclose()

    def _start(self, coro: object) -> asyncio.Task[None]:
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

    def status(self, name: str) -> UpstreamStatus:
        return self._upstreams[name].status

    def statuses(self) -> list[UpstreamStatus]:
        return [self._upstreams[name].status for name in self.names]

    def open_session(
        self, *, capabilities: Message | None = None, on_message: UpstreamMessageHandler | None = None
    ) -> PoolSession:
        """A client session's view of the upstreams; close it with :meth:`PoolSession.aclose`."""
        return PoolSession(self, capabilities or {}, on_message)

    def in_flight(self, name: str) -> int:
        """Requests to one upstream that hold a slot now."""
        return self._upstreams[name].limiter.in_use

    def reconnect(self, name: str) -> None:
        """Ask an upstream's supervisor to retry now instead of waiting out its backoff."""
        self._upstreams[name].refresh.set()

    # -- supervision -------------------------------------------------------------------------------

    def _make(
        self, upstream: _Upstream, capabilities: Message, on_message: Callable[[Message], None] | None
    ) -> Connector:
        kind = SseConnector if upstream.spec.transport == "sse" else StreamableHttpConnector
        return kind(upstream.spec, upstream.http, capabilities=capabilities, on_message=on_message)

    def _set_status(self, upstream: _Upstream, status: UpstreamStatus) -> None:
        changed = (status.state, status.listing) != (upstream.status.state, upstream.status.listing)
        upstream.status = status
        if changed and self._on_change is not None:
            try:
                self._on_change(upstream.spec.name)
            except Exception:
                logger.exception("change listener failed for upstream %s", upstream.spec.name)

    async def _supervise(self, upstream: _Upstream) -> None:
        name = upstream.spec.name
        attempt = 0
        while True:
            error = "connection closed"
            try:
                connector = self._make(upstream, {}, lambda message: self._on_discovery_message(upstream, message))
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

    async def _watch(self, upstream: _Upstream, connector: Connector) -> None:
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

    def _on_discovery_message(self, upstream: _Upstream, message: Message) -> None:
        if message.get("method", "").endswith("/list_changed"):
            upstream.refresh.set()

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


class _Held:
    """One upstream session held open by a task of the pool."""

    def __init__(self) -> None:
        self.ready: asyncio.Future[Connector] = asyncio.get_running_loop().create_future()
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def usable(self) -> bool:
        if not self.ready.done():
            return True
        return self.ready.exception() is None and not self.ready.result().lost.is_set()


class PoolSession:
    """One client session's upstream sessions, opened on first use and closed together."""

    def __init__(self, pool: ConnectorPool, capabilities: Message, on_message: UpstreamMessageHandler | None) -> None:
        self._pool = pool
        self._capabilities = capabilities
        self._on_message = on_message
        self._held: dict[str, _Held] = {}
        self._closed = False

    async def request(
        self, upstream: str, method: str, params: Message | None = None, *, on_progress: ProgressHandler | None = None
    ) -> Message:
        """Send a request to one upstream on this session's behalf.

        Raises:
            UpstreamUnavailable: the upstream is down, unknown, or would not open a session.
            UpstreamBusy: its queue is full or the wait for a slot passed its deadline.
            UpstreamError: anything the connector raises for this request.
        """
        entry = self._pool._upstreams.get(upstream)
        if entry is None:
            raise UpstreamUnavailable(upstream, "no such upstream")
        status = entry.status
        if status.state is not UpstreamState.UP:
            raise UpstreamUnavailable(upstream, f"{status.state.value}: {status.last_error or 'not connected yet'}")
        try:
            async with entry.limiter.slot(), self._pool._global.slot():
                connector = await self._connector(entry)
                return await connector.request(method, params, on_progress=on_progress)
        except LimitExceeded as exc:
            raise UpstreamBusy(upstream, exc.reason) from None

    async def _connector(self, upstream: _Upstream) -> Connector:
        if upstream.spec.shared:
            if upstream.discovery is None:
                raise UpstreamUnavailable(upstream.spec.name, "not connected")
            return upstream.discovery
        if self._closed:
            raise UpstreamUnavailable(upstream.spec.name, "the client session is closed")
        held = self._held.get(upstream.spec.name)
        if held is None or not held.usable():
            if held is not None:
                held.stop.set()
            held = self._open(upstream)
            self._held[upstream.spec.name] = held
        # Shielded: a caller that gives up must not abort an open that others may share.
        return await asyncio.shield(held.ready)

    def _open(self, upstream: _Upstream) -> _Held:
        held = _Held()
        name = upstream.spec.name
        on_message = None
        if self._on_message is not None:
            handler = self._on_message

            def on_message(message: Message) -> None:
                handler(name, message)

        connector = self._pool._make(upstream, self._capabilities, on_message)

        async def hold() -> None:
            try:
                async with connector:
                    held.ready.set_result(connector)
                    await held.stop.wait()
            except Exception as exc:
                if not held.ready.done():
                    held.ready.set_exception(exc)
                else:
                    logger.warning("upstream %s session ended: %s", name, exc)
            finally:
                if not held.ready.done():
                    held.ready.set_exception(UpstreamUnavailable(name, "the hub is shutting down"))
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    held.ready.exception()  # retrieved, so an unawaited failure is not logged

        held.task = self._pool._start(hold())
        return held

    async def notify(self, upstream: str, method: str, params: Message | None = None) -> None:
        """Send a notification to an upstream session this client has already opened; else do nothing."""
        held = self._held.get(upstream)
        if held is None or not held.ready.done() or not held.usable():
            return
        await held.ready.result().notify(method, params)

    @property
    def open_upstreams(self) -> list[str]:
        return [name for name, held in self._held.items() if held.ready.done() and held.usable()]

    async def aclose(self) -> None:
        """Close every upstream session of this client, each in the task that opened it."""
        self._closed = True
        tasks = []
        for held in self._held.values():
            held.stop.set()
            if held.task is not None:
                tasks.append(held.task)
        self._held.clear()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=_CLOSE_DEADLINE)
            for task in pending:
                task.cancel()
