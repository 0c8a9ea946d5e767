"""The manifold command: check, health, tools, and serve's refusal of a bad config."""

from __future__ import annotations

import asyncio
import gc
import json
from pathlib import Path

import pytest

from hub.cli import main
from tests.servers import reserve_port, run_hub, serve
from tests.upstreams import http_app, sse_app

pytestmark = pytest.mark.anyio


def test_check_accepts_the_example_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "examples/config.json"]) == 0
    assert "ok (2 upstreams enabled of 2)" in capsys.readouterr().out


def test_check_lists_every_problem_with_its_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"hub": {"port": -1}, "mcpServers": {"x": {"url": "nope", "colour": "red"}}}))
    assert main(["check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "$.hub.port: Input should be greater than or equal to 0" in err
    assert "$.mcpServers.x.url: must be an http:// or https:// URL" in err
    assert "$.mcpServers.x.colour: unknown key" in err


def test_serve_refuses_a_bad_config_without_starting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["serve", "--config", str(bad)]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_serve_sets_the_collectors_threshold_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    monkeypatch.delenv("MANIFOLD_GC_THRESHOLD", raising=False)
    before = gc.get_threshold()
    try:
        main(["serve", "--config", str(bad)])
        assert gc.get_threshold() == (10_000, *before[1:])  # the default
        monkeypatch.setenv("MANIFOLD_GC_THRESHOLD", "12345")
        main(["serve", "--config", str(bad)])
        assert gc.get_threshold() == (12_345, *before[1:])
    finally:
        gc.set_threshold(*before)


def test_a_bad_process_setting_is_named_and_nothing_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before = gc.get_threshold()
    monkeypatch.setenv("MANIFOLD_GC_THRESHOLD", "10")
    monkeypatch.setenv("MANIFOLD_LOG_FORMAT", "xml")
    assert main(["serve", "--config", "examples/config.json"]) == 2
    err = capsys.readouterr().err
    assert "MANIFOLD_GC_THRESHOLD: Input should be greater than or equal to 100" in err
    assert "MANIFOLD_LOG_FORMAT: Input should be 'text' or 'json'" in err
    assert gc.get_threshold() == before


async def test_health_and_tools_against_a_running_hub(capsys: pytest.CaptureFixture[str]) -> None:
    async with (
        serve(http_app("alpha")) as alpha,
        serve(sse_app("beta")) as beta,
        run_hub({"alpha": {"url": f"{alpha}/mcp"}, "beta": {"url": f"{beta}/sse", "type": "sse"}}) as (url, hub),
    ):
        base = url.removesuffix("/mcp")
        assert await asyncio.to_thread(main, ["health", "--url", base]) == 0
        out = capsys.readouterr().out
        assert "alpha" in out and "beta" in out and "hub: ok" in out
        assert await asyncio.to_thread(main, ["tools", "--url", base]) == 0
        out = capsys.readouterr().out
        assert "alpha__echo" in out and "beta__forecast" in out
        assert f"\n{len(hub.catalog.items('tools'))} tools" in out


async def test_health_exits_non_zero_and_names_a_down_upstream(capsys: pytest.CaptureFixture[str]) -> None:
    dead = reserve_port()
    try:
        async with (
            serve(http_app("alpha")) as alpha,
            run_hub(
                {"alpha": {"url": f"{alpha}/mcp"}, "gone": {"url": f"http://127.0.0.1:{dead.getsockname()[1]}/mcp"}}
            ) as (url, _),
        ):
            assert await asyncio.to_thread(main, ["health", "--url", url.removesuffix("/mcp"), "--json"]) == 1
    finally:
        dead.close()
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "degraded"
    gone = next(u for u in report["upstreams"] if u["name"] == "gone")
    assert gone["state"] == "down" and "Connection refused" in gone["lastError"]


def test_health_of_an_unreachable_hub_is_a_clear_failure(capsys: pytest.CaptureFixture[str]) -> None:
    dead = reserve_port()
    try:
        assert main(["health", "--url", f"http://127.0.0.1:{dead.getsockname()[1]}"]) == 1
    finally:
        dead.close()
    assert "cannot reach the hub" in capsys.readouterr().err


async def test_the_demo_upstreams_serve_what_the_example_config_expects() -> None:
    from examples.demo_upstreams import clock_app, notes_app, wait_listening

    async with serve(notes_app()) as notes, serve(clock_app()) as clock:
        ports = [int(notes.rsplit(":", 1)[1]), int(clock.rsplit(":", 1)[1])]
        assert await wait_listening(ports, 5)
        servers = {"notes": {"url": f"{notes}/mcp"}, "clock": {"url": f"{clock}/sse", "type": "sse", "prefix": "time"}}
        async with run_hub(servers) as (_, hub):
            assert hub.health()["status"] == "ok"
            names = {tool["name"] for tool in hub.catalog.items("tools")}
            assert names == {
                "notes__add_note",
                "notes__search_notes",
                "notes__index_notes",
                "time__now",
                "time__countdown",
            }


def test_keys_new_prints_a_key_once_and_the_entry_that_accepts_it(capsys: pytest.CaptureFixture[str]) -> None:
    import hashlib

    assert main(["keys", "new", "--name", "ci-bot", "--tenant", "acme", "--admin"]) == 0
    lines = capsys.readouterr().out.splitlines()
    key = lines[0].rsplit(" ", 1)[1]
    entry = json.loads(lines[-1])
    assert key.startswith("mfd_") and len(key) > 40
    assert entry == {
        "name": "ci-bot",
        "sha256": hashlib.sha256(key.encode()).hexdigest(),
        "tenant": "acme",
        "admin": True,
    }
    assert main(["keys", "new", "--name", "ci-bot", "--tenant", "acme"]) == 0
    assert capsys.readouterr().out.splitlines()[0].rsplit(" ", 1)[1] != key  # a fresh key every time


async def test_health_tools_and_audit_with_a_token_when_auth_is_on(capsys: pytest.CaptureFixture[str]) -> None:
    import hashlib

    from tests.servers import run_config

    def entry(name: str, key: str, admin: bool) -> dict[str, object]:
        return {"name": name, "sha256": hashlib.sha256(key.encode()).hexdigest(), "tenant": "t", "admin": admin}

    async with serve(http_app("alpha")) as alpha:
        document = {
            "mcpServers": {"alpha": {"url": f"{alpha}/mcp"}},
            "auth": {"apiKeys": [entry("ops", "mfd_ops", True), entry("user", "mfd_user", False)]},
            "tenants": {"t": {"tools": {"allow": ["alpha__echo"]}}},
            "audit": {"arguments": "hash"},
        }
        async with run_config(document) as (url, _):
            base = url.removesuffix("/mcp")
            assert await asyncio.to_thread(main, ["health", "--url", base]) == 0  # no credential: only up or down
            assert "needs an admin credential" in capsys.readouterr().out
            assert await asyncio.to_thread(main, ["health", "--url", base, "--token", "mfd_ops"]) == 0
            assert "alpha" in capsys.readouterr().out
            assert await asyncio.to_thread(main, ["tools", "--url", base, "--token", "mfd_user", "--json"]) == 0
            assert [t["name"] for t in json.loads(capsys.readouterr().out)] == ["alpha__echo"]  # the user's view
            assert await asyncio.to_thread(main, ["audit", "--url", base, "--token", "mfd_user"]) == 1
            assert "admin credential" in capsys.readouterr().err
            command = ["audit", "--url", base, "--token", "mfd_ops", "--since", "5m", "--json"]
            assert await asyncio.to_thread(main, command) == 0
            records = json.loads(capsys.readouterr().out)
            assert any(r["outcome"] == "refused" and r["method"] == "GET /audit" for r in records)
            assert "mfd_" not in json.dumps(records)
