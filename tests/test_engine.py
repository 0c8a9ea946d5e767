"""The JSON-RPC engine driven by an in-memory transport: no HTTP anywhere.

:class:`FakeTransport` plays an upstream: it answers ``initialize`` itself and
hands every other message to the test, which replies through the engine's
link as a real transport would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from connectors import jsonrpc
from connectors.engine import CallHooks, Connector
from connectors.errors import UpstreamRpcError, UpstreamSessionExpired, UpstreamTimeout, UpstreamUnavailable
from connectors.jsonrpc import Message
from connectors.spec import UpstreamSpec
from connectors.transport import Link

pytestmark = pytest.mark.anyio

WAIT = 5.0
SPEC = UpstreamSpec(name="fake", url="fake://", connect_timeout=2, request_timeout=2)


class FakeTransport:
    """An upstream in memory; ``answer`` decides what to do with each message after the handshake."""

    def __init__(self, answer: Callable[[FakeTransport, Message], None] | None = None) -> None:
        self.answer = answer
        self.link: Link | None = None
        self.sent: list[Message] = []
        self.arrived = asyncio.Event()
        self.sessions = 0
        self.forget_next = False
        self.closed = False
        self.init_delay: asyncio.Event | None = None

    async def open(self, link: Link) -> None:
        self.link = link

    async def opened(self) -> None:
        pass

    def reset(self) -> None:
        pass

    async def close(self) -> None:
        self.closed = True

    async def send(self, message: Message) -> None:
        self.sent.append(message)
        self.arrived.set()
        assert self.link is not None
        if message.get("method") == "initialize":
            if self.init_delay is not None:
                await self.init_delay.wait()
            self.sessions += 1
            result = {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": {"name": "f"}}
            self.link.deliver(jsonrpc.response(message["id"], result))
            return
        if self.forget_next and "id" in message and "method" in message:
            self.forget_next = False
            raise UpstreamSessionExpired("fake", "forgot")
        if self.answer is not None:
            self.answer(self, message)

    def requests(self, method: str) -> list[Message]:
        return [m for m in self.sent if m.get("method") == method]

    def reply(self, message: Message, result: Any, via: int | None = None) -> None:
        assert self.link is not None
        self.link.deliver(jsonrpc.response(message["id"], result), via)


def echo(transport: FakeTransport, message: Message) -> None:
    if "id" in message and "method" in message:
        params = {k: v for k, v in (message.get("params") or {}).items() if k != "_meta"}
        transport.reply(message, {"echo": params})


async def until(condition: Callable[[], bool], transport: FakeTransport) -> None:
    async with asyncio.timeout(WAIT):
        while not condition():
            transport.arrived.clear()
            await transport.arrived.wait()


async def test_the_handshake_and_a_request_go_through_the_transport_with_no_http() -> None:
    transport = FakeTransport(echo)
    async with Connector(SPEC, transport, capabilities={"sampling": {}}) as connector:
        assert connector.protocol_version == "2025-11-25"
        assert connector.server_info == {"name": "f"}
        assert await connector.request("tools/call", {"name": "x"}) == {"echo": {"name": "x"}}
    init = transport.requests("initialize")[0]
    assert init["params"]["capabilities"] == {"sampling": {}}
    assert [m["method"] for m in transport.sent[:2]] == ["initialize", "notifications/initialized"]
    assert transport.closed


async def test_concurrent_requests_are_matched_to_their_waiters_by_id() -> None:
    def reversed_order(transport: FakeTransport, message: Message) -> None:
        if len(transport.requests("tools/call")) == 3:
            for pending in reversed(transport.requests("tools/call")):
                transport.reply(pending, {"n": pending["params"]["n"]})

    async with Connector(SPEC, FakeTransport(reversed_order)) as connector:
        results = await asyncio.gather(*(connector.request("tools/call", {"n": n}) for n in range(3)))
    assert results == [{"n": 0}, {"n": 1}, {"n": 2}]


async def test_progress_comes_back_with_the_callers_token_and_moves_the_deadline() -> None:
    seen: list[Message] = []

    async def drive(transport: FakeTransport, connector: Connector) -> None:
        await until(lambda: bool(transport.requests("tools/call")), transport)
        call = transport.requests("tools/call")[0]
        ours = call["params"]["_meta"]["progressToken"]
        assert ours != "client-token"
        assert transport.link is not None
        for step in range(1, 6):  # 5 x 0.1 s of progress: longer than the 0.25 s request timeout
            await asyncio.sleep(0.1)
            note = jsonrpc.notification("notifications/progress", {"progressToken": ours, "progress": step})
            transport.link.deliver(note, call["id"])
        transport.reply(call, {"done": True})

    transport = FakeTransport()
    spec = UpstreamSpec(name="fake", url="fake://", request_timeout=0.25, max_total=5)
    async with Connector(spec, transport) as connector:
        driver = asyncio.create_task(drive(transport, connector))
        params = {"name": "p", "_meta": {"progressToken": "client-token"}}
        result = await connector.request("tools/call", params, hooks=CallHooks(progress=seen.append))
        await driver
    assert result == {"done": True}
    assert [p["progress"] for p in seen] == [1, 2, 3, 4, 5]
    assert {p["progressToken"] for p in seen} == {"client-token"}


async def test_a_tool_call_asks_for_progress_itself_so_that_progress_keeps_it_alive() -> None:
    async def drive(transport: FakeTransport) -> None:
        await until(lambda: bool(transport.requests("tools/call")), transport)
        call = transport.requests("tools/call")[0]
        ours = call["params"]["_meta"]["progressToken"]
        assert transport.link is not None
        for step in range(1, 5):
            await asyncio.sleep(0.1)
            transport.link.deliver(
                jsonrpc.notification("notifications/progress", {"progressToken": ours, "progress": step})
            )
        transport.reply(call, {"done": True})

    transport = FakeTransport()
    spec = UpstreamSpec(name="fake", url="fake://", request_timeout=0.25, max_total=5)
    seen: list[Message] = []
    async with Connector(spec, transport) as connector:
        driver = asyncio.create_task(drive(transport))
        result = await connector.request("tools/call", {"name": "p"}, hooks=CallHooks(progress=seen.append))
        await driver
    assert result == {"done": True}
    assert seen == []  # the client did not ask for progress: none reaches it


async def test_a_silent_request_times_out_and_is_cancelled_upstream() -> None:
    transport = FakeTransport()
    async with Connector(SPEC, transport) as connector:
        with pytest.raises(UpstreamTimeout, match=r"upstream 'fake': no answer to tools/call within 0\.1s"):
            await connector.request("tools/call", {}, time_limit=0.1)
    call = transport.requests("tools/call")[0]
    assert transport.requests("notifications/cancelled") == [
        {
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": call["id"], "reason": "cancelled by the client"},
        }
    ]


async def test_initialize_is_never_cancelled_even_when_the_handshake_times_out() -> None:
    transport = FakeTransport()
    transport.init_delay = asyncio.Event()  # never set: the upstream never answers initialize
    spec = UpstreamSpec(name="fake", url="fake://", connect_timeout=0.1)
    with pytest.raises(UpstreamUnavailable, match=r"no handshake within 0\.1s"):
        async with Connector(spec, transport):
            pass
    assert transport.requests("notifications/cancelled") == []
    assert transport.closed


async def test_an_rpc_error_comes_back_with_the_upstreams_own_code() -> None:
    def refuse(transport: FakeTransport, message: Message) -> None:
        assert transport.link is not None
        if "id" not in message:
            return
        error = {"code": -32602, "message": "no such thing"}
        transport.link.deliver(jsonrpc.error_response(message["id"], error))

    async with Connector(SPEC, FakeTransport(refuse)) as connector:
        with pytest.raises(UpstreamRpcError) as caught:
            await connector.request("tools/call")
    assert caught.value.to_error() == {"code": -32602, "message": "no such thing"}


async def test_list_changed_reaches_the_catalog_whatever_stream_carried_it() -> None:
    changed: list[Message] = []
    other: list[Message] = []

    def on_a_call_stream(transport: FakeTransport, message: Message) -> None:
        if message.get("method") == "tools/call":
            assert transport.link is not None
            transport.link.deliver(jsonrpc.notification("notifications/tools/list_changed"), message["id"])
            transport.link.deliver(jsonrpc.notification("notifications/message", {"data": "x"}), message["id"])
            transport.reply(message, {})

    async with Connector(SPEC, FakeTransport(on_a_call_stream), on_list_changed=changed.append) as connector:
        await connector.request("tools/call", hooks=CallHooks(message=other.append))
    assert [m["method"] for m in changed] == ["notifications/tools/list_changed"]
    assert [m["method"] for m in other] == ["notifications/message"]  # the call's own messages stay with it


async def test_a_request_from_the_upstream_is_answered_by_the_calls_hook() -> None:
    def ask(transport: FakeTransport, message: Message) -> None:
        assert transport.link is not None
        if message.get("method") == "tools/call":
            transport.link.deliver(jsonrpc.request("s1", "roots/list"), message["id"])
        elif message.get("id") == "s1":  # our answer to its question: now the call's reply
            call = transport.requests("tools/call")[0]
            transport.reply(call, {"roots": message["result"]})

    async def roots(message: Message) -> Message:
        return {"roots": [{"uri": "file:///r"}]}

    async with Connector(SPEC, FakeTransport(ask)) as connector:
        result = await connector.request("tools/call", hooks=CallHooks(request=roots))
    assert result == {"roots": {"roots": [{"uri": "file:///r"}]}}


async def test_a_forgotten_session_is_opened_again_once_and_its_state_repeated() -> None:
    transport = FakeTransport(echo)
    async with Connector(SPEC, transport) as connector:
        await connector.request("logging/setLevel", {"level": "error"})
        transport.forget_next = True
        assert await connector.request("tools/call", {"n": 1}) == {"echo": {"n": 1}}
    assert transport.sessions == 2
    assert len(transport.requests("logging/setLevel")) == 2  # repeated on the new session


async def test_a_lost_session_fails_every_waiter_and_every_later_request_naming_the_upstream() -> None:
    transport = FakeTransport()
    async with Connector(SPEC, transport) as connector:
        waiting = asyncio.create_task(connector.request("tools/call"))
        await until(lambda: bool(transport.requests("tools/call")), transport)
        connector.lost("the process died")
        with pytest.raises(UpstreamUnavailable, match=r"upstream 'fake': connection lost \(the process died\)"):
            await waiting
        with pytest.raises(UpstreamUnavailable, match="connection lost"):
            await connector.request("ping")
        assert connector.is_lost
