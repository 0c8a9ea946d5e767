"""Loading the config file admins edit: expansion, validation, and the checks across sections.

The file uses the ``mcpServers`` shape MCP clients already know, plus the
``hub``, ``auth``, ``tenants`` and ``audit`` sections (:mod:`hub.schema`,
:mod:`hub.access`). It is validated in full before anything starts: every
problem is reported with its JSON path, and a file with any problem is
refused whole. ``${VAR}`` and ``${VAR:-default}`` in upstream urls,
headers and (local servers') env, and tenants' upstream headers, are expanded
from the environment.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hub.errors import ConfigError
from hub.schema import Config, HubSettings, ProcessSettings, Timeouts, UpstreamConfig

__all__ = [
    "Config",
    "HubSettings",
    "ProcessSettings",
    "Timeouts",
    "UpstreamConfig",
    "config_from_bytes",
    "exposure_problem",
    "load_config",
    "parse_config",
]

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


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
    """Expand ``${VAR}`` in upstream urls, headers and env in place; return the paths that failed."""
    failed: set[str] = set()
    targets: list[tuple[dict[str, Any], str, str]] = []
    servers = raw.get("mcpServers") if isinstance(raw, dict) else None
    for key, server in servers.items() if isinstance(servers, dict) else []:
        if not isinstance(server, dict):
            continue
        targets.append((server, "url", _path(["mcpServers", key, "url"])))
        for section in ("headers", "env"):  # a local server's env: its secrets come from the hub's environment
            values = server.get(section)
            if isinstance(values, dict):
                targets += [(values, h, _path(["mcpServers", key, section, h])) for h in values]
    tenants = raw.get("tenants") if isinstance(raw, dict) else None
    for key, tenant in tenants.items() if isinstance(tenants, dict) else []:
        per_upstream = tenant.get("headers") if isinstance(tenant, dict) else None
        for upstream, headers in per_upstream.items() if isinstance(per_upstream, dict) else []:
            if isinstance(headers, dict):
                targets += [(headers, h, _path(["tenants", key, "headers", upstream, h])) for h in headers]
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
        problems += _dangling_names(config)
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


def _dangling_names(config: Config) -> list[str]:
    """Tenants that name upstreams that do not exist, and credentials that name tenants that do not."""
    problems = []
    for name, tenant in config.tenants.items():
        for index, upstream in enumerate(tenant.upstreams or []):
            if upstream not in config.mcp_servers:
                problems.append(
                    f"{_path(['tenants', name, 'upstreams', index])}: no upstream {upstream!r} in mcpServers"
                )
        for upstream in tenant.headers:
            if upstream not in config.mcp_servers:
                problems.append(
                    f"{_path(['tenants', name, 'headers', upstream])}: no upstream {upstream!r} in mcpServers"
                )
    if config.auth is not None:
        for index, key in enumerate(config.auth.api_keys):
            if key.tenant not in config.tenants:
                path = _path(["auth", "apiKeys", index, "tenant"])
                problems.append(f"{path}: no tenant {key.tenant!r} in tenants")
    return problems


def exposure_problem(config: Config, host: str) -> str | None:
    """Why the hub must not listen on ``host`` with this config, or None when it may."""
    from hub.guard import is_loopback

    if is_loopback(host) or config.auth_enabled or config.hub.allow_anonymous:
        return None
    return (
        f"refusing to listen on {host} without authentication: anyone who can reach it could use every "
        "upstream. Add API keys (manifold keys new --name NAME --tenant TENANT prints one and the entry "
        'for "auth": {"apiKeys": [...]}) or a JWT issuer to the config, or set "hub": {"allowAnonymous": true} '
        "if that is what you want."
    )


def load_config(path: str | os.PathLike[str], env: dict[str, str] | None = None) -> Config:
    """Read and validate a config file; a relative ``hub.storage`` or ``hub.workspaces`` is taken
    relative to the file.

    Raises:
        ConfigError: the file cannot be read, is not JSON, or has problems (all listed).
    """
    file = Path(path)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise ConfigError([f"$: cannot read {file}: {exc.strerror or exc}"]) from exc
    return config_from_bytes(data, file, env)


def config_from_bytes(data: bytes, file: Path, env: dict[str, str] | None = None) -> Config:
    """Validate a config document's bytes as if they were the file ``file`` (relative paths are its).

    Raises:
        ConfigError: not JSON, or with problems (all listed).
    """
    import orjson

    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ConfigError([f"$: not valid JSON: {exc}"]) from exc
    config = parse_config(raw, env)
    paths: dict[str, str] = {}
    if config.hub.storage != ":memory:" and not config.hub.replicated and not Path(config.hub.storage).is_absolute():
        paths["storage"] = str((file.parent / config.hub.storage).resolve())
    if not Path(config.hub.workspaces).is_absolute():
        paths["workspaces"] = str((file.parent / config.hub.workspaces).resolve())
    if paths:
        config = config.model_copy(update={"hub": config.hub.model_copy(update=paths)})
    return config
