"""Tenants from the config: their view rule and upstream credentials; unknown tenants see nothing."""

from __future__ import annotations

import hashlib

from hub.config import parse_config
from hub.tenants import ANONYMOUS_TENANT, Tenants
from hub.views import EVERYTHING, Globs


def test_a_tenant_sees_its_upstreams_through_its_globs_and_carries_its_headers() -> None:
    config = parse_config(
        {
            "mcpServers": {"notes": {"url": "http://127.0.0.1:1/mcp"}},
            "tenants": {
                "acme": {
                    "upstreams": ["notes"],
                    "tools": {"allow": ["notes__*"], "deny": ["*delete*"]},
                    "headers": {"notes": {"Authorization": "Bearer ${T}"}},
                    "limits": {"maxSessions": 3},
                }
            },
        },
        env={"T": "t0ken"},
    )
    acme = Tenants(config).get("acme")
    assert acme.rule.upstreams == frozenset({"notes"})
    assert acme.rule.tools == Globs(allow=("notes__*",), deny=("*delete*",))
    assert acme.headers == {"notes": {"Authorization": "Bearer t0ken"}}
    assert acme.max_sessions == 3


def test_without_auth_everyone_is_the_anonymous_tenant_that_sees_everything() -> None:
    tenants = Tenants(parse_config({}, env={}))
    assert tenants.get("") is ANONYMOUS_TENANT and tenants.get("").rule is EVERYTHING


def test_with_auth_a_tenant_name_that_is_not_configured_sees_nothing() -> None:
    key = {"name": "k", "sha256": hashlib.sha256(b"k").hexdigest(), "tenant": "acme"}
    config = parse_config({"auth": {"apiKeys": [key]}, "tenants": {"acme": {}}}, env={})
    assert Tenants(config).get("ghost").rule.upstreams == frozenset()
