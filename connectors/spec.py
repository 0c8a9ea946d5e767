"""What a connector needs to know about one upstream, free of the hub's config format."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

__all__ = [
    "CLIENT_INFO",
    "LATEST_VERSION",
    "MODERN_VERSIONS",
    "SUPPORTED_VERSIONS",
    "TASKS_EXTENSION",
    "Protocol",
    "SandboxSpec",
    "StdioSpec",
    "Transport",
    "UpstreamSpec",
]

Transport = Literal["streamable-http", "sse", "stdio"]
Protocol = Literal["auto", "session", "2026-07-28"]

# The protocol versions with initialize and sessions. Spelled out rather than imported from the SDK's
# types: importing them builds every protocol model, a fifth of the hub's start-up (tested equal).
SUPPORTED_VERSIONS: Final[tuple[str, ...]] = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
LATEST_VERSION: Final[str] = SUPPORTED_VERSIONS[-1]
# The stateless versions: no initialize, every request carries its envelope in ``_meta``.
MODERN_VERSIONS: Final[tuple[str, ...]] = ("2026-07-28",)
CLIENT_INFO: Final[dict[str, str]] = {"name": "manifold", "version": "0.1.0"}
TASKS_EXTENSION: Final = "io.modelcontextprotocol/tasks"
"""Tasks in the 2026-07-28 era: an extension (SEP-2663), declared under ``capabilities.extensions``."""


@dataclass(frozen=True)
class SandboxSpec:
    """How a local server is contained (see :mod:`connectors.sandbox`); the defaults are the tight ones."""

    network: bool = False
    memory_mb: int = 1024
    """Its data (heap and private writable mappings; what a program allocates), in MiB."""
    cpu_seconds: int = 3600
    open_files: int = 256
    processes: int = 64
    paths: tuple[str, ...] = ()
    """Host paths it may read besides /usr and its runtime (a package cache, a virtual environment)."""


@dataclass(frozen=True)
class StdioSpec:
    """A local MCP server: a program that speaks newline-delimited JSON-RPC on stdin and stdout."""

    command: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    sandbox: SandboxSpec | None = SandboxSpec()
    """None runs it unsandboxed (``"sandbox": false`` in the config)."""
    workspaces: str = "workspaces"
    """Where the writable workspace of each (upstream, tenant) is kept."""
    max_processes: int = 16
    idle_timeout: float = 600.0
    """How long a shared process may serve nobody before it is stopped (it starts again on use)."""


@dataclass(frozen=True)
class UpstreamSpec:
    """One upstream MCP server as the pool sees it.

    ``request_timeout`` is how long a request may go without an answer or a
    progress notification; progress moves the deadline, up to ``max_total``
    seconds in all. ``max_message_bytes`` bounds one message (or SSE event)
    from the upstream. ``max_streams`` bounds the long-lived streams held open
    to it (GET streams of its upstream sessions).
    """

    name: str
    url: str
    transport: Transport = "streamable-http"
    headers: Mapping[str, str] = field(default_factory=dict)
    connect_timeout: float = 10.0
    request_timeout: float = 60.0
    max_total: float = 3600.0
    max_concurrency: int = 64
    max_message_bytes: int = 128 * 1024 * 1024
    max_streams: int = 100
    shared: bool = False
    protocol: Protocol = "auto"
    breaker_failures: int = 5
    breaker_cooldown: float = 30.0
    stdio: StdioSpec | None = None
    """What to run, for ``transport == "stdio"`` (whose ``url`` is empty)."""
