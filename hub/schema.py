"""The config file's schema: one model per section, validated in full by pydantic.

Keys are camelCase in the file (``maxConcurrency``), unknown keys are errors,
and a loaded config is immutable. Loading, ``${VAR}`` expansion and the
checks across sections live in :mod:`hub.config`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel
from pydantic_settings import BaseSettings, SettingsConfigDict

from connectors.spec import SandboxSpec, StdioSpec, UpstreamSpec
from hub.access import AuditConfig, AuthConfig, TenantConfig

__all__ = [
    "Breaker",
    "Config",
    "Events",
    "HubSettings",
    "MetricsSettings",
    "ProcessSettings",
    "Reconnect",
    "ReloadSettings",
    "ReplicaSettings",
    "SandboxConfig",
    "Timeouts",
    "UpstreamConfig",
]

_NAME = r"^[A-Za-z0-9_.-]+$"


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class Timeouts(_Model):
    connect: Annotated[float, Field(gt=0, le=600)] = 10.0
    request: Annotated[float, Field(gt=0, le=86400)] = 60.0
    max_total: Annotated[float, Field(gt=0, le=604800)] = 3600.0

    @model_validator(mode="after")
    def _total_covers_one_request(self) -> Timeouts:
        if self.max_total < self.request:
            raise ValueError("maxTotal must be at least request")
        return self


class Reconnect(_Model):
    initial_delay: Annotated[float, Field(gt=0, le=3600)] = 0.5
    max_delay: Annotated[float, Field(gt=0, le=3600)] = 30.0


class SandboxConfig(_Model):
    """``mcpServers.<name>.sandbox`` of a local server: each field loosens the default sandbox."""

    network: bool = False
    memory_mb: Annotated[int, Field(ge=16, le=1_048_576)] = 1024
    cpu_seconds: Annotated[int, Field(ge=1)] = 3600
    open_files: Annotated[int, Field(ge=16, le=1_048_576)] = 256
    processes: Annotated[int, Field(ge=1, le=100_000)] = 64
    paths: list[str] = Field(default_factory=list)
    """Host paths it may read (absolute), besides /usr and its command's runtime."""

    @field_validator("paths")
    @classmethod
    def _absolute(cls, value: list[str]) -> list[str]:
        for path in value:
            if not path.startswith("/"):
                raise ValueError(f"{path!r} is not an absolute path")
        return value


class UpstreamConfig(_Model):
    """One entry of ``mcpServers``: a remote server (``url``) or a local one (``command``)."""

    url: str | None = None
    type: Literal["streamable-http", "http", "sse", "stdio"] | None = None
    command: Annotated[str, Field(min_length=1)] | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    sandbox: SandboxConfig | None = SandboxConfig()
    """A local server runs in a sandbox (``true`` or an object loosening it); ``false`` (None here) runs it
    as the hub's user, uncontained."""
    max_processes: Annotated[int, Field(ge=1, le=10_000)] = 16
    idle_timeout: Annotated[float, Field(gt=0, le=604_800)] = 600.0
    """How long a tenant's process of a local server (``shared``) may serve nobody before it is stopped."""
    headers: dict[str, str] = Field(default_factory=dict)
    prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]*$", max_length=64)] | None = None
    timeouts: Timeouts = Timeouts()
    max_concurrency: Annotated[int, Field(ge=1, le=100_000)] = 64
    max_result_bytes: Annotated[int, Field(ge=1024)] | None = None
    max_streams: Annotated[int, Field(ge=1, le=100_000)] = 100
    session_mode: Literal["isolated", "shared"] | None = None
    """Upstream sessions per client (``isolated``, the default of remote servers) or per tenant
    (``shared``, the default of local ones: one process per tenant)."""
    protocol: Literal["auto", "session", "2026-07-28"] = "auto"
    """The era spoken to it: ``auto`` tries initialize and, when the upstream refuses it as a
    2026-07-28-only server does, speaks 2026-07-28."""
    disabled: bool = False
    tags: list[str] = Field(default_factory=list)

    @field_validator("headers")
    @classmethod
    def _one_line_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if any(c in name or c in text for c in "\r\n\0"):
                # Named, never shown: the value may be a secret.
                raise ValueError(f"header {name!r} has a line break or NUL in its name or value")
        return value

    @field_validator("sandbox", mode="before")
    @classmethod
    def _sandbox_switch(cls, value: object) -> object:
        if value is None:
            raise ValueError("give true, false or an object")
        return {} if value is True else None if value is False else value

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _remote_or_local(self) -> UpstreamConfig:
        if self.local:
            if self.command is None:
                raise ValueError("a stdio server needs a command")
            if self.url is not None:
                raise ValueError("give a url or a command, not both")
            if self.headers:
                raise ValueError("headers are for remote servers; a local one gets env")
        elif self.url is None:
            raise ValueError("needs a url (a remote server) or a command (a local one)")
        return self

    @property
    def local(self) -> bool:
        return self.type == "stdio" or (self.type is None and self.command is not None)


class Events(_Model):
    """Replay of SSE streams for clients that reconnect with ``Last-Event-ID``."""

    retry_ms: Annotated[int, Field(ge=0, le=600_000)] = 1000
    per_stream: Annotated[int, Field(ge=1, le=1_000_000)] = 1000
    per_stream_bytes: Annotated[int, Field(ge=1024)] = 16 * 1024 * 1024
    max_age: Annotated[float, Field(gt=0)] = 300.0
    max_logged: Annotated[int, Field(ge=0)] = 100_000


class Breaker(_Model):
    """The circuit breaker each upstream has."""

    failures: Annotated[int, Field(ge=1, le=10_000)] = 5
    cooldown: Annotated[float, Field(gt=0, le=3600)] = 30.0


class ReloadSettings(_Model):
    watch: bool = True
    """Reload when the config file changes (besides SIGHUP and ``manifold reload``)."""
    interval: Annotated[float, Field(gt=0, le=3600)] = 1.0
    debounce: Annotated[float, Field(ge=0, le=60)] = 0.5


class MetricsSettings(_Model):
    enabled: bool = True
    """Count requests for ``GET /metrics`` (off: the endpoint answers 404)."""
    per_tool: bool = False
    """Count tool calls per tool too (one label value per tool in the catalog)."""


class RedisSettings(_Model):
    """The Redis store (``hub.storage`` a ``redis://`` or ``rediss://`` URL)."""

    timeout: Annotated[float, Field(gt=0, le=60)] = 1.0
    """The deadline of one Redis call, in seconds."""
    key_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] = "manifold"
    """Keys in Redis begin with it (hubs of one deployment share it)."""


class ReplicaSettings(_Model):
    """One replica among several on one Redis (``hub.storage`` a Redis URL)."""

    advertise_url: str | None = None
    """Where the other replicas reach this one, directly (not through the load balancer); by
    default ``http://<host>:<port>`` (the machine's name when ``host`` is a wildcard)."""
    lease: Annotated[float, Field(ge=0.3, le=600)] = 10.0
    """Seconds a replica's heartbeat and its session ownership last unless renewed (every third of it)."""
    connect_timeout: Annotated[float, Field(gt=0, le=60)] = 1.0
    """How long a request forwarded to the owner of its session may take to connect."""
    forward_timeout: Annotated[float, Field(gt=0, le=86_400)] = 3600.0
    """How long a forwarded request may wait for the owner's next bytes."""

    @field_validator("advertise_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+$", value.rstrip("/")):
            raise ValueError("an http:// or https:// URL with no path: http://10.0.0.5:8765")
        return None if value is None else value.rstrip("/")


class HubSettings(_Model):
    """The ``hub`` section."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8765
    separator: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,8}$")] = "__"
    max_name_length: Annotated[int, Field(ge=16, le=128)] = 64
    session_idle_timeout: Annotated[float, Field(gt=0)] = 1800.0
    unused_session_timeout: Annotated[float, Field(gt=0)] = 60.0
    max_sessions: Annotated[int, Field(ge=1)] = 1000
    storage: str = "manifold.db"
    page_size: Annotated[int, Field(ge=1, le=10_000)] = 100
    max_in_flight: Annotated[int, Field(ge=1)] = 1024
    queue_size: Annotated[int, Field(ge=0)] = 512
    queue_timeout: Annotated[float, Field(gt=0)] = 10.0
    health_interval: Annotated[float, Field(gt=0)] = 15.0
    reconnect: Reconnect = Reconnect()
    breaker: Breaker = Breaker()
    startup_grace: Annotated[float, Field(ge=0, le=600)] = 2.0
    drain_timeout: Annotated[float, Field(ge=0, le=3600)] = 30.0
    max_body_bytes: Annotated[int, Field(ge=1024)] = 4 * 1024 * 1024
    max_result_bytes: Annotated[int, Field(ge=1024)] = 128 * 1024 * 1024
    max_json_depth: Annotated[int, Field(ge=8, le=200)] = 64
    max_header_bytes: Annotated[int, Field(ge=1024, le=16 * 1024 * 1024)] = 64 * 1024
    max_headers: Annotated[int, Field(ge=8, le=10_000)] = 100
    request_read_timeout: Annotated[float, Field(gt=0, le=600)] = 10.0
    keep_alive_timeout: Annotated[float, Field(gt=0, le=3600)] = 65.0
    """How long an idle client connection stays open after a reply: longer than clients keep theirs
    (httpx 5 s, load balancers often 60 s), so that the client closes it first and never sends a
    request on a connection the hub is closing."""
    client_request_timeout: Annotated[float, Field(gt=0)] = 300.0
    input_timeout: Annotated[float, Field(gt=0, le=3600)] = 300.0
    """How long a stateless client's call waits for its retry with the input it was asked for."""
    max_waiting_calls: Annotated[int, Field(ge=1)] = 1024
    """Stateless calls that may wait for their client's input at once (a principal: a sixteenth)."""
    stateless_lanes: Annotated[int, Field(ge=1, le=16)] = 4
    """Upstream sessions a stateless principal's concurrent calls are spread over, per capability shape."""
    max_processes: Annotated[int, Field(ge=1, le=100_000)] = 64
    """Local server processes the hub may run at once, over every upstream."""
    workspaces: str = "workspaces"
    """Where the writable workspace of each local server and tenant is kept (kept across restarts)."""
    list_ttl: Annotated[float, Field(ge=0, le=86_400)] = 60.0
    """``ttlMs`` of lists (seconds) for stateless clients, when every upstream behind them announces changes."""
    events: Events = Events()
    metrics: MetricsSettings = MetricsSettings()
    reload: ReloadSettings = ReloadSettings()
    redis: RedisSettings = RedisSettings()
    replica: ReplicaSettings = ReplicaSettings()
    allowed_origins: list[str] | None = None
    allowed_hosts: list[str] | None = None
    public_url: str | None = None
    """Where clients reach the hub (the OAuth resource identifier); defaults to its listen address."""
    allow_anonymous: bool = False
    """Serve without credentials on a non-loopback address (on purpose)."""

    @field_validator("storage")
    @classmethod
    def _storage(cls, value: str) -> str:
        if value.startswith(("redis://", "rediss://")):
            parts = urlsplit(value)
            if not parts.hostname:
                raise ValueError("a Redis URL names its host: redis://host:6379/0")
            try:
                parts.port  # noqa: B018 (raises on a bad port)
            except ValueError:
                raise ValueError("the Redis URL's port is not a number") from None
            if parts.path not in ("", "/") and not parts.path.lstrip("/").isdigit():
                raise ValueError("the Redis URL's path is a database number: redis://host:6379/0")
        elif "://" in value:
            raise ValueError("a SQLite file path, :memory:, or a redis:// or rediss:// URL")
        return value

    @property
    def replicated(self) -> bool:
        """Whether the store is Redis (shared by every hub process that names it)."""
        return self.storage.startswith(("redis://", "rediss://"))

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return None if value is None else value.rstrip("/")


class Config(_Model):
    """A whole, valid config file."""

    hub: HubSettings = HubSettings()
    mcp_servers: dict[Annotated[str, Field(pattern=_NAME)], UpstreamConfig] = Field(default_factory=dict)
    auth: AuthConfig | None = None
    tenants: dict[Annotated[str, Field(pattern=_NAME)], TenantConfig] = Field(default_factory=dict)
    audit: AuditConfig = AuditConfig()

    @property
    def public_url(self) -> str:
        if self.hub.public_url is not None:
            return self.hub.public_url
        host = self.hub.host if ":" not in self.hub.host else f"[{self.hub.host}]"
        return f"http://{host}:{self.hub.port}"

    @property
    def auth_enabled(self) -> bool:
        return self.auth is not None and (bool(self.auth.api_keys) or self.auth.jwt is not None)

    def prefix_of(self, name: str) -> str:
        prefix = self.mcp_servers[name].prefix
        return name if prefix is None else prefix

    def enabled(self) -> list[str]:
        """Names of the upstreams to serve, in file order."""
        return [name for name, server in self.mcp_servers.items() if not server.disabled]

    def _stdio(self, server: UpstreamConfig) -> StdioSpec:
        assert server.command is not None
        sandbox = server.sandbox
        return StdioSpec(
            command=server.command,
            args=tuple(server.args),
            env=dict(server.env),
            cwd=server.cwd,
            sandbox=None
            if sandbox is None
            else SandboxSpec(
                network=sandbox.network,
                memory_mb=sandbox.memory_mb,
                cpu_seconds=sandbox.cpu_seconds,
                open_files=sandbox.open_files,
                processes=sandbox.processes,
                paths=tuple(sandbox.paths),
            ),
            workspaces=self.hub.workspaces,
            max_processes=server.max_processes,
            idle_timeout=server.idle_timeout,
        )

    def upstream_specs(self) -> list[UpstreamSpec]:
        specs = []
        for name in self.enabled():
            server = self.mcp_servers[name]
            local = server.local
            specs.append(
                UpstreamSpec(
                    name=name,
                    url=server.url or "",
                    transport="stdio" if local else "sse" if server.type == "sse" else "streamable-http",
                    headers=dict(server.headers),
                    connect_timeout=server.timeouts.connect,
                    request_timeout=server.timeouts.request,
                    max_total=server.timeouts.max_total,
                    max_concurrency=server.max_concurrency,
                    max_message_bytes=server.max_result_bytes or self.hub.max_result_bytes,
                    max_streams=server.max_streams,
                    shared=(server.session_mode or ("shared" if local else "isolated")) == "shared",
                    protocol=server.protocol,
                    breaker_failures=self.hub.breaker.failures,
                    breaker_cooldown=self.hub.breaker.cooldown,
                    stdio=self._stdio(server) if local else None,
                )
            )
        return specs


class ProcessSettings(BaseSettings):
    """Settings of the process, from ``MANIFOLD_*`` variables or a ``.env`` file."""

    model_config = SettingsConfigDict(env_prefix="MANIFOLD_", env_file=".env", extra="ignore")

    config: Path = Path("manifold.json")
    host: str | None = None
    port: int | None = None
    url: str = "http://127.0.0.1:8765"
    token: str | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    redis_password: str | None = None
    """The Redis store's password, when its URL has none."""
    gc_threshold: Annotated[int, Field(ge=100, le=10_000_000)] = 10_000
    """The cyclic garbage collector's first threshold (Python's own is 700): the young objects a
    burst of calls keeps alive for a moment would otherwise start a collection every 20 calls or so."""
