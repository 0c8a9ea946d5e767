"""Reloading the config while clients stay connected: on a file change, on ``manifold reload``, on SIGHUP.

The hub runs from a real file; clients keep one session open across each reload and see the change
in that same session (with ``list_changed``); an invalid file is refused with every problem and the
hub goes on serving the config it had.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from hub.app import create_app
from hub.cli import main
from hub.config import load_config
from hub.runtime import Hub
from hub.server import http_options
from tests.servers import reserve_port, serve
from tests.upstreams import Probe, http_app
from tests.wire import HEADERS, INIT, WAIT, rpc

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]

ROOT = Path(__file__).resolve().parent.parent
ADMIN, USER = "key-admin-0123456789abcdef", "key-user-0123456789abcdef"


def document(upstreams: dict[str, str], tenant: dict[str, Any] | None = None, **hub: Any) -> dict[str, Any]:
    keys = [
        {"name": "ops", "sha256": hashlib.sha256(ADMIN.encode()).hexdigest(), "tenant": "acme", "admin": True},
        {"name": "ann", "sha256": hashlib.sha256(USER.encode()).hexdigest(), "tenant": "acme"},
    ]
    return {
        "hub": {"storage": ":memory:", "drainTimeout": 20, **hub},
        "auth": {"apiKeys": keys},
        "tenants": {"acme": tenant or {}},
        "mcpServers": {name: {"url": f"{url}/mcp"} for name, url in upstreams.items()},
    }


@asynccontextmanager
async def hub_from(path: Path) -> AsyncIterator[tuple[str, Hub]]:
    config = load_config(path)
    app = create_app(config, path)
    async with serve(app, **http_options(config.hub)) as url:
        yield f"{url}/mcp", app.hub


class Watcher:
    """A session-era client that notes each ``tools/list_changed`` it hears."""

    def __init__(self) -> None:
        self.changed = asyncio.Event()

    async def on_message(self, message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            self.changed.set()

    async def next_change(self) -> None:
        await asyncio.wait_for(self.changed.wait(), WAIT)
        self.changed.clear()


@asynccontextmanager
async def user_client(url: str, watcher: Watcher) -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {USER}"}, timeout=WAIT) as http,
        Client(streamable_http_client(url, http_client=http), mode="legacy", message_handler=watcher.on_message) as c,
    ):
        yield c


async def names(client: Client) -> set[str]:
    return {tool.name for tool in (await client.list_tools(cache_mode="bypass")).tools}


async def test_a_changed_file_adds_an_upstream_and_narrows_a_tenant_for_the_open_session(tmp_path: Path) -> None:
    path = tmp_path / "hub.json"
    watch = {"reload": {"interval": 0.05, "debounce": 0.05}}
    async with serve(http_app("alpha")) as alpha, serve(http_app("beta")) as beta:
        path.write_text(json.dumps(document({"alpha": alpha}, **watch)))
        watcher = Watcher()
        async with hub_from(path) as (url, hub), user_client(url, watcher) as client:
            assert "alpha__echo" in await names(client)
            sessions_before = [s.id for s in hub.sessions]

            path.write_text(json.dumps(document({"alpha": alpha, "beta": beta}, **watch)))
            await watcher.next_change()
            async with asyncio.timeout(WAIT):
                while "beta__echo" not in await names(client):
                    await watcher.next_change()  # the new upstream's tools come once it is connected
            assert (await client.call_tool("beta__echo", {"text": "new"})).content[0].text == "beta: new"  # type: ignore[union-attr]

            narrowed = document({"alpha": alpha, "beta": beta}, {"tools": {"deny": ["beta__*"]}}, **watch)
            path.write_text(json.dumps(narrowed))
            await watcher.next_change()
            assert not any(name.startswith("beta__") for name in await names(client))
            with pytest.raises(Exception, match="unknown tool"):
                await client.call_tool("beta__echo", {"text": "denied now"})
            assert [s.id for s in hub.sessions] == sessions_before  # the same session throughout
            assert hub.reloader.reloads == 2


async def test_removing_an_upstream_lets_its_call_in_flight_finish(tmp_path: Path) -> None:
    path = tmp_path / "hub.json"
    probe = Probe()
    async with serve(http_app("alpha", probe)) as alpha, serve(http_app("beta")) as beta:
        path.write_text(json.dumps(document({"alpha": alpha, "beta": beta}, reload={"watch": False})))
        watcher = Watcher()
        async with hub_from(path) as (url, hub), user_client(url, watcher) as client:
            stepped = asyncio.Event()

            async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                stepped.set()

            call = asyncio.create_task(client.call_tool("alpha__stepper", {"steps": 2}, progress_callback=on_progress))
            await probe.steps.put(None)
            await asyncio.wait_for(stepped.wait(), WAIT)  # its first step came back: the call is in flight
            path.write_text(json.dumps(document({"beta": beta}, reload={"watch": False})))
            reload = asyncio.create_task(hub.reloader.reload("test"))
            await probe.steps.put(None)
            result = await asyncio.wait_for(call, WAIT)
            assert result.content[0].text == "2 steps done"  # type: ignore[union-attr]
            outcome = await asyncio.wait_for(reload, WAIT)
            assert outcome.ok and outcome.removed == ["alpha"]
            assert not any(name.startswith("alpha__") for name in await names(client))


async def test_an_invalid_file_is_refused_with_every_problem_and_the_hub_keeps_serving(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "hub.json"
    async with serve(http_app("alpha")) as alpha:
        good = document({"alpha": alpha}, reload={"watch": False})
        path.write_text(json.dumps(good))
        watcher = Watcher()
        async with hub_from(path) as (url, hub), user_client(url, watcher) as client:
            base = url.removesuffix("/mcp")
            bad = {**good, "hub": {**good["hub"], "port": -1}, "mcpServers": {"alpha": {"url": "ftp://x"}}}
            path.write_text(json.dumps(bad))
            async with httpx.AsyncClient(timeout=WAIT, trust_env=False) as http:
                refused = await http.post(f"{base}/admin/reload", headers={"authorization": f"Bearer {ADMIN}"})
                assert refused.status_code == 422
                problems = refused.json()["problems"]
                assert any(p.startswith("$.hub.port:") for p in problems)
                assert any(p.startswith("$.mcpServers.alpha.url:") for p in problems)
                # Not an admin: refused, and nothing is reloaded.
                user = await http.post(f"{base}/admin/reload", headers={"authorization": f"Bearer {USER}"})
                assert user.status_code == 403
            assert (await client.call_tool("alpha__echo", {"text": "still"})).content[0].text == "alpha: still"  # type: ignore[union-attr]

            code = await asyncio.to_thread(main, ["reload", "--url", base, "--token", ADMIN])
            err = capsys.readouterr().err
            assert code == 1 and "$.mcpServers.alpha.url: must be an http:// or https:// URL" in err

            path.write_text(json.dumps({**good, "hub": {**good["hub"], "port": 1, "keepAliveTimeout": 9}}))
            code = await asyncio.to_thread(main, ["reload", "--url", base, "--token", ADMIN])
            out = capsys.readouterr().out
            assert code == 0 and "not applied until a restart: hub.port" in out
            assert "not applied until a restart: hub.keepAliveTimeout" in out
            assert hub.config.hub.port == good["hub"].get("port", 8765)
            assert hub.config.hub.keep_alive_timeout == 65  # its sockets keep theirs until a restart
            assert hub.reloader.reloads == 1

            code = await asyncio.to_thread(main, ["sessions", "--url", base, "--token", ADMIN, "--json"])
            listed = json.loads(capsys.readouterr().out)
            assert code == 0 and [s["principal"] for s in listed["sessions"]] == ["key:ann"]


async def test_a_reload_cannot_leave_a_hub_beyond_loopback_open_to_anyone(tmp_path: Path) -> None:
    path = tmp_path / "hub.json"
    async with serve(http_app("alpha")) as alpha:
        # As deployed beyond loopback (served on loopback here).
        keyed = document({"alpha": alpha}, host="0.0.0.0", reload={"watch": False})
        path.write_text(json.dumps(keyed))
        watcher = Watcher()
        async with hub_from(path) as (url, hub), user_client(url, watcher) as client:
            open_to_all = {key: value for key, value in keyed.items() if key != "auth"}
            path.write_text(json.dumps(open_to_all))
            outcome = await hub.reloader.reload("test")
            assert not outcome.ok and outcome.problems[0].startswith("$.auth: refusing to listen on 0.0.0.0")
            async with httpx.AsyncClient(timeout=WAIT, trust_env=False) as http:
                anonymous = await http.post(url, json=rpc(1, "initialize", INIT), headers=HEADERS)
            assert anonymous.status_code == 401  # the keys still hold
            assert (await client.call_tool("alpha__echo", {"text": "x"})).content[0].text == "alpha: x"  # type: ignore[union-attr]
            assert hub.config.auth is not None and hub.reloader.reloads == 0

            path.write_text(json.dumps({**open_to_all, "hub": {**keyed["hub"], "allowAnonymous": True}}))
            assert (await hub.reloader.reload("test")).ok  # said in so many words: applied


async def test_settings_read_at_start_are_kept_and_said_and_bounds_apply_at_once(tmp_path: Path) -> None:
    path = tmp_path / "hub.json"
    async with serve(http_app("alpha")) as alpha:
        before = document({"alpha": alpha}, reload={"watch": False})
        path.write_text(json.dumps(before))
        watcher = Watcher()
        async with hub_from(path) as (url, hub), user_client(url, watcher) as client:
            changed = {
                "separator": "--",
                "queueSize": 7,
                "events": {"maxAge": 9, "retryMs": 250},
                "maxSessions": 1,
                "statelessLanes": 2,
                "inputTimeout": 12,
                "maxWaitingCalls": 32,
            }
            path.write_text(json.dumps({**before, "hub": {**before["hub"], **changed}}))
            outcome = await hub.reloader.reload("test")
            assert outcome.ok
            assert sorted(outcome.restart_needed) == ["hub.events.maxAge", "hub.queueSize", "hub.separator"]
            settings = hub.config.hub
            assert (settings.separator, settings.queue_size, settings.events.max_age) == ("__", 512, 300)
            assert settings.events.retry_ms == 250  # its neighbour in events applies
            assert "alpha__echo" in await names(client)  # the catalog keeps its names
            assert (hub.sessions.max_sessions, hub.modern.upstreams.max_sets, hub.modern.upstreams.lanes) == (1, 1, 2)
            assert (hub.modern.calls.input_timeout, hub.modern.calls.max_parked_per_principal) == (12, 2)
            async with httpx.AsyncClient(timeout=WAIT, trust_env=False) as http:
                second = await http.post(
                    url, json=rpc(1, "initialize", INIT), headers={**HEADERS, "authorization": f"Bearer {USER}"}
                )
            assert second.status_code == 503  # the lowered bound holds at once
            assert (await client.call_tool("alpha__echo", {"text": "x"})).content[0].text == "alpha: x"  # type: ignore[union-attr]
            # Another replica's copy of the same document is the one applied already: not applied again.
            assert (await hub.reloader.adopt(path.read_bytes(), "replica")).ok and hub.reloader.reloads == 1


async def test_sighup_reloads_a_hub_process(tmp_path: Path) -> None:
    sock = reserve_port()
    port = sock.getsockname()[1]
    sock.close()
    path = tmp_path / "hub.json"
    async with serve(http_app("alpha")) as alpha, serve(http_app("beta")) as beta:
        path.write_text(json.dumps(document({"alpha": alpha}, port=port, reload={"watch": False})))
        env = {k: v for k, v in os.environ.items() if not k.startswith("MANIFOLD_")}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hub", "serve", "--config", str(path), "--log-level", "info", cwd=ROOT, env=env,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert process.stderr is not None

        async def logged(text: str) -> None:
            assert process.stderr is not None
            async with asyncio.timeout(WAIT):
                while text not in (line := (await process.stderr.readline()).decode()):
                    assert line, f"the hub exited before logging {text!r}"

        try:
            await logged("Uvicorn running")
            path.write_text(json.dumps(document({"alpha": alpha, "beta": beta}, port=port, reload={"watch": False})))
            process.send_signal(signal.SIGHUP)
            await logged("reloaded (SIGHUP): upstreams added ['beta']")
            async with httpx.AsyncClient(timeout=WAIT, trust_env=False) as http:
                health = await http.get(f"http://127.0.0.1:{port}/health", headers={"authorization": f"Bearer {ADMIN}"})
            assert {u["name"] for u in health.json()["upstreams"]} == {"alpha", "beta"}
            assert process.returncode is None  # SIGHUP did not stop it
        finally:
            process.terminate()
            await asyncio.wait_for(process.communicate(), WAIT)
