"""The config file: defaults, camelCase keys, ${VAR} expansion, and every problem reported with its JSON path."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from hub.config import Config, load_config, parse_config
from hub.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "config.json"


def problems_of(raw: Any, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, env={} if env is None else env)
    return caught.value.problems


def paths_of(problems: list[str]) -> list[str]:
    return sorted(problem.partition(": ")[0] for problem in problems)


def one_server(**fields: Any) -> dict[str, Any]:
    return {"mcpServers": {"alpha": {"url": "http://127.0.0.1:9000/mcp", **fields}}}


# -- defaults and keys ---------------------------------------------------------------------------


def test_an_empty_document_gets_every_default() -> None:
    config = parse_config({}, env={})

    assert config.mcp_servers == {}
    assert config.enabled() == []
    assert config.upstream_specs() == []
    hub = config.hub
    assert (hub.host, hub.port, hub.separator, hub.max_name_length) == ("127.0.0.1", 8765, "__", 64)
    assert (hub.storage, hub.page_size, hub.max_sessions) == ("manifold.db", 100, 1000)


def test_a_server_with_only_a_url_gets_the_default_settings() -> None:
    config = parse_config(one_server(), env={})

    server = config.mcp_servers["alpha"]
    [spec] = config.upstream_specs()
    assert spec.transport == "streamable-http" and not server.local
    assert server.headers == {}
    assert server.prefix is None
    assert (server.timeouts.connect, server.timeouts.request) == (10.0, 60.0)
    assert server.max_concurrency == 64
    assert server.session_mode is None and not spec.shared  # isolated, the default of a remote server
    assert server.disabled is False
    assert config.prefix_of("alpha") == "alpha"


def test_camel_case_keys_set_their_fields() -> None:
    raw = {
        "hub": {"maxNameLength": 32, "sessionIdleTimeout": 5, "pageSize": 7, "reconnect": {"initialDelay": 0.25}},
        "mcpServers": {
            "alpha": {"url": "http://127.0.0.1:9000/mcp", "maxConcurrency": 3, "sessionMode": "shared", "prefix": "a"}
        },
    }

    config = parse_config(raw, env={})

    assert config.hub.max_name_length == 32
    assert config.hub.session_idle_timeout == 5.0
    assert config.hub.page_size == 7
    assert config.hub.reconnect.initial_delay == 0.25
    [spec] = config.upstream_specs()
    assert spec.max_concurrency == 3
    assert spec.shared is True
    assert config.prefix_of("alpha") == "a"


def test_a_loaded_config_cannot_be_changed() -> None:
    config = parse_config(one_server(), env={})

    with pytest.raises(ValidationError):
        config.hub.port = 1


# -- environment variables -----------------------------------------------------------------------


def test_variables_in_the_url_and_headers_are_expanded_from_env() -> None:
    raw = one_server(url="http://${HOST}:9000/${PATH_PART}", headers={"Authorization": "Bearer ${TOKEN}"})

    config = parse_config(raw, env={"HOST": "upstream.test", "PATH_PART": "mcp", "TOKEN": "s3cret"})

    [spec] = config.upstream_specs()
    assert spec.url == "http://upstream.test:9000/mcp"
    assert spec.headers == {"Authorization": "Bearer s3cret"}


def test_a_default_is_used_only_when_the_variable_is_unset() -> None:
    raw = one_server(url="http://${HOST:-localhost}:9000/mcp", headers={"X-Team": "${TEAM:-core}"})

    unset = parse_config(copy.deepcopy(raw), env={})
    set_ = parse_config(copy.deepcopy(raw), env={"HOST": "upstream.test", "TEAM": "edge"})

    assert unset.mcp_servers["alpha"].url == "http://localhost:9000/mcp"
    assert unset.mcp_servers["alpha"].headers == {"X-Team": "core"}
    assert set_.mcp_servers["alpha"].url == "http://upstream.test:9000/mcp"
    assert set_.mcp_servers["alpha"].headers == {"X-Team": "edge"}


def test_an_unset_variable_is_a_problem_naming_its_path_and_variable() -> None:
    problems = problems_of(one_server(url="http://${HOST}:9000/mcp"))

    assert len(problems) == 1
    assert problems[0].startswith("$.mcpServers.alpha.url: ")
    assert "HOST" in problems[0]


def test_an_unset_variable_in_a_header_names_the_header() -> None:
    problems = problems_of(one_server(headers={"X-Api-Key": "${API_KEY}"}))

    assert paths_of(problems) == ["$.mcpServers.alpha.headers['X-Api-Key']"]
    assert "API_KEY" in problems[0]


def test_an_unset_variable_making_the_whole_url_is_reported_once() -> None:
    problems = problems_of(one_server(url="${ALPHA_URL}"))

    assert paths_of(problems) == ["$.mcpServers.alpha.url"]
    assert "ALPHA_URL" in problems[0]


def test_parse_config_leaves_the_document_unchanged() -> None:
    raw = one_server(url="http://${HOST:-localhost}:9000/mcp", headers={"X-Team": "${TEAM:-core}"})
    before = copy.deepcopy(raw)

    parse_config(raw, env={})

    assert raw == before


# -- problems ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        pytest.param({"bogus": 1}, "$.bogus", id="top"),
        pytest.param({"hub": {"bogus": 1}}, "$.hub.bogus", id="hub"),
        pytest.param({"hub": {"reconnect": {"bogus": 1}}}, "$.hub.reconnect.bogus", id="hub.reconnect"),
        pytest.param(one_server(bogus=1), "$.mcpServers.alpha.bogus", id="server"),
        pytest.param(one_server(timeouts={"bogus": 1}), "$.mcpServers.alpha.timeouts.bogus", id="server.timeouts"),
    ],
)
def test_an_unknown_key_is_refused_with_its_path(raw: dict[str, Any], path: str) -> None:
    assert problems_of(raw) == [f"{path}: unknown key"]


def test_every_problem_in_a_file_is_reported_together() -> None:
    raw = {
        "bogus": True,
        "hub": {"port": 70000, "separator": "::"},
        "mcpServers": {
            "alpha": {"url": "http://${ALPHA_HOST}/mcp"},
            "beta": {"url": "ftp://127.0.0.1/mcp", "maxConcurrency": 0},
            "gamma": {"headers": {}},
            "my server": {"url": "http://127.0.0.1:9000/mcp"},
        },
    }

    problems = problems_of(raw)

    assert paths_of(problems) == sorted(
        [
            "$.bogus",
            "$.hub.port",
            "$.hub.separator",
            "$.mcpServers.alpha.url",
            "$.mcpServers.beta.url",
            "$.mcpServers.beta.maxConcurrency",
            "$.mcpServers.gamma",
            "$.mcpServers['my server']",
        ]
    )


def test_a_missing_url_is_required() -> None:
    assert problems_of({"mcpServers": {"alpha": {}}}) == [
        "$.mcpServers.alpha: needs a url (a remote server) or a command (a local one)"
    ]


def test_a_url_that_is_not_http_is_refused() -> None:
    assert problems_of(one_server(url="ftp://127.0.0.1/mcp")) == [
        "$.mcpServers.alpha.url: must be an http:// or https:// URL"
    ]


def test_a_server_name_with_a_space_is_named_in_brackets() -> None:
    problems = problems_of({"mcpServers": {"my server": {"url": "http://127.0.0.1:9000/mcp"}}})

    assert paths_of(problems) == ["$.mcpServers['my server']"]


@pytest.mark.parametrize("raw", [[], "config", 3, None], ids=["list", "string", "number", "null"])
def test_a_top_level_that_is_not_an_object_is_refused(raw: Any) -> None:
    assert paths_of(problems_of(raw)) == ["$"]


# -- prefixes ------------------------------------------------------------------------------------


def test_a_prefix_used_twice_is_refused() -> None:
    raw = {
        "mcpServers": {
            "alpha": {"url": "http://127.0.0.1:9001/mcp", "prefix": "p"},
            "beta": {"url": "http://127.0.0.1:9002/mcp", "prefix": "p"},
        }
    }

    problems = problems_of(raw)

    assert paths_of(problems) == ["$.mcpServers.beta.prefix"]
    assert "alpha" in problems[0]


def test_a_prefix_equal_to_another_servers_name_is_refused() -> None:
    raw = {
        "mcpServers": {
            "alpha": {"url": "http://127.0.0.1:9001/mcp"},
            "beta": {"url": "http://127.0.0.1:9002/mcp", "prefix": "alpha"},
        }
    }

    assert paths_of(problems_of(raw)) == ["$.mcpServers.beta.prefix"]


def test_several_servers_may_share_the_empty_prefix() -> None:
    raw = {
        "mcpServers": {
            "alpha": {"url": "http://127.0.0.1:9001/mcp", "prefix": ""},
            "beta": {"url": "http://127.0.0.1:9002/mcp", "prefix": ""},
        }
    }

    config = parse_config(raw, env={})

    assert [config.prefix_of(name) for name in config.enabled()] == ["", ""]


def test_a_disabled_server_does_not_claim_its_prefix() -> None:
    raw = {
        "mcpServers": {
            "alpha": {"url": "http://127.0.0.1:9001/mcp", "prefix": "p", "disabled": True},
            "beta": {"url": "http://127.0.0.1:9002/mcp", "prefix": "p"},
        }
    }

    assert parse_config(raw, env={}).enabled() == ["beta"]


# -- upstreams -----------------------------------------------------------------------------------


def test_disabled_servers_are_not_served() -> None:
    raw = {
        "mcpServers": {
            "alpha": {"url": "http://127.0.0.1:9001/mcp"},
            "beta": {"url": "http://127.0.0.1:9002/mcp", "disabled": True},
            "gamma": {"url": "http://127.0.0.1:9003/mcp"},
        }
    }

    config = parse_config(raw, env={})

    assert config.enabled() == ["alpha", "gamma"]
    assert [spec.name for spec in config.upstream_specs()] == ["alpha", "gamma"]
    assert "beta" in config.mcp_servers


@pytest.mark.parametrize(
    ("kind", "transport"),
    [("sse", "sse"), ("http", "streamable-http"), ("streamable-http", "streamable-http")],
)
def test_the_server_type_chooses_the_transport(kind: str, transport: str) -> None:
    [spec] = parse_config(one_server(type=kind), env={}).upstream_specs()

    assert spec.transport == transport


def test_an_upstream_spec_carries_the_servers_settings() -> None:
    raw = one_server(
        headers={"X-Team": "core"}, timeouts={"connect": 2, "request": 30}, maxConcurrency=4, sessionMode="shared"
    )

    [spec] = parse_config(raw, env={}).upstream_specs()

    assert spec.name == "alpha"
    assert spec.url == "http://127.0.0.1:9000/mcp"
    assert dict(spec.headers) == {"X-Team": "core"}
    assert (spec.connect_timeout, spec.request_timeout) == (2.0, 30.0)
    assert spec.max_concurrency == 4
    assert spec.shared is True


# -- files ---------------------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_a_relative_storage_path_is_taken_relative_to_the_config_file(tmp_path: Path) -> None:
    file = write(tmp_path / "manifold.json", '{"hub": {"storage": "data/hub.db"}}')

    config = load_config(file, env={})

    assert Path(config.hub.storage) == (tmp_path / "data" / "hub.db").resolve()


@pytest.mark.parametrize("storage", [":memory:", "/var/lib/manifold/hub.db"])
def test_an_absolute_or_in_memory_storage_is_kept(tmp_path: Path, storage: str) -> None:
    file = write(tmp_path / "manifold.json", f'{{"hub": {{"storage": "{storage}"}}}}')

    assert load_config(file, env={}).hub.storage == storage


def test_a_file_that_is_not_json_is_refused(tmp_path: Path) -> None:
    file = write(tmp_path / "manifold.json", '{"mcpServers": ')

    with pytest.raises(ConfigError) as caught:
        load_config(file, env={})

    [problem] = caught.value.problems
    assert problem.startswith("$: not valid JSON")


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "absent.json", env={})

    [problem] = caught.value.problems
    assert problem.startswith("$: cannot read")
    assert "absent.json" in problem


def test_load_config_reports_the_problems_of_the_document(tmp_path: Path) -> None:
    file = write(tmp_path / "manifold.json", '{"mcpServers": {"alpha": {"url": "http://${HOST}/mcp"}}, "x": 1}')

    with pytest.raises(ConfigError) as caught:
        load_config(file, env={})

    assert paths_of(caught.value.problems) == ["$.mcpServers.alpha.url", "$.x"]


def test_the_example_config_loads() -> None:
    config = load_config(EXAMPLE, env={})

    assert isinstance(config, Config)
    assert config.enabled() == ["notes", "clock"]
    notes, clock = config.upstream_specs()
    assert notes.url == "http://127.0.0.1:8801/mcp"
    assert (notes.transport, clock.transport) == ("streamable-http", "sse")
    assert config.prefix_of("clock") == "time"


def test_api_keys_are_digests_with_unique_names() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"auth": {"apiKeys": [{"name": "k", "sha256": "xyz", "tenant": "acme"}]}}, env={})
    assert caught.value.problems == ["$.auth.apiKeys[0].sha256: must be the 64 hex digits of the key's SHA-256 digest"]
    digest = hashlib.sha256(b"k").hexdigest()
    twice = [{"name": "k", "sha256": digest, "tenant": "acme"}] * 2
    with pytest.raises(ConfigError, match="API key names must be unique: k"):
        parse_config({"auth": {"apiKeys": twice}, "tenants": {"acme": {}}}, env={})


def test_tenants_and_keys_must_name_what_exists() -> None:
    digest = hashlib.sha256(b"k").hexdigest()
    with pytest.raises(ConfigError) as caught:
        parse_config(
            {
                "mcpServers": {"notes": {"url": "http://127.0.0.1:1/mcp"}},
                "auth": {"apiKeys": [{"name": "k", "sha256": digest, "tenant": "ghost"}]},
                "tenants": {"acme": {"upstreams": ["notes", "nowhere"], "headers": {"elsewhere": {"A": "b"}}}},
            },
            env={},
        )
    assert caught.value.problems == [
        "$.tenants.acme.upstreams[1]: no upstream 'nowhere' in mcpServers",
        "$.tenants.acme.headers.elsewhere: no upstream 'elsewhere' in mcpServers",
        "$.auth.apiKeys[0].tenant: no tenant 'ghost' in tenants",
    ]


def test_header_values_with_line_breaks_are_refused_without_showing_them() -> None:
    for section in (
        {"mcpServers": {"a": {"url": "http://127.0.0.1:1/mcp", "headers": {"X": "${V}"}}}},
        {
            "mcpServers": {"a": {"url": "http://127.0.0.1:1/mcp"}},
            "tenants": {"t": {"headers": {"a": {"Authorization": "${V}"}}}},
        },
    ):
        with pytest.raises(ConfigError) as caught:
            parse_config(section, env={"V": "secret\r\nX-Evil: 1"})
        assert "line break" in caught.value.message and "secret" not in caught.value.message


def test_a_hub_on_another_address_needs_auth_or_says_so() -> None:
    from hub.config import exposure_problem

    bare = parse_config({"hub": {"host": "0.0.0.0"}}, env={})
    problem = exposure_problem(bare, "0.0.0.0")
    assert problem is not None and "apiKeys" in problem and "allowAnonymous" in problem
    assert exposure_problem(bare, "127.0.0.1") is None
    assert exposure_problem(parse_config({"hub": {"allowAnonymous": True}}, env={}), "0.0.0.0") is None


@pytest.mark.parametrize("url", ["ftp://10.0.0.5:8765", "http://10.0.0.5:8765/mcp", "http://a b:1", "10.0.0.5:8765"])
def test_a_replica_address_must_be_an_http_origin_and_says_where(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"hub": {"replica": {"advertiseUrl": url}}, "mcpServers": {}}, env={})
    assert any(problem.startswith("$.hub.replica.advertiseUrl: ") for problem in caught.value.problems)


def test_a_replica_address_and_lease_are_read() -> None:
    config = parse_config({"hub": {"replica": {"advertiseUrl": "https://10.0.0.5:8765/", "lease": 3}}}, env={})
    assert config.hub.replica.advertise_url == "https://10.0.0.5:8765"
    assert config.hub.replica.lease == 3.0
    with pytest.raises(ConfigError) as caught:
        parse_config({"hub": {"replica": {"lease": 0.1}}}, env={})
    assert any(problem.startswith("$.hub.replica.lease: ") for problem in caught.value.problems)
