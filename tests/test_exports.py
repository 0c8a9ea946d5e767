"""What each package exports: a small, deliberate public surface."""

from __future__ import annotations

import connectors
import hub


def _defined_here(package: object, name: str) -> bool:
    value = getattr(package, name)
    module = getattr(value, "__module__", "")
    return isinstance(module, str) and module.split(".")[0] == getattr(package, "__name__", "")


def test_hub_exports() -> None:
    assert sorted(hub.__all__) == [
        "Catalog",
        "Config",
        "ConfigError",
        "Hub",
        "HubError",
        "create_app",
        "load_config",
        "parse_config",
    ]
    assert [name for name in hub.__all__ if not _defined_here(hub, name)] == []


def test_connectors_exports() -> None:
    assert sorted(connectors.__all__) == [
        "BreakerState",
        "CallHooks",
        "CircuitOpen",
        "Connector",
        "ConnectorPool",
        "Link",
        "Listing",
        "ManifoldError",
        "PoolLimits",
        "Transport",
        "UpstreamBusy",
        "UpstreamError",
        "UpstreamProtocolError",
        "UpstreamRpcError",
        "UpstreamSessionExpired",
        "UpstreamSessions",
        "UpstreamSpec",
        "UpstreamState",
        "UpstreamStatus",
        "UpstreamTimeout",
        "UpstreamTooLarge",
        "UpstreamUnavailable",
        "make_connector",
    ]
    assert [name for name in connectors.__all__ if not _defined_here(connectors, name)] == []


def test_every_error_is_rooted_in_one_class_with_a_json_rpc_code() -> None:
    from connectors import errors as upstream_errors
    from hub import errors as hub_errors

    for module in (upstream_errors, hub_errors):
        for name in module.__all__:
            value = getattr(module, name)
            if isinstance(value, type) and issubclass(value, Exception):
                assert issubclass(value, connectors.ManifoldError)
                assert isinstance(value.code, int)


def test_the_supported_versions_are_the_sdks_handshake_versions() -> None:
    from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_HANDSHAKE_VERSION

    from connectors.spec import LATEST_VERSION, SUPPORTED_VERSIONS

    assert SUPPORTED_VERSIONS == HANDSHAKE_PROTOCOL_VERSIONS
    assert LATEST_VERSION == LATEST_HANDSHAKE_VERSION
