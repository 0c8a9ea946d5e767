"""Tenants: what each one sees of the catalog, and the upstream credentials its sessions use.

A tenant's view rule comes from its ``upstreams`` and its ``tools``,
``prompts`` and ``resources`` globs (each defaulting to everything of its
upstreams). Its ``headers`` are sent to its upstreams on its sessions (and its
shared upstream sessions, which are its own); a client's credentials never
are. Without auth there is one tenant, the anonymous one, that sees
everything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from hub.access import GlobsConfig, TenantConfig
from hub.schema import Config
from hub.views import EVERYTHING, Globs, ViewRule

__all__ = ["ANONYMOUS_TENANT", "Tenant", "Tenants"]


@dataclass(frozen=True)
class Tenant:
    name: str
    rule: ViewRule = EVERYTHING
    headers: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    max_sessions: int | None = None


ANONYMOUS_TENANT: Final = Tenant("")
_NOBODY: Final = Tenant("", ViewRule(upstreams=frozenset()))


def _globs(config: GlobsConfig) -> Globs:
    return Globs(allow=tuple(config.allow), deny=tuple(config.deny))


def _tenant(name: str, config: TenantConfig) -> Tenant:
    upstreams = None if config.upstreams is None else frozenset(config.upstreams)
    rule = ViewRule(
        upstreams=upstreams,
        tools=_globs(config.tools),
        prompts=_globs(config.prompts),
        resources=_globs(config.resources),
    )
    headers = {upstream: dict(values) for upstream, values in config.headers.items()}
    return Tenant(name, rule, headers, config.limits.max_sessions)


class Tenants:
    """The tenants of one config."""

    def __init__(self, config: Config) -> None:
        self._tenants = {name: _tenant(name, tenant) for name, tenant in config.tenants.items()}
        # With auth on, every credential names a configured tenant; a name that is not sees nothing.
        self._unknown = _NOBODY if config.auth_enabled else ANONYMOUS_TENANT
        if not config.auth_enabled:
            self._tenants.setdefault("", ANONYMOUS_TENANT)

    def get(self, name: str) -> Tenant:
        return self._tenants.get(name, self._unknown)

    def names(self) -> list[str]:
        return [name for name in self._tenants if name]
