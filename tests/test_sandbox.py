"""The sandbox's command line and what config may loosen; a sandbox that cannot be set up keeps its upstream down."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from connectors.sandbox import DISCOVERY, SandboxError, launch, loosened, redactor, workspace_for
from connectors.spec import SandboxSpec, StdioSpec
from hub.cli import main
from hub.config import parse_config
from hub.errors import ConfigError
from tests.servers import run_config
from tests.stdio_helpers import ROOT, local_server


def spec(tmp_path: Path, **sandbox: Any) -> StdioSpec:
    return StdioSpec(
        command=sys.executable,
        args=("-m", "x"),
        env={"GREETING": "hi"},
        sandbox=SandboxSpec(**sandbox),
        workspaces=str(tmp_path),
    )


def test_the_default_sandbox_unshares_everything_and_passes_only_the_configs_environment(tmp_path: Path) -> None:
    how = launch(spec(tmp_path), "files", "acme")
    argv = how.argv
    assert argv[0].endswith("bwrap")
    for flag in ("--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-net", "--die-with-parent", "--clearenv"):
        assert flag in argv
    assert ("--unshare-user" in argv) == (os.geteuid() != 0)  # as root: a user of its own (setpriv) instead
    assert argv[argv.index("--bind") + 1 : argv.index("--bind") + 3] == [str(tmp_path / "acme" / "files"), "/workspace"]
    assert set(how.env) == {"PATH", "HOME", "LANG", "GREETING"} and how.env["HOME"] == "/workspace"
    assert argv[-3:] == [sys.executable, "-m", "x"] or argv[-3:] == [str(Path(sys.executable).absolute()), "-m", "x"]
    assert (tmp_path / "acme" / "files").is_dir()


def test_the_network_and_extra_paths_are_loosened_visibly(tmp_path: Path) -> None:
    loose = spec(tmp_path, network=True, paths=("/opt/cache",), memory_mb=4096)
    argv = launch(loose, "files", "acme").argv
    assert "--unshare-net" not in argv
    assert argv[argv.index("/opt/cache") - 1] == "--ro-bind"
    assert loosened(loose) == ["network", "reads /opt/cache", "memoryMb 4096"]
    assert loosened(spec(tmp_path)) == []
    assert loosened(StdioSpec(command="x", sandbox=None)) == ["unsandboxed"]


def test_each_tenant_and_the_discovery_process_have_workspaces_apart(tmp_path: Path) -> None:
    s = spec(tmp_path)
    places = {workspace_for(s, "files", key) for key in ("acme", "zeta", "", DISCOVERY, "../etc")}
    assert len(places) == 5 and all(place.is_relative_to(tmp_path) for place in places)


def test_a_command_that_is_not_there_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SandboxError, match="command 'no-such-server' not found"):
        launch(StdioSpec(command="no-such-server", workspaces=str(tmp_path)), "x", "")


def test_secrets_are_masked_in_what_a_server_logs() -> None:
    redact = redactor({"API_TOKEN": "tok-0123", "DB_PASSWORD": "hunter2!", "REGION": "eu-west-1"})
    assert redact("tok-0123 and hunter2! in eu-west-1") == "*** and *** in eu-west-1"


@pytest.mark.parametrize(
    ("server", "problem"),
    [
        ({"command": "x", "url": "http://h"}, "$.mcpServers.a: give a url or a command, not both"),
        ({}, "$.mcpServers.a: needs a url (a remote server) or a command (a local one)"),
        ({"type": "stdio"}, "$.mcpServers.a: a stdio server needs a command"),
        (
            {"command": "x", "headers": {"a": "b"}},
            "$.mcpServers.a: headers are for remote servers; a local one gets env",
        ),
        (
            {"command": "x", "sandbox": {"paths": ["rel"]}},
            "$.mcpServers.a.sandbox.paths: 'rel' is not an absolute path",
        ),
        ({"command": "x", "sandbox": None}, "$.mcpServers.a.sandbox: give true, false or an object"),
        ({"command": "x", "sandbox": {"net": True}}, "$.mcpServers.a.sandbox.net: unknown key"),
    ],
)
def test_a_bad_local_server_entry_is_refused_with_its_path(server: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config({"mcpServers": {"a": server}}, env={})
    assert refused.value.problems == [problem]


def test_a_local_server_is_shared_per_tenant_by_default_and_env_is_expanded() -> None:
    config = parse_config({"mcpServers": {"a": {"command": "x", "env": {"T": "${TOKEN}"}}}}, env={"TOKEN": "t0k"})
    [upstream] = config.upstream_specs()
    assert upstream.transport == "stdio" and upstream.shared and upstream.stdio is not None
    assert upstream.stdio.env == {"T": "t0k"} and upstream.stdio.sandbox == SandboxSpec()


def test_manifold_check_names_the_upstreams_that_run_loosened(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "hub.json"
    servers = {
        "tight": {"command": "x"},
        "loose": {"command": "x", "sandbox": {"network": True}},
        "bare": {"command": "x", "sandbox": False},
    }
    path.write_text(json.dumps({"mcpServers": servers}))
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "upstream loose runs with a loosened sandbox: network" in out
    assert "upstream bare runs with a loosened sandbox: unsandboxed" in out
    assert "tight" not in out


@pytest.mark.anyio
async def test_without_bubblewrap_a_local_server_stays_down_saying_why_and_the_rest_serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nowhere")  # the hub finds no bwrap; the local server is named by full path
    servers = {"local": local_server(), "bare": local_server("bare", sandbox=False)}
    document = {"hub": {"workspaces": str(tmp_path / "ws")}, "mcpServers": servers}
    async with run_config(document) as (url, hub):
        health = {u["name"]: u for u in hub.health()["upstreams"]}
        assert health["local"]["state"] == "down"
        assert "bubblewrap (bwrap) is not installed" in health["local"]["lastError"]
        assert health["bare"]["state"] == "up" and health["bare"]["sandbox"] == {
            "on": False,
            "loosened": ["unsandboxed"],
        }
        async with Client(url, mode="legacy") as client:
            result = await client.call_tool("bare__echo", {"text": "uncontained"})
        assert result.content[0].text == "bare: uncontained"  # type: ignore[union-attr]
    assert str(ROOT)
