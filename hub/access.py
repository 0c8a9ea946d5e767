"""The config sections about who may do what: ``auth``, ``tenants`` and ``audit``.

Models only (validated by pydantic, camelCase keys, unknown keys refused);
:mod:`hub.identity` turns credentials into callers, :mod:`hub.tenants` turns
a tenant into what it sees, what it sends upstream and how fast it may go.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

__all__ = ["ApiKeyConfig", "AuditConfig", "AuthConfig", "GlobsConfig", "JwtConfig", "LimitsConfig", "TenantConfig"]

_NAME: Final = r"^[A-Za-z0-9_.-]+$"
_ASYMMETRIC: Final = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class ApiKeyConfig(_Model):
    """One API key: only its SHA-256 digest is stored."""

    name: Annotated[str, Field(pattern=_NAME, max_length=128)]
    sha256: str
    tenant: Annotated[str, Field(pattern=_NAME, max_length=128)]
    expires: datetime | None = None
    admin: bool = False

    @field_validator("sha256")
    @classmethod
    def _digest(cls, value: str) -> str:
        if not re.fullmatch(r"[0-9a-fA-F]{64}", value):
            raise ValueError("must be the 64 hex digits of the key's SHA-256 digest")
        return value.lower()

    @field_validator("expires")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("must name its time zone (for example 2027-06-30T00:00:00Z)")
        return value


class JwtConfig(_Model):
    """Bearer JWTs from one issuer, checked against its keys."""

    issuer: str
    audience: str
    jwks: str
    """An https:// URL of the issuer's JWKS, or the path of a JWKS file."""
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256", "EdDSA"])
    tenant_claim: str = "tenant"
    scopes: list[str] = Field(default_factory=list)
    leeway: Annotated[float, Field(ge=0, le=600)] = 30.0
    admin_scope: str | None = None
    """A scope that makes the token's holder an admin."""

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("name at least one algorithm")
        for algorithm in value:
            if algorithm not in _ASYMMETRIC:
                # Never "none", never an HMAC algorithm: a public key must not become a shared secret.
                raise ValueError(f"{algorithm!r} is not allowed; use one of {', '.join(_ASYMMETRIC)}")
        return value

    @field_validator("jwks")
    @classmethod
    def _https_or_file(cls, value: str) -> str:
        if value.startswith("http://"):
            raise ValueError("must be an https:// URL or a file path (keys over plain HTTP can be swapped)")
        return value


class AuthConfig(_Model):
    """The ``auth`` section."""

    api_keys: list[ApiKeyConfig] = Field(default_factory=list)
    jwt: JwtConfig | None = None
    authorization_servers: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> AuthConfig:
        names = [key.name for key in self.api_keys]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"API key names must be unique: {', '.join(duplicates)}")
        return self


class GlobsConfig(_Model):
    """Public names (or URIs) admitted: matching an ``allow`` glob and no ``deny`` glob."""

    allow: list[str] = Field(default_factory=lambda: ["*"])
    deny: list[str] = Field(default_factory=list)


class LimitsConfig(_Model):
    """How much one tenant (and each of its principals) may ask."""

    requests_per_minute: Annotated[float, Field(gt=0)] | None = None
    burst: Annotated[int, Field(ge=1)] | None = None
    tool_calls_per_minute: Annotated[float, Field(gt=0)] | None = None
    max_sessions: Annotated[int, Field(ge=1)] | None = None
    max_concurrent_calls: Annotated[int, Field(ge=1)] | None = None


class TenantConfig(_Model):
    """One tenant: its upstreams, what of them it sees, its upstream credentials, its limits."""

    upstreams: list[Annotated[str, Field(pattern=_NAME)]] | None = None
    tools: GlobsConfig = GlobsConfig()
    prompts: GlobsConfig = GlobsConfig()
    resources: GlobsConfig = GlobsConfig()
    headers: dict[str, dict[str, str]] = Field(default_factory=dict)
    limits: LimitsConfig = LimitsConfig()

    @field_validator("headers")
    @classmethod
    def _one_line_headers(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for upstream, headers in value.items():
            for name, text in headers.items():
                if any(c in name or c in text for c in "\r\n\0"):
                    raise ValueError(f"header {name!r} for {upstream} has a line break or NUL in its name or value")
        return value


class AuditConfig(_Model):
    """The ``audit`` section: what is recorded of each call, and for how long."""

    arguments: Literal["none", "hash", "full"] = "none"
    max_age: Annotated[float, Field(gt=0)] = 30 * 24 * 3600.0
    max_records: Annotated[int, Field(ge=0)] = 1_000_000
