"""The config file admins edit, and the process settings around it.

The file uses the ``mcpServers`` shape MCP clients already know, plus a
``hub`` section. It is validated in full before anything starts: every
problem is reported with its JSON path, and a file with any problem is
refused whole. ``${VAR}`` and ``${VAR:-default}`` in upstream urls and
headers are expanded from the environment. A loaded config is immutable.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel
from pydantic_settings import BaseSettings, SettingsConfigDict

from connectors.spec import UpstreamSpec
from hub.errors import ConfigError

__all__ = ["Config", "HubSettings", "ProcessSettings", "Timeouts", "UpstreamConfig", "load_config", "parse_config"]

_NAME = r"^[A-Za-z0-9_.-]+$"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


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


class UpstreamConfig(_Model):
    """One entry of ``mcpServers``."""

    url: str
    type: Literal["streamable-http", "http", "sse"] = "streamable-http"
    headers: dict[str, str] = Field(default_factory=dict)
    prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]*$", max_length=64)] | None = None
    timeouts: Timeouts = Timeouts()
    max_concurrency: Annotated[int, Field(ge=1, le=100_000)] = 64
    max_result_bytes: Annotated[int, Field(ge=1024)] | None = None
    max_streams: Annotated[int, Field(ge=1, le=100_000)] = 100
    session_mode: Literal["isolated", "shared"] = "isolated"
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

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value


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
    client_request_timeout: Annotated[float, Field(gt=0)] = 300.0
    events: Events = Events()
    allowed_origins: list[str] | None = None
    allowed_hosts: list[str] | None = None


class Config(_Model):
    """A whole, valid config file."""

    hub: HubSettings = HubSettings()
    mcp_servers: dict[Annotated[str, Field(pattern=_NAME)], UpstreamConfig] = Field(default_factory=dict)

    def prefix_of(self, name: str) -> str:
        prefix = self.mcp_servers[name].prefix
        return name if prefix is None else prefix

    def enabled(self) -> list[str]:
        """Names of the upstreams to serve, in file order."""
        return [name for name, server in self.mcp_servers.items() if not server.disabled]

    def upstream_specs(self) -> list[UpstreamSpec]:
        specs = []
        for name in self.enabled():
            server = self.mcp_servers[name]
            specs.append(
                UpstreamSpec(
                    name=name,
                    url=server.url,
                    transport="sse" if server.type == "sse" else "streamable-http",
                    headers=dict(server.headers),
                    connect_timeout=server.timeouts.connect,
                    request_timeout=server.timeouts.request,
                    max_total=server.timeouts.max_total,
                    max_concurrency=server.max_concurrency,
                    max_message_bytes=server.max_result_bytes or self.hub.max_result_bytes,
                    max_streams=server.max_streams,
                    shared=server.session_mode == "shared",
                    breaker_failures=self.hub.breaker.failures,
                    breaker_cooldown=self.hub.breaker.cooldown,
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
    log_level: Literal["debug", "info", "warning", "error"] = "info"


# -- loading ---------------------------------------------------------------------------------------


def _path(loc: Iterable[Any]) -> str:
    out = "$"
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(part)):
            out += f".{part}"
        else:
            out += f"[{str(part)!r}]"
    return out


def _expand(value: str, path: str, env: dict[str, str], problems: list[str]) -> str:
    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        problems.append(f"{path}: environment variable {name} is not set (use ${{{name}:-default}} for a default)")
        return match.group(0)

    return _ENV_REF.sub(substitute, value)


def _expand_env(raw: Any, env: dict[str, str], problems: list[str]) -> set[str]:
    """Expand ``${VAR}`` in upstream urls and headers in place; return the paths that failed."""
    failed: set[str] = set()
    servers = raw.get("mcpServers") if isinstance(raw, dict) else None
    if not isinstance(servers, dict):
        return failed
    for key, server in servers.items():
        if not isinstance(server, dict):
            continue
        targets: list[tuple[dict[str, Any], str, str]] = [(server, "url", _path(["mcpServers", key, "url"]))]
        headers = server.get("headers")
        if isinstance(headers, dict):
            targets += [(headers, h, _path(["mcpServers", key, "headers", h])) for h in headers]
        for container, field, path in targets:
            value = container.get(field)
            if isinstance(value, str):
                before = len(problems)
                container[field] = _expand(value, path, env, problems)
                if len(problems) > before:
                    failed.add(path)
    return failed


def _message(error: Any) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def parse_config(raw: Any, env: dict[str, str] | None = None) -> Config:
    """Validate a decoded config document.

    Raises:
        ConfigError: with every problem found, each naming its JSON path.
    """
    if not isinstance(raw, dict):
        raise ConfigError(["$: the config must be a JSON object"])
    problems: list[str] = []
    raw = copy.deepcopy(raw)  # expansion writes into the document; the caller's stays as it was
    failed = _expand_env(raw, dict(os.environ) if env is None else env, problems)
    config: Config | None = None
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        for error in exc.errors():
            loc = list(error["loc"])
            if loc and loc[-1] == "[key]":  # a bad mapping key: name the key itself
                loc = loc[:-1]
            path = _path(loc)
            if path not in failed:
                problems.append(f"{path}: {_message(error)}")
    if config is not None:
        problems += _prefix_clashes(config)
    if problems:
        raise ConfigError(problems)
    assert config is not None
    return config


def _prefix_clashes(config: Config) -> list[str]:
    problems = []
    owners: dict[str, str] = {}
    for name in config.enabled():
        prefix = config.prefix_of(name)
        if not prefix:
            continue
        if prefix in owners:
            path = _path(["mcpServers", name, "prefix"])
            problems.append(f"{path}: prefix {prefix!r} is already used by mcpServers.{owners[prefix]}")
        else:
            owners[prefix] = name
    return problems


def load_config(path: str | os.PathLike[str], env: dict[str, str] | None = None) -> Config:
    """Read and validate a config file; a relative ``hub.storage`` is taken relative to the file.

    Raises:
        ConfigError: the file cannot be read, is not JSON, or has problems (all listed).
    """
    import orjson

    file = Path(path)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise ConfigError([f"$: cannot read {file}: {exc.strerror or exc}"]) from exc
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ConfigError([f"$: not valid JSON: {exc}"]) from exc
    config = parse_config(raw, env)
    storage = config.hub.storage
    if storage != ":memory:" and not Path(storage).is_absolute():
        storage = str((file.parent / storage).resolve())
        config = config.model_copy(update={"hub": config.hub.model_copy(update={"storage": storage})})
    return config
