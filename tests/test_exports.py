"""What each package exports: a small, deliberate public surface."""

from __future__ import annotations

import connectors
import hub


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
    for name in hub.__all__:
        assert getattr(hub, name) is not None


def test_connectors_exports() -> None:
    assert sorted(connectors.__all__) == [
        "CallHooks",
        "Connector",
        "ConnectorPool",
        "Listing",
        "ManifoldError",
        "PoolLimits",
        "PoolSession",
        "SseConnector",
        "StreamableHttpConnector",
        "UpstreamBusy",
        "UpstreamError",
        "UpstreamProtocolError",
        "UpstreamRpcError",
        "UpstreamSessionExpired",
        "UpstreamSpec",
        "UpstreamState",
        "UpstreamStatus",
        "UpstreamTimeout",
        "UpstreamUnavailable",
    ]
    for name in connectors.__all__:
        assert getattr(connectors, name) is not None


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
