"""The connector pool: every upstream's record, supervisor, caps and shared sessions.

Each upstream gets a :class:`~connectors.supervisor.Supervisor` task that
keeps its discovery session, listing and health. While an upstream is down
calls fail at once with an error naming it, and no other upstream notices.
Upstreams can be added, removed (their calls finish within a deadline first)
and updated (removed and added again) while the pool runs.

Clients reach upstreams through :class:`~connectors.upstream_sessions.UpstreamSessions`
(:meth:`ConnectorPool.open_session`), which uses the pool only as an
:class:`~connectors.upstream_sessions.UpstreamDirectory`. Every connector lives
in one task of the pool's task group, which enters and exits it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from dataclasses import replace
from types import TracebackType
from typing import Any, Self

from connectors.clients import HttpClients
from connectors.engine import Connector
from connectors.errors import UpstreamUnavailable
from connectors.factory import make_connector
from connectors.jsonrpc import Message
from connectors.limits import Limiter, PoolLimits
from connectors.processes import Processes
from connectors.spec import UpstreamSpec
from connectors.status import UpstreamState, UpstreamStatus
from connectors.supervisor import DISCOVERY_CAPABILITIES, Supervisor, answer_unrelated
from connectors.upstream import Upstream
from connectors.upstream_sessions import (
    HeldSession,
    UpstreamMessageHandler,
    UpstreamRequestHandler,
    UpstreamSessions,
    with_headers,
)

__all__ = ["ConnectorPool", "SharedMessageHandler"]

logger = logging.getLogger(__name__)

SharedMessageHandler = Callable[[str, str, Message], None]
"""Receives (upstream, key, notification) for what a shared upstream session says outside any call."""


class ConnectorPool:
    """Owns every upstream connector; an async context manager run by the app's lifespan."""

    def __init__(
        self,
        specs: Sequence[UpstreamSpec] = (),
        limits: PoolLimits | None = None,
        *,
        on_change: Callable[[str], None] | None = None,
        on_shared_message: SharedMessageHandler | None = None,
    ) -> None:
        self.limits = limits or PoolLimits()
        self._initial = list(specs)
        self._on_change = on_change
        self._on_shared_message = on_shared_message
        self._upstreams: dict[str, Upstream] = {}
        self._shared: dict[tuple[str, str], HeldSession] = {}
        self._global = Limiter(
            self.limits.max_in_flight, queue_size=self.limits.queue_size, wait=self.limits.queue_timeout
        )
        self._clients = HttpClients(Processes(self.limits.max_processes))
        self._tg: asyncio.TaskGroup | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stack = contextlib.AsyncExitStack()

    # -- lifecycle ---------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self._stack.enter_async_context(self._running())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    @contextlib.asynccontextmanager
    async def _running(self) -> AsyncIterator[None]:
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                for spec in self._initial:
                    self.add(spec)
                try:
                    yield
                finally:
                    self._tg = None
                    for task in self._tasks:
                        task.cancel()
        finally:
            for upstream in self._upstreams.values():
                await upstream.clients.aclose()
            self._upstreams.clear()
            await self._clients.processes.aclose()  # any a connector did not stop itself

    def start(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``coro`` as a task of the pool's task group (cancelled when the pool closes).

        Raises:
            UpstreamUnavailable: the pool is closed.
        """
        if self._tg is None:
            coro.close()
            raise UpstreamUnavailable("pool", "the hub is shutting down")
        task = self._tg.create_task(coro)
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

    # -- changing while it runs --------------------------------------------------------------------

    def add(self, spec: UpstreamSpec) -> None:
        """Start serving a new upstream (its supervisor connects it).

        Raises:
            ValueError: an upstream by that name exists.
        """
        if spec.name in self._upstreams:
            raise ValueError(f"upstream {spec.name!r} exists")
        upstream = Upstream(spec, self._clients.for_upstream(spec), self.limits)
        self._upstreams[spec.name] = upstream
        upstream.supervisor = self.start(Supervisor(upstream, self.limits, self._report).run())
        self._changed(spec.name)

    async def remove(self, name: str, deadline: float, *, replacing: bool = False) -> None:
        """Stop serving an upstream: new calls are refused, calls in flight get ``deadline`` seconds."""
        upstream = self._upstreams.get(name)
        if upstream is None:
            return
        if replacing:
            upstream.status = replace(upstream.status, state=UpstreamState.REMOVING)  # no list change
        else:
            self._report(upstream, replace(upstream.status, state=UpstreamState.REMOVING))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(deadline):
                await upstream.limiter.wait_idle()
        tasks = [task for task in (upstream.supervisor,) if task is not None]
        for held in [*upstream.held]:
            if isinstance(held, HeldSession) and held.task is not None:
                tasks.append(held.task)
        upstream.stop_sessions()
        if upstream.supervisor is not None:
            upstream.supervisor.cancel()
        for key in [key for key in self._shared if key[0] == name]:
            del self._shared[key]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=upstream.spec.connect_timeout)
            for task in pending:
                task.cancel()
        if self._upstreams.get(name) is upstream:
            del self._upstreams[name]
        await upstream.clients.aclose()
        if not replacing:
            self._changed(name)
        logger.info("upstream %s %s", name, "closed for its new settings" if replacing else "removed")

    async def update(self, spec: UpstreamSpec, deadline: float) -> None:
        """Serve ``spec`` in place of the upstream of that name (it reconnects); adds it when new."""
        current = self._upstreams.get(spec.name)
        if current is not None and current.spec == spec:
            return
        if current is not None:
            await self.remove(spec.name, deadline, replacing=True)
        self.add(spec)
        if current is not None:
            # Its names stay known (and listed) while it reconnects: a changed timeout is no list change.
            self._upstreams[spec.name].listing = current.listing

    # -- facts -------------------------------------------------------------------------------------

    @property
    def processes(self) -> Processes:
        """The local server processes the pool runs."""
        return self._clients.processes

    @property
    def names(self) -> list[str]:
        return list(self._upstreams)

    @property
    def specs(self) -> list[UpstreamSpec]:
        return [upstream.spec for upstream in self._upstreams.values()]

    def upstream(self, name: str) -> Upstream | None:
        return self._upstreams.get(name)

    @property
    def global_limiter(self) -> Limiter:
        return self._global

    def status(self, name: str) -> UpstreamStatus:
        return self._upstreams[name].status

    def statuses(self) -> list[UpstreamStatus]:
        return [upstream.status for upstream in self._upstreams.values()]

    def in_flight(self, name: str) -> int:
        """Requests to one upstream that hold a slot now."""
        return self._upstreams[name].limiter.in_use

    def refresh(self, name: str) -> None:
        """Ask for an upstream's listing again; a down one retries now."""
        upstream = self._upstreams.get(name)
        if upstream is not None:
            upstream.refresh.set()

    reconnect = refresh

    def open_session(
        self,
        *,
        capabilities: Message | None = None,
        on_message: UpstreamMessageHandler | None = None,
        on_request: UpstreamRequestHandler | None = None,
        key: str = "",
        headers: Mapping[str, Mapping[str, str]] | None = None,
    ) -> UpstreamSessions:
        """A client's view of the upstreams; close it with :meth:`UpstreamSessions.aclose`.

        ``capabilities`` are declared to every upstream session it opens; ``on_message`` and
        ``on_request`` receive what those sessions send outside any call; ``key`` picks the
        shared upstream sessions it uses; ``headers`` (per upstream) go on top of each upstream's own.
        """
        return UpstreamSessions(self, capabilities or {}, on_message, on_request, key=key, headers=headers)

    async def shared(self, upstream: Upstream, key: str, headers: Mapping[str, str] | None = None) -> Connector:
        """The shared upstream session for ``key`` (opened on first use with ``headers``, and again once lost).

        Keys never share a session: one tenant's upstream state is never another's.
        """
        held = self._shared.get((upstream.name, key))
        if held is None or held.upstream is not upstream or not held.usable():
            if held is not None:
                held.stop()
            # A local server's process for a tenant is stopped once idle (and started again on use).
            idle = upstream.spec.stdio.idle_timeout if upstream.spec.stdio is not None else None
            held = HeldSession(upstream, idle)
            name = upstream.name
            handler = self._on_shared_message

            def on_message(message: Message) -> None:
                if handler is not None:
                    handler(name, key, message)

            connector = make_connector(
                with_headers(upstream.spec, headers),
                upstream.clients,
                capabilities=DISCOVERY_CAPABILITIES,
                on_message=on_message,
                on_request=answer_unrelated,
                on_list_changed=lambda message: upstream.refresh.set(),
                tool_schema=upstream.tool_schema,
                key=key,
            )
            upstream.held.add(held)
            self._shared[(name, key)] = held
            held.task = self.start(held.hold(connector))
        held.touch()
        # Shielded: a caller that gives up must not abort an open that others share.
        return await asyncio.shield(held.ready)

    def close_shared(self, key: str) -> None:
        """Close every shared upstream session of ``key`` (a tenant that went away)."""
        for shared_key in [k for k in self._shared if k[1] == key]:
            self._shared.pop(shared_key).stop()

    # -- reports -----------------------------------------------------------------------------------

    def _report(self, upstream: Upstream, status: UpstreamStatus) -> None:
        if self._upstreams.get(upstream.name) is not upstream:
            return  # a record that was replaced or removed
        changed = (status.state, status.listing) != (upstream.status.state, upstream.status.listing)
        upstream.status = status
        if changed:
            self._changed(upstream.name)

    def _changed(self, name: str) -> None:
        if self._on_change is not None:
            try:
                self._on_change(name)
            except Exception:
                logger.exception("change listener failed for upstream %s", name)
