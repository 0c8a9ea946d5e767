"""The Streamable HTTP transport under the engine, against scripted upstreams and a real SDK server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from connectors import jsonrpc
from connectors.engine import CallHooks, Connector
from connectors.errors import (
    UpstreamProtocolError,
    UpstreamRpcError,
    UpstreamSessionExpired,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from connectors.spec import UpstreamSpec
from connectors.streamable_http import StreamableHttpTransport
from tests.polling import until
from tests.scripted import Script, connected, reply, scripted
from tests.servers import reserve_port, serve
from tests.upstreams import http_app

pytestmark = pytest.mark.anyio

WAIT = 10.0


async def test_handshake_then_session_and_version_headers_on_every_request() -> None:
    script = Script()
    async with scripted(script) as upstream:
        assert upstream.protocol_version == "2025-06-18"
        assert await upstream.request("tools/list") == {"ok": True}
    assert script.methods() == ["initialize", "notifications/initialized", "tools/list"]
    init_headers = script.received[0][1]
    assert "mcp-session-id" not in init_headers
    assert init_headers["authorization"] == "Bearer s3cret"
    headers = script.received[2][1]
    assert headers["mcp-session-id"] == "s1"
    assert headers["mcp-protocol-version"] == "2025-06-18"


async def test_a_forgotten_session_is_initialized_again_once_and_the_request_retried() -> None:
    async def forget_first(message: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
        if headers["mcp-session-id"] == "s1":
            return httpx.Response(404)
        return httpx.Response(200, json=reply(message, {"session": headers["mcp-session-id"]}))

    script = Script(forget_first)
    async with scripted(script) as upstream:
        assert await upstream.request("tools/call", {"name": "x"}) == {"session": "s2"}
    assert script.sessions == 2


async def test_an_upstream_that_keeps_forgetting_is_not_retried_forever() -> None:
    async def always_404(message: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
        return httpx.Response(404)

    script = Script(always_404)
    async with scripted(script) as upstream:
        with pytest.raises(UpstreamSessionExpired):
            await upstream.request("tools/list")
    assert script.sessions == 2


async def test_sse_replies_deliver_progress_with_the_callers_token_before_the_result() -> None:
    async def stream(message: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
        token = message["params"]["_meta"]["progressToken"]
        events = [
            {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": token, "progress": i}}
            for i in (1, 2, 3)
        ]
        events.append(reply(message, {"done": True}))
        body = b"".join(b"event: message\ndata: " + json.dumps(e).encode() + b"\n\n" for e in events)
        return httpx.Response(200, content=b"id: 0\ndata:\n\n" + body, headers={"content-type": "text/event-stream"})

    seen: list[dict[str, Any]] = []
    async with scripted(Script(stream)) as upstream:
        result = await upstream.request(
            "tools/call", {"name": "p", "_meta": {"progressToken": 42}}, hooks=CallHooks(progress=seen.append)
        )
    assert result == {"done": True}
    assert [p["progress"] for p in seen] == [1, 2, 3]
    assert all(p["progressToken"] == 42 for p in seen)


async def test_the_callers_progress_token_is_never_sent_upstream() -> None:
    script = Script()
    async with scripted(script) as upstream:
        await upstream.request(
            "tools/call", {"name": "p", "_meta": {"progressToken": "client-1"}}, hooks=CallHooks(progress=print)
        )
    sent = script.received[-1][0]["params"]["_meta"]["progressToken"]
    assert sent != "client-1"


async def test_json_rpc_errors_come_back_as_rpc_errors_with_the_upstreams_code() -> None:
    async def refuse(message: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
        error = {"jsonrpc": "2.0", "id": message["id"], "error": {"code": -32602, "message": "bad args"}}
        return httpx.Response(400, json=error)

    async with scripted(Script(refuse)) as upstream:
        with pytest.raises(UpstreamRpcError) as caught:
            await upstream.request("tools/call")
    assert caught.value.to_error() == {"code": -32602, "message": "bad args"}


@pytest.mark.parametrize(
    ("status", "error", "text"),
    [
        (401, UpstreamUnavailable, "authentication failed"),
        (500, UpstreamUnavailable, "HTTP 500"),
        (405, UpstreamProtocolError, "HTTP 405"),
    ],
)
async def test_http_errors_name_the_upstream_and_hide_its_secrets(
    status: int, error: type[Exception], text: str
) -> None:
    async def fail(message: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
        return httpx.Response(status, text="nope")

    async with scripted(Script(fail)) as upstream:
        with pytest.raises(error) as caught:
            await upstream.request("tools/list")
    assert "upstream 'up'" in str(caught.value) and text in str(caught.value)
    assert "s3cret" not in str(caught.value)


async def test_unexpected_content_type_is_a_protocol_error() -> None:
    async def html(message: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
        return httpx.Response(200, text="<html>", headers={"content-type": "text/html"})

    async with scripted(Script(html)) as upstream:
        with pytest.raises(UpstreamProtocolError, match="text/html"):
            await upstream.request("tools/list")


async def test_an_unsupported_version_from_the_upstream_fails_the_handshake() -> None:
    old = Script(init_result={"protocolVersion": "2023-01-01", "capabilities": {}})
    with pytest.raises(UpstreamProtocolError, match="2023-01-01"):
        async with scripted(old):
            pass


async def test_a_request_past_its_deadline_times_out_and_is_cancelled_upstream() -> None:
    released = asyncio.Event()

    async def hang(message: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
        await asyncio.wait_for(released.wait(), 10)  # answers only once the test has seen the timeout
        return httpx.Response(200, json=reply(message, {"late": True}))

    script = Script(hang)
    async with scripted(script) as upstream:
        with pytest.raises(UpstreamTimeout, match="tools/call"):
            await upstream.request("tools/call", time_limit=0.05)
        released.set()
    cancelled = [m for m, _ in script.received if m.get("method") == "notifications/cancelled"]
    assert cancelled == [
        {
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": script.received[2][0]["id"], "reason": "cancelled by the client"},
        }
    ]


async def test_an_unreachable_upstream_is_unavailable() -> None:
    closed = reserve_port()
    spec = UpstreamSpec(name="up", url=f"http://127.0.0.1:{closed.getsockname()[1]}/mcp")
    try:
        with pytest.raises(UpstreamUnavailable, match=r"upstream 'up'.*Connection refused"):
            async with connected(spec):
                pass
    finally:
        closed.close()


async def test_concurrent_requests_over_one_real_session() -> None:
    async with serve(http_app("alpha")) as url:
        spec = UpstreamSpec(name="alpha", url=f"{url}/mcp")
        async with connected(spec) as upstream:
            calls = [upstream.request("tools/call", {"name": "echo", "arguments": {"text": str(i)}}) for i in range(20)]
            results = await asyncio.gather(*calls)
    assert [r["content"][0]["text"] for r in results] == [f"alpha: {i}" for i in range(20)]


class Forgetful(Script):
    """An upstream that forgets every session on demand, and holds the next initialize until told."""

    def __init__(self) -> None:
        super().__init__()
        self.known: set[str] = set()
        self.renewing = asyncio.Event()
        self.go = asyncio.Event()

    async def answer(self, method: str, headers: dict[str, str], body: bytes) -> httpx.Response:
        session = headers.get("mcp-session-id")
        if method == "POST" and b'"initialize"' in body:
            if self.sessions:
                self.renewing.set()
                await asyncio.wait_for(self.go.wait(), 10)
            response = await super().answer(method, headers, body)
            self.known.add(response.headers["mcp-session-id"])
            return response
        if method == "POST" and session not in self.known:
            return httpx.Response(404 if session else 400)
        return await super().answer(method, headers, body)


async def test_requests_during_a_session_renewal_wait_for_it_and_all_succeed() -> None:
    script = Forgetful()
    async with scripted(script) as upstream:
        script.known.clear()  # the upstream restarted
        first = asyncio.create_task(upstream.request("tools/call", {"name": "a"}))
        await asyncio.wait_for(script.renewing.wait(), WAIT)
        second = asyncio.create_task(upstream.request("tools/call", {"name": "b"}))
        script.go.set()
        assert list(await asyncio.wait_for(asyncio.gather(first, second), WAIT)) == [{"ok": True}, {"ok": True}]
    assert script.sessions == 2
    assert [h.get("mcp-session-id") for m, h in script.received if m.get("method") == "tools/call"][-2:] == ["s2", "s2"]


class SlowToListen(Forgetful):
    """A Forgetful upstream whose GET streams end at once (404), or once told when ``hold_get`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.hold_get = False
        self.gets = 0
        self.get_waiting = asyncio.Event()
        self.get_go = asyncio.Event()

    async def answer(self, method: str, headers: dict[str, str], body: bytes) -> httpx.Response:
        if method != "GET":
            return await super().answer(method, headers, body)
        self.gets += 1
        if self.hold_get:
            self.get_waiting.set()
            await asyncio.wait_for(self.get_go.wait(), 10)
        return httpx.Response(404)


async def listening_ended(upstream: Connector) -> StreamableHttpTransport:
    """The connector's transport, once the GET stream it opened at the start has ended (404)."""
    transport = upstream.transport
    assert isinstance(transport, StreamableHttpTransport)
    await until(lambda: not transport.listening, "the first GET stream ended")
    return transport


async def test_a_request_that_was_opening_its_stream_when_the_session_was_renewed_waits_for_the_new_one() -> None:
    # The first request passes the wait for a ready session, then opens the GET stream; while it
    # waits for that, the second finds the session forgotten and starts a new one. The first must
    # not go out with no session id (the upstream refuses that with 400): it waits for the new one.
    script = SlowToListen()
    async with scripted(script) as upstream:
        transport = await listening_ended(upstream)
        script.known.clear()  # the upstream restarted
        script.hold_get = True
        first = asyncio.create_task(upstream.request("tools/call", {"name": "a"}))
        await asyncio.wait_for(script.get_waiting.wait(), WAIT)
        second = asyncio.create_task(upstream.request("tools/call", {"name": "b"}))
        await asyncio.wait_for(script.renewing.wait(), WAIT)
        script.get_go.set()
        # The stream's end is what lets the first request go on: it has gone on once the stream is over.
        await until(lambda: not transport.listening, "the held GET stream ended")
        script.go.set()
        assert list(await asyncio.wait_for(asyncio.gather(first, second), WAIT)) == [{"ok": True}, {"ok": True}]
    sent = [h.get("mcp-session-id") for m, h in script.received if m.get("method") == "tools/call"]
    assert None not in sent
    assert sent[-2:] == ["s2", "s2"]


async def test_nothing_but_the_handshake_goes_out_on_a_session_being_opened_again() -> None:
    script = SlowToListen()  # it offers GET streams: a request would open one first
    async with scripted(script) as upstream:
        transport = await listening_ended(upstream)
        before, gets = len(script.received), script.gets
        transport.reset()  # what the engine does when the upstream forgot the session
        with pytest.raises(UpstreamSessionExpired):
            await transport.send(jsonrpc.request(99, "tools/call", {"name": "a"}))
        with pytest.raises(UpstreamSessionExpired):
            await transport.send(jsonrpc.notification("notifications/cancelled", {"requestId": 98}))
        # None reached the upstream without a session id, nor opened a GET stream for one.
        assert (len(script.received), script.gets) == (before, gets)
        assert not transport.listening


async def test_a_caller_that_gives_up_mid_renewal_does_not_leave_the_session_half_made() -> None:
    script = Forgetful()
    async with scripted(script) as upstream:
        script.known.clear()
        call = asyncio.create_task(upstream.request("tools/call", {"name": "a"}))
        await asyncio.wait_for(script.renewing.wait(), WAIT)
        call.cancel()
        await asyncio.gather(call, return_exceptions=True)
        script.go.set()
        assert await asyncio.wait_for(upstream.request("tools/call", {"name": "b"}), WAIT) == {"ok": True}
        assert not upstream.is_lost


async def test_session_state_is_applied_again_on_a_renewed_session() -> None:
    script = Forgetful()
    script.go.set()
    async with scripted(script) as upstream:
        await upstream.request("logging/setLevel", {"level": "error"})
        await upstream.request("resources/subscribe", {"uri": "file:///a"})
        await upstream.request("resources/subscribe", {"uri": "file:///b"})
        await upstream.request("resources/unsubscribe", {"uri": "file:///b"})
        script.known.clear()
        await asyncio.wait_for(upstream.request("tools/call", {"name": "a"}), WAIT)
    on_s2 = [(m["method"], m.get("params")) for m, h in script.received if h.get("mcp-session-id") == "s2"]
    assert ("logging/setLevel", {"level": "error"}) in on_s2
    assert ("resources/subscribe", {"uri": "file:///a"}) in on_s2
    assert ("resources/subscribe", {"uri": "file:///b"}) not in on_s2
