"""What the pool reports about an upstream: its state, what it offers, its breaker."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

from connectors.jsonrpc import Message

__all__ = ["BreakerState", "Listing", "UpstreamState", "UpstreamStatus"]


class UpstreamState(enum.Enum):
    CONNECTING = "connecting"
    UP = "up"
    DOWN = "down"
    REMOVING = "removing"


class BreakerState(enum.Enum):
    CLOSED = "closed"  # calls go through
    OPEN = "open"  # calls fail at once until the retry time
    HALF_OPEN = "half-open"  # one trial call decides


@dataclass(frozen=True)
class Listing:
    """What one upstream offers, as it sent it."""

    tools: tuple[Message, ...] = ()
    prompts: tuple[Message, ...] = ()
    resources: tuple[Message, ...] = ()
    resource_templates: tuple[Message, ...] = ()
    ttl_ms: int | None = None
    """How long a 2026-07-28 upstream said its lists stay fresh (the least of them); None: it did not say."""
    task_support: str = "forbidden"
    """How a tool that says nothing of tasks may run as one: "optional" on a 2026-07-28 upstream that
    offers the tasks extension (it decides per call whether a call becomes a task)."""


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
    protocol: str = ""
    """The protocol version spoken to it (its era: 2026-07-28 is stateless)."""
    listing: Listing | None = None
    since: float = field(default_factory=time.time)
    reconnects: int = 0
