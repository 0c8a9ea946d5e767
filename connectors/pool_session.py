"""A client session's upstream sessions: opened on first use, closed together.

In isolated mode each client session gets its own upstream session per
upstream; in shared mode it borrows the pool's discovery session. Every
upstream session lives in a task of the pool that enters and exits it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from connectors.base import CallHooks, Connector
from connectors.errors import UpstreamBusy, UpstreamError, UpstreamUnavailable
from connectors.jsonrpc import Message
from connectors.limits import LimitExceeded
from connectors.pool import ConnectorPool, Upstream, UpstreamMessageHandler, UpstreamRequestHandler, UpstreamState

__all__ = ["PoolSession"]

logger = logging.getLogger(__name__)

_CLOSE_DEADLINE = 5.0


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

    def __init__(
        self,
        pool: ConnectorPool,
        capabilities: Message,
        on_message: UpstreamMessageHandler | None,
        on_request: UpstreamRequestHandler | None,
    ) -> None:
        self._pool = pool
        self._capabilities = capabilities
        self._on_message = on_message
        self._on_request = on_request
        self._held: dict[str, _Held] = {}
        self._closed = False
        self.log_level: str | None = None

    async def request(
        self, upstream: str, method: str, params: Message | None = None, *, hooks: CallHooks | None = None
    ) -> Message:
        """Send a request to one upstream on this session's behalf.

        Raises:
            UpstreamUnavailable: the upstream is down, unknown, or would not open a session.
            UpstreamBusy: its queue is full or the wait for a slot passed its deadline.
            UpstreamError: anything the connector raises for this request.
        """
        entry = self._pool.upstream(upstream)
        if entry is None:
            raise UpstreamUnavailable(upstream, "no such upstream")
        status = entry.status
        if status.state is not UpstreamState.UP:
            raise UpstreamUnavailable(upstream, f"{status.state.value}: {status.last_error or 'not connected yet'}")
        try:
            async with entry.limiter.slot(), self._pool.global_limiter.slot():
                connector = await self._connector(entry)
                return await connector.request(method, params, hooks=hooks)
        except LimitExceeded as exc:
            raise UpstreamBusy(upstream, exc.reason) from None

    async def _connector(self, upstream: Upstream) -> Connector:
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

    def _open(self, upstream: Upstream) -> _Held:
        held = _Held()
        name = upstream.spec.name
        pool = self._pool

        def on_message(message: Message) -> None:
            if message["method"].endswith("/list_changed"):
                pool.refresh(name)  # the catalog is rebuilt from the discovery session
            elif self._on_message is not None:
                self._on_message(name, message)

        on_request = None
        if self._on_request is not None:
            answer = self._on_request

            async def on_request(message: Message) -> Message:
                return await answer(name, message)

        connector = pool.make_connector(upstream, self._capabilities, on_message, on_request)

        async def hold() -> None:
            try:
                async with connector:
                    if self.log_level is not None and "logging" in connector.server_capabilities:
                        try:
                            await connector.request("logging/setLevel", {"level": self.log_level})
                        except UpstreamError as exc:  # the session is still good for calls
                            logger.warning("upstream %s refused logging/setLevel: %s", name, exc)
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

        held.task = self._pool.start(hold())
        return held

    def is_shared(self, upstream: str) -> bool:
        entry = self._pool.upstream(upstream)
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
        for name, connector in self._open_connectors().items():
            if "logging" in connector.server_capabilities:
                try:
                    await connector.request("logging/setLevel", {"level": level})
                except UpstreamError as exc:
                    logger.warning("upstream %s refused logging/setLevel: %s", name, exc)

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
