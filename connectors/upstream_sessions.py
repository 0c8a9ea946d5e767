"""A client's upstream sessions: opened on first use, closed together.

In isolated mode each client gets its own upstream session per upstream; in
shared mode it uses the pool's shared session for its key (one per tenant,
never the discovery session). Every upstream session lives in a task of the
pool that enters and exits it (:class:`HeldSession`). This module sees the
pool only through :class:`UpstreamDirectory`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import replace
from typing import Any, Final, Protocol

from connectors import log_context, tracing
from connectors.engine import CallHooks, Connector
from connectors.errors import UpstreamBusy, UpstreamError, UpstreamUnavailable
from connectors.factory import make_connector
from connectors.jsonrpc import Message
from connectors.limits import Limiter, LimitExceeded
from connectors.spec import UpstreamSpec
from connectors.upstream import Upstream

__all__ = [
    "HeldSession",
    "UpstreamDirectory",
    "UpstreamMessageHandler",
    "UpstreamRequestHandler",
    "UpstreamSessions",
    "with_headers",
]

logger = logging.getLogger(__name__)

UpstreamMessageHandler = Callable[[str, Message], None]
"""Receives (upstream name, notification) for notifications that belong to no call."""

UpstreamRequestHandler = Callable[[str, Message], Awaitable[Message]]
"""Answers (upstream name, server-to-client request) for requests that belong to no call."""

_CLOSE_DEADLINE: Final = 5.0


class UpstreamDirectory(Protocol):
    """What a client's upstream sessions need of the pool."""

    def upstream(self, name: str) -> Upstream | None: ...

    @property
    def global_limiter(self) -> Limiter: ...

    def start(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]: ...

    async def shared(self, upstream: Upstream, key: str, headers: Mapping[str, str] | None = None) -> Connector: ...


def with_headers(spec: UpstreamSpec, headers: Mapping[str, str] | None) -> UpstreamSpec:
    """``spec`` with ``headers`` on top of its own (a tenant's credentials for the upstream)."""
    if not headers:
        return spec
    replaced = {name.lower() for name in headers}  # header names are case-insensitive
    kept = {name: value for name, value in spec.headers.items() if name.lower() not in replaced}
    return replace(spec, headers={**kept, **headers})


class HeldSession:
    """One upstream session held open by a task of the pool until :meth:`stop`."""

    def __init__(self, upstream: Upstream, idle_timeout: float | None = None) -> None:
        self.upstream = upstream
        self.ready: asyncio.Future[Connector] = asyncio.get_running_loop().create_future()
        self._stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.idle_timeout = idle_timeout
        """Close it once it has served nobody for this long (None: never)."""
        self.last_used = time.monotonic()

    def touch(self) -> None:
        self.last_used = time.monotonic()

    def _idle(self, connector: Connector) -> bool:
        if self.idle_timeout is None or connector.busy or connector.listening_wanted:
            return False
        return time.monotonic() - self.last_used >= self.idle_timeout

    def usable(self) -> bool:
        if not self.ready.done():
            return True
        return self.ready.exception() is None and not self.ready.result().is_lost

    def stop(self) -> None:
        self._stop.set()

    async def hold(self, connector: Connector, opened: Callable[[Connector], Awaitable[None]] | None = None) -> None:
        """Enter ``connector``, publish it, and keep it open until stopped or lost."""
        name = self.upstream.name
        try:
            async with connector:
                if opened is not None:
                    await opened(connector)
                self.ready.set_result(connector)
                self.touch()  # its idle time starts once it is open
                stop = asyncio.ensure_future(self._stop.wait())
                lost = asyncio.ensure_future(connector.lost_event.wait())
                check = None if self.idle_timeout is None else max(self.idle_timeout / 4, 0.05)
                try:
                    while not (stop.done() or lost.done() or self._idle(connector)):
                        await asyncio.wait({stop, lost}, timeout=check, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stop.cancel()
                    lost.cancel()
        except Exception as exc:
            if not self.ready.done():
                self.ready.set_exception(exc)
            else:
                logger.warning("upstream %s session ended: %s", name, exc)
        finally:
            self.upstream.held.discard(self)
            if not self.ready.done():
                self.ready.set_exception(UpstreamUnavailable(name, "the hub is shutting down"))
            with contextlib.suppress(asyncio.CancelledError, Exception):
                self.ready.exception()  # retrieved, so an unawaited failure is not logged


class UpstreamSessions:
    """One client's upstream sessions, opened on first use and closed together.

    ``key`` picks the shared upstream sessions this client uses (its tenant); ``headers`` are
    sent to each upstream on top of its own (the tenant's credentials for it).
    """

    def __init__(
        self,
        directory: UpstreamDirectory,
        capabilities: Message,
        on_message: UpstreamMessageHandler | None = None,
        on_request: UpstreamRequestHandler | None = None,
        *,
        key: str = "",
        headers: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self._directory = directory
        self._headers = headers or {}
        self._capabilities = capabilities
        self._on_message = on_message
        self._on_request = on_request
        self.key = key
        self._held: dict[str, HeldSession] = {}
        self._closed = False
        self.log_level: str | None = None
        self._subscriptions: dict[str, set[str]] = {}  # per upstream, the original URIs subscribed

    async def request(
        self, upstream: str, method: str, params: Message | None = None, *, hooks: CallHooks | None = None
    ) -> Message:
        """Send a request to one upstream on this client's behalf.

        Raises:
            UpstreamUnavailable: the upstream is down, unknown, removed, or would not open a session.
            CircuitOpen: its breaker is open.
            UpstreamBusy: its queue is full or the wait for a slot passed its deadline.
            UpstreamError: anything the connector raises for this request.
        """
        entry = self._directory.upstream(upstream)
        if entry is None:
            raise UpstreamUnavailable(upstream, "no such upstream")
        entry.admit()
        error: BaseException | None = None
        noted = log_context.UPSTREAM.set(upstream)
        try:
            async with entry.limiter.slot(), self._directory.global_limiter.slot():
                connector = await self._connector(entry)
                started = time.perf_counter()
                try:
                    if tracing.enabled():
                        with tracing.upstream_span(upstream, method, params) as traced:
                            result = await connector.request(method, traced, hooks=hooks)
                    else:
                        result = await connector.request(method, params, hooks=hooks)
                finally:
                    entry.latency.observe(time.perf_counter() - started)
                if method in ("resources/subscribe", "resources/unsubscribe") and params is not None:
                    self._remember(upstream, method, str(params.get("uri", "")))
                return result
        except LimitExceeded as exc:
            raise UpstreamBusy(upstream, exc.reason) from None
        except BaseException as exc:
            error = exc
            raise
        finally:
            log_context.UPSTREAM.reset(noted)
            entry.outcome(error)

    async def _connector(self, upstream: Upstream) -> Connector:
        if upstream.spec.shared:
            return await self._directory.shared(upstream, self.key, self._headers.get(upstream.name))
        if self._closed:
            raise UpstreamUnavailable(upstream.name, "the client session is closed")
        held = self._held.get(upstream.name)
        if held is None or held.upstream is not upstream or not held.usable():
            if held is not None:
                held.stop()
            held = self._open(upstream)
            self._held[upstream.name] = held
        # Shielded: a caller that gives up must not abort an open that others may share.
        return await asyncio.shield(held.ready)

    def _open(self, upstream: Upstream) -> HeldSession:
        held = HeldSession(upstream)
        name = upstream.name
        on_message = None
        if self._on_message is not None:
            deliver = self._on_message

            def on_message(message: Message) -> None:
                deliver(name, message)

        on_request = None
        if self._on_request is not None:
            answer = self._on_request

            async def on_request(message: Message) -> Message:
                return await answer(name, message)

        connector = make_connector(
            with_headers(upstream.spec, self._headers.get(name)),
            upstream.clients,
            capabilities=self._capabilities,
            on_message=on_message,
            on_request=on_request,
            on_list_changed=lambda message: upstream.refresh.set(),  # the catalog is rebuilt from discovery
            persistent=False,
            tool_schema=upstream.tool_schema,
            key=self.key,
        )
        upstream.held.add(held)
        held.task = self._directory.start(held.hold(connector, self._restore))
        return held

    def _remember(self, upstream: str, method: str, uri: str) -> None:
        subscribed = self._subscriptions.setdefault(upstream, set())
        if method == "resources/subscribe":
            subscribed.add(uri)
        else:
            subscribed.discard(uri)

    async def _restore(self, connector: Connector) -> None:
        """Give a new upstream session (a first one, or one opened again) the client's level and subscriptions."""
        await self._apply_level(connector)
        for uri in sorted(self._subscriptions.get(connector.spec.name, ())):
            try:
                await connector.request("resources/subscribe", {"uri": uri})
            except UpstreamError as exc:
                logger.warning("upstream %s refused resources/subscribe again: %s", connector.spec.name, exc)

    async def _apply_level(self, connector: Connector) -> None:
        if connector.modern:
            connector.log_level = self.log_level  # the era asks per request: the envelope carries it
            return
        if self.log_level is not None and "logging" in connector.server_capabilities:
            try:
                await connector.request("logging/setLevel", {"level": self.log_level})
            except UpstreamError as exc:  # the session is still good for calls
                logger.warning("upstream %s refused logging/setLevel: %s", connector.spec.name, exc)

    def is_shared(self, upstream: str) -> bool:
        entry = self._directory.upstream(upstream)
        return entry is not None and entry.spec.shared

    def _open_connectors(self) -> dict[str, Connector]:
        return {name: held.ready.result() for name, held in self._held.items() if held.ready.done() and held.usable()}

    @property
    def open_upstreams(self) -> list[str]:
        return list(self._open_connectors())

    async def notify_all(self, method: str, params: Message | None = None) -> None:
        """Send a notification to every upstream session this client has open."""
        for name, connector in self._open_connectors().items():
            try:
                await connector.notify(method, params)
            except UpstreamError as exc:
                logger.warning("could not tell upstream %s of %s: %s", name, method, exc)

    async def set_log_level(self, level: str) -> None:
        """Apply a logging level to every upstream session, open now or later, that supports logging."""
        self.log_level = level
        for connector in self._open_connectors().values():
            await self._apply_level(connector)

    async def aclose(self) -> None:
        """Close every upstream session of this client, each in the task that opened it."""
        self._closed = True
        tasks = []
        for held in self._held.values():
            held.stop()
            if held.task is not None:
                tasks.append(held.task)
        self._held.clear()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=_CLOSE_DEADLINE)
            for task in pending:
                task.cancel()
