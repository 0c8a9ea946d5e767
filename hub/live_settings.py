"""The ``hub`` section as the running parts take it: what a reload changes at once, and what only
a start reads.

Most of the section is applied when the hub starts: sizes of pools, queues and buffers, timers
each session arms, names built into the catalog. A reload keeps those at their running values and
says so (:data:`START_ONLY`); the bounds below are read on each use, so a reload sets them at once
(:func:`apply_bounds`). Everything the hub reads from the config each time (body sizes, JSON depth,
``listTtl``, ``publicUrl``, ``drainTimeout``, ``events.retryMs``) needs neither.
"""

from __future__ import annotations

from typing import Final

from connectors.limits import PoolLimits
from connectors.processes import Processes
from hub.catalog import Catalog
from hub.listen import Listeners
from hub.schema import HubSettings
from hub.sessions import SessionManager
from hub.stateless import PrincipalUpstreams
from hub.stateless_calls import StatelessCalls

__all__ = ["START_ONLY", "apply_bounds", "parked_per_principal", "pool_limits"]

START_ONLY: Final = (
    "separator",
    "max_name_length",
    "session_idle_timeout",
    "unused_session_timeout",
    "startup_grace",
    "max_in_flight",
    "queue_size",
    "queue_timeout",
    "health_interval",
    "reconnect",
    "request_read_timeout",
    "client_request_timeout",
    "allowed_origins",
    "allowed_hosts",
    "events.per_stream",
    "events.per_stream_bytes",
    "events.max_age",
    "events.max_logged",
    "metrics.enabled",
    "reload.watch",
)
"""Settings of ``hub`` (dotted: inside a nested one) read once when the hub starts."""


def pool_limits(settings: HubSettings) -> PoolLimits:
    return PoolLimits(
        max_in_flight=settings.max_in_flight,
        queue_size=settings.queue_size,
        queue_timeout=settings.queue_timeout,
        health_interval=settings.health_interval,
        backoff_initial=settings.reconnect.initial_delay,
        backoff_max=settings.reconnect.max_delay,
        max_processes=settings.max_processes,
    )


def parked_per_principal(settings: HubSettings) -> int:
    """Stateless calls one principal may have waiting for its input: a sixteenth of the hub's."""
    return max(1, settings.max_waiting_calls // 16)


def apply_bounds(
    settings: HubSettings,
    *,
    catalog: Catalog,
    sessions: SessionManager,
    listeners: Listeners,
    stateless: PrincipalUpstreams,
    calls: StatelessCalls,
    processes: Processes,
) -> None:
    """Set the bounds that are read on each use; what they already hold is kept (a lowered bound
    refuses new sessions, streams, calls or processes until enough of them end)."""
    catalog.page_size = settings.page_size
    sessions.max_sessions = listeners.max_total = stateless.max_sets = settings.max_sessions
    stateless.lanes = settings.stateless_lanes
    calls.input_timeout = settings.input_timeout
    calls.max_parked = settings.max_waiting_calls
    calls.max_parked_per_principal = parked_per_principal(settings)
    processes.max_total = settings.max_processes
