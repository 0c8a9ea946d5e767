"""The upstream side of stateless (2026-07-28) clients: upstream sessions per principal, and contexts.

A stateless client has no session, but a session-era upstream needs one, and
what one principal's calls leave in an upstream session (its log level, its
subscriptions, whatever the server keeps per session) must not be seen by
another. So the hub keeps upstream sessions per principal and per shape of the
declared capabilities (a server lists tools by what its client can do; the
shape keeps only what the specification names, so it has few forms), bounded
in number and closed when idle; the least recently used idle set makes room,
and a set a call holds, parked or not, is never taken.

A principal's concurrent calls to a session-era Streamable HTTP upstream of
isolated sessions are spread over a few sets of one shape (its lanes): many
concurrent calls on one upstream session cost the hub and the upstream more
than the same calls on several. A call alone takes the first lane; another
lane opens only while every lane has a call in flight and less than half the
bound is held, so extra lanes hold at most half of it, and an idle one is
closed after a minute and is the first to make room. What lives in one
upstream session stays on the first lane: task-augmented calls (2025-11-25 task
ids belong to the session that made them) and listen streams (their
subscriptions). Calls to other upstreams do not spread: a local upstream's
session is a process, a legacy one's a stream, a shared one is one for all,
and a 2026-07-28 one has no session to share.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from operator import attrgetter
from types import TracebackType
from typing import Final, Self

from connectors.engine import CallHooks
from connectors.jsonrpc import Message
from connectors.upstream_sessions import UpstreamSessions
from hub.context import Caller, RequestContext, ServerFacts, held_by_none
from hub.dispatcher import LOG_LEVELS
from hub.errors import MethodNotFound, SessionLimit
from hub.modern_tasks import TaskBridges
from hub.outbound import for_client
from hub.session_services import UpstreamOpener
from hub.stateless_call import StatelessCall
from hub.tasks import TaskTable
from hub.tenants import Tenant
from hub.views import CatalogView

__all__ = ["Askers", "PrincipalSet", "PrincipalUpstreams", "StatelessContexts"]

logger = logging.getLogger(__name__)

_REAP_EVERY: Final = 0.25  # of the idle timeout
LANE_IDLE_TIMEOUT: Final = 60.0
"""Seconds a principal's extra lane may stay idle (its first one: ``hub.sessionIdleTimeout``)."""


class Askers:
    """The calls of one upstream-session set in flight, per upstream: who a question belongs to."""

    def __init__(self) -> None:
        self._calls: dict[str, set[StatelessCall]] = {}

    def add(self, upstream: str, call: StatelessCall) -> None:
        calls = self._calls.setdefault(upstream, set())
        if call in calls or call.task is None:
            return
        calls.add(call)
        if call.asking is None:
            call.asking = calls  # (it leaves the set as it ends)
        else:
            call.task.add_done_callback(lambda _: calls.discard(call))  # a second upstream of one call

    def only(self, upstream: str) -> StatelessCall | None:
        """The one call in flight to ``upstream``, or None when there are none or several."""
        calls = self._calls.get(upstream)
        return next(iter(calls)) if calls is not None and len(calls) == 1 else None


@dataclass
class PrincipalSet:
    """One caller's upstream sessions for one capability set, and the calls in flight on them."""

    upstreams: UpstreamSessions
    askers: Askers
    tasks: TaskTable = field(default_factory=lambda: TaskTable(capacity=256))
    """Public ids of the tasks the caller's calls started on these upstream sessions."""
    subscribed: dict[tuple[str, str], int] = field(default_factory=dict)
    """(upstream, original URI) -> how many of the caller's listen streams hold that subscription."""
    bridges: TaskBridges = field(init=False)
    """Those tasks as the 2026-07-28 tasks extension shows them."""

    def __post_init__(self) -> None:
        self.bridges = TaskBridges(self.tasks, self.upstreams)

    async def aclose(self) -> None:
        await self.bridges.aclose()
        await self.upstreams.aclose()


Key = tuple[str, str, str]
"""(tenant, principal, capability shape): the sets of one key are its lanes."""


@dataclass(eq=False)
class _Held:
    held: PrincipalSet
    caller: Caller
    key: Key
    users: int = 0
    """Requests using the set now (listen streams and parked calls too): while any do, it stays."""
    calls: int = 0
    """Those of them that may spread: the calls in flight a lane is chosen by."""
    last_used: float = field(default_factory=time.monotonic)


class _Lease:
    """One request's use of a set: while it lasts the set is not idle (and never evicted)."""

    __slots__ = ("_held", "_spread")

    def __init__(self, held: _Held, spread: bool = False) -> None:
        self._held = held
        self._spread = spread

    def __enter__(self) -> PrincipalSet:
        self._held.users += 1
        self._held.calls += self._spread
        return self._held.held

    def __exit__(self, *exc: object) -> None:
        held = self._held
        held.users -= 1
        held.calls -= self._spread
        held.last_used = time.monotonic()


class PrincipalUpstreams:
    """Upstream sessions of stateless callers: per (tenant, principal, capabilities), up to ``lanes`` sets."""

    def __init__(
        self,
        opener: UpstreamOpener,
        *,
        max_sets: int,
        idle_timeout: float,
        lanes: int = 1,
        on_message: Callable[[Caller, str, Message], None] | None = None,
    ) -> None:
        self._opener = opener
        self.max_sets = max_sets
        self.idle_timeout = idle_timeout
        self.lanes = lanes
        self._on_message = on_message
        self._held: OrderedDict[_Held, None] = OrderedDict()  # every set, least recently used first
        self._keys: dict[Key, list[_Held]] = {}  # the lanes of each key, the first one first
        self._closing: set[asyncio.Task[None]] = set()
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Self:
        await self._stack.enter_async_context(self._reaping())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()
        held, self._held, self._keys = list(self._held), OrderedDict(), {}
        await asyncio.gather(*(h.held.aclose() for h in held), return_exceptions=True)
        if self._closing:
            await asyncio.wait(self._closing, timeout=5.0)

    @contextlib.asynccontextmanager
    async def _reaping(self) -> AsyncIterator[None]:
        task = asyncio.get_running_loop().create_task(self._reap_idle(), name="stateless-upstreams-reaper")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def __len__(self) -> int:
        return len(self._held)

    def callers(self) -> list[tuple[str, str, int]]:
        """(tenant, principal, requests using its sets now) per tenant, principal and capability shape."""
        return [
            (tenant, principal, sum(h.users for h in lanes)) for (tenant, principal, _), lanes in self._keys.items()
        ]

    def tenants(self) -> dict[str, int]:
        """How many sets (lanes counted) each tenant's callers hold."""
        counts: dict[str, int] = {}
        for tenant, _, _ in (held.key for held in self._held):
            counts[tenant] = counts.get(tenant, 0) + 1
        return counts

    def use(self, caller: Caller, tenant: Tenant, capabilities: Message, *, spread: bool = False) -> _Lease:
        """The caller's upstream sessions for one request (opened on first use), as a context manager:
        the first lane, or with ``spread`` the one with the fewest calls in flight (a new one while
        each has some).

        Raises: SessionLimit: ``max_sets`` sets are in use by requests right now.
        """
        key = (caller.tenant, caller.principal, shape_key(capabilities))
        lanes = self._keys.get(key)
        if lanes is None:
            self._make_room()
            held = self._add(key, caller, tenant, capabilities)
        else:
            held = lanes[0]
            if spread and held.calls:
                held = min(lanes[: self.lanes], key=_CALLS)  # (lanes past a lowered number only wind down)
                if held.calls and len(lanes) < self.lanes and len(self._held) < self.max_sets // 2:
                    held = self._add(key, caller, tenant, capabilities)
            self._held.move_to_end(held)
        return _Lease(held, spread)

    def use_task(self, caller: Caller, tenant: Tenant, capabilities: Message, public: str) -> _Lease:
        """The caller's upstream sessions that started task ``public`` (a request may declare other
        capabilities than the call that started it), as a context manager; :meth:`use` when none did."""
        for (tenant_name, principal, _), lanes in self._keys.items():
            if (tenant_name, principal) == (caller.tenant, caller.principal):
                for held in lanes:
                    if held.held.bridges.knows(public):
                        self._held.move_to_end(held)  # (a task asked after is in use)
                        return _Lease(held)
        return self.use(caller, tenant, capabilities)

    def _add(self, key: Key, caller: Caller, tenant: Tenant, capabilities: Message) -> _Held:
        held = _Held(self._open(caller, tenant, relayed_shape(capabilities)), caller, key)
        self._held[held] = None
        self._keys.setdefault(key, []).append(held)
        return held

    def _open(self, caller: Caller, tenant: Tenant, capabilities: Message) -> PrincipalSet:
        on_message = self._on_message
        askers = Askers()

        def message(upstream: str, msg: Message) -> None:
            if on_message is not None:
                on_message(caller, upstream, msg)

        async def request(upstream: str, msg: Message) -> Message:
            # A question on the upstream session's own stream (legacy HTTP+SSE has no other) belongs to
            # the one call of this caller in flight to that upstream; with none or several, to nobody.
            call = askers.only(upstream)
            if call is None:
                raise MethodNotFound(f"{msg.get('method')}: a 2026-07-28 client can be asked only within its call")
            return await call.ask(msg)

        upstreams = self._opener(
            capabilities=capabilities, on_message=message, on_request=request, key=tenant.name, headers=tenant.headers
        )
        return PrincipalSet(upstreams, askers)

    def _make_room(self) -> None:
        # Idle extra lanes first, then the least recently used idle sets, until there is room (the
        # bound may have been lowered since they were opened).
        while len(self._held) >= self.max_sets:
            idle = [held for held in self._held if held.users == 0]  # least recently used first
            if not idle:
                raise SessionLimit(
                    f"the hub holds upstream sessions for {self.max_sets} stateless callers; try again later"
                )
            extra = [held for held in idle if self._keys[held.key][0] is not held]
            self._drop((extra or idle)[0])

    def _drop(self, held: _Held) -> None:
        del self._held[held]
        lanes = self._keys[held.key]
        lanes.remove(held)
        if not lanes:
            del self._keys[held.key]
        task = asyncio.get_running_loop().create_task(held.held.aclose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _reap_idle(self) -> None:
        while True:
            extra_timeout = min(self.idle_timeout, LANE_IDLE_TIMEOUT)
            await asyncio.sleep(max(0.05, extra_timeout * _REAP_EVERY))
            now = time.monotonic()
            for held in list(self._held):
                extra = self._keys[held.key][0] is not held
                limit = now - (extra_timeout if extra else self.idle_timeout)
                if held.users == 0 and held.last_used < limit and held.held.bridges.keep_until < now:
                    self._drop(held)


_CALLS: Final = attrgetter("calls")  # (a C key: this runs for most calls)


_KNOWN: Final[dict[str, tuple[str, ...]]] = {
    "roots": ("listChanged",),
    "sampling": ("context", "tools"),
    "elicitation": ("form", "url"),
}


def _present(capabilities: Message) -> list[tuple[str, list[str]]]:
    out: list[tuple[str, list[str]]] = []
    for name, known in _KNOWN.items():
        declared = capabilities.get(name)
        if isinstance(declared, dict):
            keys = [key for key in known if (declared.get(key) is True if key == "listChanged" else key in declared)]
            out.append((name, keys))
    return out


def relayed_shape(capabilities: Message) -> Message:
    """The capabilities the hub relays, reduced to what the specification names (values dropped).

    Upstream sessions are kept per shape, so its number of forms is small and fixed: a caller
    cannot make a new set of upstream sessions per request by varying what it declares.
    """
    return {name: {key: True if key == "listChanged" else {} for key in keys} for name, keys in _present(capabilities)}


def shape_key(capabilities: Message) -> str:
    """The :func:`relayed_shape` of ``capabilities`` as a key (the same shapes, the same key)."""
    if not capabilities:
        return ""
    return ";".join(f"{name}:{','.join(keys)}" for name, keys in _present(capabilities))


_LEVEL: Final = {name: rank for rank, name in enumerate(LOG_LEVELS)}


def level_rank(level: object) -> int | None:
    return _LEVEL.get(level) if isinstance(level, str) else None


class StatelessContexts:
    """Builds the :class:`RequestContext` of one stateless request."""

    def __init__(self, server: ServerFacts) -> None:
        self.server = server

    def context(
        self,
        caller: Caller,
        version: str,
        capabilities: Message,
        view: CatalogView,
        principal: PrincipalSet,
        call: StatelessCall | None,
        log_level: str | None,
    ) -> RequestContext:
        catalog = view.catalog

        def hooks(upstream: str, params: Message) -> CallHooks:
            if call is None:
                return CallHooks()
            principal.askers.add(upstream, call)
            call.upstream = upstream

            def message(msg: Message) -> None:
                if msg.get("method") == "notifications/message":
                    params = msg.get("params")
                    rank = level_rank(params.get("level") if isinstance(params, dict) else None)
                    call.log(for_client(catalog, upstream, msg), rank if rank is not None else 0)

            return CallHooks(progress=call.progress, request=call.ask, message=message)

        return RequestContext(
            caller=caller,
            era="stateless",
            protocol_version=version,
            client_capabilities=capabilities,
            view=view,
            upstreams=principal.upstreams,
            emit=_emit_nothing,
            hooks=hooks,
            subscriptions=set(),
            still_held=held_by_none,  # (a listen stream unsubscribes by itself)
            tasks=principal.tasks,
            server=self.server,
            log_level=log_level,
        )


def _emit_nothing(message: Message) -> None:
    return None  # a stateless request has no stream of its own for anything but its reply
