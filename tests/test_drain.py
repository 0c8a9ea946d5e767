"""The drain on SIGTERM, end to end: the hub as its own process (``python -m hub serve``) in front of an
SDK upstream served by the test, driven over real sockets on 127.0.0.1.

Every wait is on an event (a line of the hub's log, the upstream's probe, the process's exit) under a
deadline; every process started here is stopped by its pid in a ``finally``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client

from tests.hub_process import HubProcess, hub_serving
from tests.servers import reserve_port, serve
from tests.upstreams import Probe, http_app
from tests.wire import HEADERS, INIT, initialize, rpc, sse_messages

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
WAIT = 10.0
START_DEADLINE = 20.0
EXIT_MARGIN = 5.0  # seconds an exit may take past the drain's own deadline (uvicorn's shutdown, the store)
STOP_GRACE = 2.0  # what the hub gives calls it cut short to send their error (hub.runtime._STOP_GRACE)
AT_ONCE = 3.0  # "a second signal stops at once": well below any drain deadline used here


@asynccontextmanager
async def hub_process(tmp_path: Path, upstream: str, **hub_settings: Any) -> AsyncIterator[HubProcess]:
    """Run ``python -m hub serve`` in front of ``upstream`` (a base URL) until it listens; kill it after."""
    sock = reserve_port()
    port = sock.getsockname()[1]
    sock.close()  # the hub binds it next
    config = {
        "hub": {
            "port": port,
            "storage": str(tmp_path / "hub.db"),
            "reconnect": {"initialDelay": 0.05, "maxDelay": 0.2},
            **hub_settings,
        },
        "mcpServers": {"alpha": {"url": f"{upstream}/mcp"}},
    }
    path = tmp_path / "hub.json"
    path.write_text(json.dumps(config))
    async with hub_serving(path, port) as hub:
        yield hub


@asynccontextmanager
async def alpha(probe: Probe) -> AsyncIterator[str]:
    async with serve(http_app("alpha", probe)) as url:
        yield url


async def wait_for_event(event: asyncio.Event, what: str, within: float = WAIT) -> None:
    try:
        await asyncio.wait_for(event.wait(), within)
    except TimeoutError:
        raise AssertionError(f"{what} did not happen within {within}s") from None


def messages_of(response: httpx.Response) -> list[dict[str, Any]]:
    """Every JSON-RPC message of a POST's reply, whether JSON or an SSE stream."""
    if response.headers.get("content-type", "").startswith("application/json"):
        body = response.json()
        return [body] if isinstance(body, dict) else list(body)
    return sse_messages(response.text)


async def test_sigterm_lets_a_call_in_flight_finish_and_the_hub_exits_0_without_a_traceback(tmp_path: Path) -> None:
    probe = Probe()
    drain_timeout = 5.0
    async with alpha(probe) as upstream, hub_process(tmp_path, upstream, drainTimeout=drain_timeout) as hub:
        async with Client(hub.url) as client:
            tools = {tool.name for tool in (await client.list_tools()).tools}
            assert "alpha__slow" in tools
            call = asyncio.create_task(client.call_tool("alpha__slow", {"seconds": 1.0}))
            await wait_for_event(probe.slow_started, "the slow call reaching the upstream")
            signalled = hub.signal(signal.SIGTERM)
            result = await asyncio.wait_for(call, drain_timeout + EXIT_MARGIN)
            assert not result.is_error
            assert result.content[0].text == "slept"  # type: ignore[union-attr]
            code = await hub.exit_code(within=drain_timeout + EXIT_MARGIN - (time.monotonic() - signalled))
        assert code == 0
        log = await hub.log_complete()
        assert "draining" in log
        assert "drained" in log
        assert "Traceback" not in log, log


async def test_during_the_drain_a_new_session_gets_503_with_retry_after_and_existing_sessions_go_on(
    tmp_path: Path,
) -> None:
    probe = Probe()
    async with (
        alpha(probe) as upstream,
        hub_process(tmp_path, upstream, drainTimeout=10) as hub,
        httpx.AsyncClient(timeout=WAIT, trust_env=False) as http,
    ):
        session = await initialize(http, hub.url)
        await http.post(hub.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session)
        slow = rpc(7, "tools/call", {"name": "alpha__slow", "arguments": {"seconds": 2.0}})
        call = asyncio.create_task(http.post(hub.url, json=slow, headers=session))
        await wait_for_event(probe.slow_started, "the slow call reaching the upstream")
        signalled = hub.signal(signal.SIGTERM)
        await hub.logged("draining:")  # logged once the hub has stopped taking sessions

        refused = await http.post(hub.url, json=rpc(1, "initialize", INIT), headers=HEADERS)
        assert refused.status_code == 503, refused.text
        retry_after = refused.headers.get("retry-after")
        assert retry_after is not None and retry_after.isdigit() and int(retry_after) >= 1
        error = refused.json()["error"]
        assert error["code"] == -32000
        assert "shutting down" in error["message"]
        assert "mcp-session-id" not in refused.headers

        echo = await http.post(
            hub.url,
            json=rpc(8, "tools/call", {"name": "alpha__echo", "arguments": {"text": "still here"}}),
            headers=session,
        )
        assert echo.status_code == 200, echo.text
        assert messages_of(echo)[-1]["result"]["content"][0]["text"] == "alpha: still here"

        finished = await asyncio.wait_for(call, WAIT)
        replies = [m for m in messages_of(finished) if m.get("id") == 7]
        assert len(replies) == 1
        assert replies[0]["result"]["content"][0]["text"] == "slept"
        code = await hub.exit_code(within=10 + EXIT_MARGIN - (time.monotonic() - signalled))
    assert code == 0
    log = await hub.log_complete()
    assert "Traceback" not in log, log


async def test_a_call_still_running_at_the_drain_deadline_gets_exactly_one_shutting_down_error(tmp_path: Path) -> None:
    probe = Probe()
    drain_timeout = 1.0
    async with (
        alpha(probe) as upstream,
        hub_process(tmp_path, upstream, drainTimeout=drain_timeout) as hub,
        httpx.AsyncClient(timeout=WAIT + drain_timeout, trust_env=False) as http,
    ):
        session = await initialize(http, hub.url)
        await http.post(hub.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session)
        slow = rpc(9, "tools/call", {"name": "alpha__slow", "arguments": {"seconds": 30.0}})
        call = asyncio.create_task(http.post(hub.url, json=slow, headers=session))
        await wait_for_event(probe.slow_started, "the slow call reaching the upstream")
        signalled = hub.signal(signal.SIGTERM)

        response = await asyncio.wait_for(call, drain_timeout + STOP_GRACE + EXIT_MARGIN)
        answered = time.monotonic() - signalled
        assert response.status_code == 200, response.text
        replies = [m for m in messages_of(response) if "id" in m]
        assert len(replies) == 1, replies
        assert replies[0]["id"] == 9
        assert "result" not in replies[0]
        assert replies[0]["error"]["code"] == -32000
        assert "shutting down" in replies[0]["error"]["message"]
        assert drain_timeout - 0.2 <= answered <= drain_timeout + STOP_GRACE + 1.0

        code = await hub.exit_code(within=drain_timeout + STOP_GRACE + EXIT_MARGIN - answered)
    assert code == 0
    log = await hub.log_complete()
    assert "still running" in log
    assert "Traceback" not in log, log


async def test_a_second_signal_during_the_drain_stops_the_hub_at_once(tmp_path: Path) -> None:
    probe = Probe()
    drain_timeout = 30.0
    async with (
        alpha(probe) as upstream,
        hub_process(tmp_path, upstream, drainTimeout=drain_timeout) as hub,
        httpx.AsyncClient(timeout=WAIT, trust_env=False) as http,
    ):
        session = await initialize(http, hub.url)
        await http.post(hub.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session)
        slow = rpc(11, "tools/call", {"name": "alpha__slow", "arguments": {"seconds": 30.0}})
        call = asyncio.create_task(http.post(hub.url, json=slow, headers=session))
        try:
            await wait_for_event(probe.slow_started, "the slow call reaching the upstream")
            hub.signal(signal.SIGTERM)
            await hub.logged("draining:")
            again = hub.signal(signal.SIGTERM)
            code = await hub.exit_code(within=AT_ONCE + EXIT_MARGIN)
            stopped = time.monotonic() - again
        finally:
            call.cancel()
            with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                await call
    log = await hub.log_complete()
    assert stopped <= AT_ONCE, f"the second signal took {stopped:.1f}s to stop the hub:\n{log}"
    assert code == 0
    assert "Traceback" not in log, log
