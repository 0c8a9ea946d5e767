"""One upstream's runtime record inside the pool: its spec, clients, caps, breaker and state.

The pool makes one per configured upstream and replaces it when the spec
changes; everything that reaches the upstream on a client's behalf goes
through :meth:`Upstream.admit` (is it up, is its breaker closed) and reports
back with :meth:`Upstream.outcome`.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from connectors.breaker import CircuitBreaker
from connectors.clients import UpstreamClients
from connectors.engine import Connector
from connectors.errors import (
    CircuitOpen,
    ManifoldError,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamTooLarge,
    UpstreamUnavailable,
)
from connectors.histogram import Histogram
from connectors.limits import Limiter, PoolLimits
from connectors.spec import UpstreamSpec
from connectors.status import Listing, UpstreamState, UpstreamStatus

__all__ = ["Stoppable", "Upstream"]


class Stoppable(Protocol):
    """An upstream session held open by a task of the pool until told to stop."""

    def stop(self) -> None: ...


class Upstream:
    """One upstream's runtime state inside the pool."""

    def __init__(self, spec: UpstreamSpec, clients: UpstreamClients, limits: PoolLimits) -> None:
        self.spec = spec
        self.clients = clients
        self.status = UpstreamStatus(name=spec.name, transport=spec.transport)
        self.listing: Listing | None = None
        """The last listing it sent; kept while it is down, so its names stay known."""
        self.limiter = Limiter(spec.max_concurrency, queue_size=limits.queue_size, wait=limits.queue_timeout)
        self.breaker = CircuitBreaker(spec.name, failures=spec.breaker_failures, cooldown=spec.breaker_cooldown)
        self.discovery: Connector | None = None
        self.refresh = asyncio.Event()  # list again (it said list_changed), or a down one retries now
        self.check = asyncio.Event()  # a call failed as if it were down: ping it now
        self.settled = asyncio.Event()  # the first connection attempt has finished, either way
        self.held: set[Stoppable] = set()  # every upstream session opened for clients
        self.latency = Histogram()
        """How long its requests for clients took, from the slot taken to the answer."""
        self.supervisor: asyncio.Task[None] | None = None
        self._schemas: dict[Any, Any] = {}
        self._schemas_of: Listing | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def tool_schema(self, name: str) -> Any:
        """The input schema of one of its tools (by its own name) in its last listing, or None."""
        listing = self.listing
        if listing is None:
            return None
        if self._schemas_of is not listing:
            self._schemas = {t.get("name"): t.get("inputSchema") for t in listing.tools if isinstance(t, dict)}
            self._schemas_of = listing
        return self._schemas.get(name)

    def admit(self) -> None:
        """Let a call go to this upstream, or refuse it at once.

        Raises:
            UpstreamUnavailable: it is down, still connecting, or being removed.
            CircuitOpen: its breaker is open.
        """
        status = self.status
        if status.state is not UpstreamState.UP:
            if status.state is UpstreamState.REMOVING:
                raise UpstreamUnavailable(self.name, "removed from the config")
            raise UpstreamUnavailable(self.name, f"{status.state.value}: {status.last_error or 'not connected yet'}")
        self.breaker.check()

    def outcome(self, error: BaseException | None) -> None:
        """Count a call's outcome against the breaker; a lost connection makes the pool look now."""
        if error is None:
            self.breaker.succeeded()
            return
        if isinstance(error, asyncio.CancelledError) or not isinstance(error, ManifoldError):
            self.breaker.release_trial()
            return
        if isinstance(error, CircuitOpen | UpstreamTooLarge) or not isinstance(
            error, UpstreamUnavailable | UpstreamTimeout | UpstreamProtocolError
        ):
            # An answer (a JSON-RPC error included) or a refusal of our own: the upstream is alive.
            if not isinstance(error, CircuitOpen):
                self.breaker.succeeded()
            return
        self.breaker.failed()
        if isinstance(error, UpstreamUnavailable):
            self.check.set()

    def stop_sessions(self) -> None:
        """Close every upstream session held for clients (each in the task that opened it)."""
        for held in list(self.held):
            held.stop()
        self.held.clear()
