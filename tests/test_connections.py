"""Upstream connections are bounded and shared, on real sockets on 127.0.0.1.

Counted on the upstream's side: uvicorn's set of open connections, and a wrapper around the
upstream app that records every GET stream (whose session, and whether it is still open).
The hub runs in this process too, so this process's file descriptors are the hub's.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import mcp_types as types
import pytest
import uvicorn
from mcp import Client
from mcp.client import ClientRequestContext
from starlette.types import ASGIApp, Receive, Scope, Send

from connectors.clients import HttpClients, UpstreamClients
from connectors.engine import Connector
from connectors.http1 import Http1Pool
from connectors.jsonrpc import Message
from connectors.spec import UpstreamSpec
from connectors.streamable_http import StreamableHttpTransport
from tests.polling import until
from tests.servers import START_DEADLINE, _Server, reserve_port, run_hub
from tests.upstreams import Probe, http_app, sse_app
from tests.wire import HEADERS, INIT, initialize, rpc, sse_messages

pytestmark = pytest.mark.anyio

WAIT = 10.0
ROOTS = {"roots": [{"uri": "file:///work", "name": "work"}]}


@dataclass
class GetStream:
    session: str
    open: bool = True


@dataclass
class StreamCounter:
    """Wraps an upstream app; records its GET streams and the order of GETs and POSTs."""

    app: ASGIApp
    streams: list[GetStream] = field(default_factory=list)
    arrivals: list[tuple[str, str]] = field(default_factory=list)  # (method, session id)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "POST"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        session = headers.get("mcp-session-id", "")
        self.arrivals.append((scope["method"], session))
        if scope["method"] == "POST":
            await self.app(scope, receive, send)
            return
        stream = GetStream(session)
        self.streams.append(stream)
        try:
            await self.app(scope, receive, send)
        finally:
            stream.open = False

    @property
    def gets(self) -> int:
        return len(self.streams)

    @property
    def open(self) -> int:
        return sum(stream.open for stream in self.streams)

    def of(self, session: str) -> list[GetStream]:
        return [stream for stream in self.streams if stream.session == session]


@asynccontextmanager
async def served(app: ASGIApp) -> AsyncIterator[tuple[str, _Server]]:
    """Like :func:`tests.servers.serve`, but yields the uvicorn server too (to count its connections)."""
    sock = reserve_port()
    port = sock.getsockname()[1]
    server = _Server(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    ready = asyncio.create_task(server.ready.wait())
    await asyncio.wait({task, ready}, timeout=START_DEADLINE, return_when=asyncio.FIRST_COMPLETED)
    if not server.ready.is_set():
        ready.cancel()
        task.cancel()
        sock.close()
        raise RuntimeError("server did not start")
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        try:
            await asyncio.wait_for(task, timeout=START_DEADLINE)
        finally:
            sock.close()


def connections(server: _Server) -> int:
    return len(server.server_state.connections)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def reply_of(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC reply in a hub response (a JSON body, or the last message of an SSE one)."""
    assert response.status_code == 200, response.text
    if response.headers["content-type"].startswith("application/json"):
        message: dict[str, Any] = response.json()
        return message
    return sse_messages(response.text)[-1]


async def echo(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], request_id: int, text: str, tool: str = "alpha__echo"
) -> str:
    params = {"name": tool, "arguments": {"text": text}}
    message = reply_of(await http.post(url, json=rpc(request_id, "tools/call", params), headers=headers))
    assert "result" in message, message
    return str(message["result"]["content"][0]["text"])


# -- 500 sessions on one Streamable HTTP upstream ---------------------------------------------------

SESSIONS = 500
CONCURRENCY = 8
STREAMS = 20
PARALLEL = 32  # client requests in flight at once
SAMPLE_EVERY = 5  # a second call to every fifth session (to all of them would add 7 s)
DISCOVERY = 2  # the discovery session's GET stream (outside the budget), and one to spare


class HubWire:
    """Raw JSON-RPC to the hub over at most ``PARALLEL`` keep-alive connections.

    It uses the hub's own small HTTP/1.1 client: httpx would spend more CPU than the hub and
    the upstream together on 500 sessions, all in this one process.
    """

    def __init__(self, url: str) -> None:
        self.pool = Http1Pool(url, idle_limit=PARALLEL, connect_timeout=WAIT)
        self.gate = asyncio.Semaphore(PARALLEL)

    async def post(self, headers: dict[str, str], message: Message) -> tuple[dict[str, str], Message]:
        async with self.gate, asyncio.timeout(WAIT):
            response = await self.pool.post(headers, json.dumps(message).encode())
            try:
                body = await response.read()
            finally:
                response.release()
        assert response.status == 200, body
        if response.headers["content-type"].startswith("application/json"):
            reply: Message = json.loads(body)
        else:
            reply = sse_messages(body.decode())[-1]
        return response.headers, reply

    async def initialize(self) -> dict[str, str]:
        headers, reply = await self.post(HEADERS, rpc(1, "initialize", INIT))
        assert "result" in reply, reply
        return {**HEADERS, "mcp-session-id": headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}

    async def echo(self, headers: dict[str, str], request_id: int, text: str) -> str:
        params = {"name": "alpha__echo", "arguments": {"text": text}}
        _, reply = await self.post(headers, rpc(request_id, "tools/call", params))
        assert "result" in reply, reply
        return str(reply["result"]["content"][0]["text"])


async def test_500_idle_sessions_hold_a_bounded_set_of_upstream_connections_and_all_keep_working() -> None:
    counter = StreamCounter(http_app("alpha"))
    async with AsyncExitStack() as stack:
        base, upstream = await stack.enter_async_context(served(counter))
        servers = {"alpha": {"url": f"{base}/mcp", "maxConcurrency": CONCURRENCY, "maxStreams": STREAMS}}
        url, hub = await stack.enter_async_context(run_hub(servers, maxSessions=1000))
        wire = HubWire(url)
        stack.callback(wire.pool.close)
        alpha = hub.pool.upstream("alpha")
        assert alpha is not None
        bound = STREAMS + CONCURRENCY + 4 + DISCOVERY
        fds_before = open_fds()

        async def first_use(index: int) -> dict[str, str]:
            headers = await wire.initialize()
            assert await wire.echo(headers, 2, f"s{index}") == f"alpha: s{index}"
            return headers

        async def second_use(index: int, headers: dict[str, str]) -> None:
            assert await wire.echo(headers, 3, f"again {index}") == f"alpha: again {index}"

        sessions = await asyncio.wait_for(asyncio.gather(*(first_use(i) for i in range(SESSIONS))), 60)
        # Every session opened a GET stream; all but STREAMS of them were evicted to make room.
        assert counter.gets == 1 + SESSIONS  # the discovery session's, outside the budget, and one each
        await until(lambda: counter.open == STREAMS + 1, "the evicted GET streams closed at the upstream")
        await until(lambda: connections(upstream) <= bound, f"at most {bound} upstream connections")
        assert len(alpha.clients.streams) == STREAMS

        # Idle sessions, evicted or not, answer again; each evicted one reopens its GET stream first.
        sample = [(i, sessions[i]) for i in range(0, SESSIONS, SAMPLE_EVERY)]
        gets_before = counter.gets
        await asyncio.wait_for(asyncio.gather(*(second_use(i, h) for i, h in sample)), 60)
        assert counter.gets - gets_before >= len(sample) - STREAMS
        await until(lambda: counter.open == STREAMS + 1, "GET streams back within maxStreams")
        await until(lambda: connections(upstream) <= bound, f"at most {bound} upstream connections")
        # Each connection the hub holds to the upstream has its twin here (the upstream's end), and
        # so does each of the client's keep-alive connections to the hub.
        grown = open_fds() - fds_before
        assert grown <= 2 * (bound + PARALLEL) + 8, f"{grown} more file descriptors for {SESSIONS} sessions"


# -- relayed requests that belong to no call --------------------------------------------------------


async def test_a_session_whose_get_stream_was_evicted_still_gets_the_roots_request_of_its_next_call() -> None:
    async def roots(context: ClientRequestContext) -> types.ListRootsResult:
        return types.ListRootsResult.model_validate(ROOTS)

    counter = StreamCounter(http_app("alpha"))
    async with AsyncExitStack() as stack:
        base, _ = await stack.enter_async_context(served(counter))
        url, _hub = await stack.enter_async_context(run_hub({"alpha": {"url": f"{base}/mcp", "maxStreams": 2}}))
        client = await stack.enter_async_context(Client(url, mode="legacy", list_roots_callback=roots))
        assert text_of(await client.call_tool("alpha__client_roots", {})) == "file:///work"
        discovery, mine = counter.streams[0].session, counter.streams[-1].session
        assert mine != discovery and counter.open == 2
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=WAIT, trust_env=False))
        for index in range(3):  # newer sessions take the two places; the least recently active makes room
            headers = await initialize(http, url)
            assert await echo(http, url, headers, 2, f"other {index}") == f"alpha: other {index}"
        await until(lambda: counter.open == 3, "two GET streams in the budget, and discovery's")
        assert not any(stream.open for stream in counter.of(mine))  # the SDK session's was evicted

        mark = len(counter.arrivals)
        # The upstream sends its roots request on the GET stream, so this works only if it was reopened first.
        assert text_of(await client.call_tool("alpha__client_roots", {})) == "file:///work"
        assert next(arrival for arrival in counter.arrivals[mark:] if arrival[1] == mine) == ("GET", mine)
        assert len(counter.of(mine)) == 2 and counter.of(mine)[-1].open


def text_of(result: types.CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


# -- legacy HTTP+SSE: the stream is the session -----------------------------------------------------

SSE_STREAMS = 5
SSE_SESSIONS = 12
SSE_CONCURRENCY = 4


async def test_a_legacy_sse_upstream_holds_at_most_max_streams_and_evicted_sessions_reopen() -> None:
    counter = StreamCounter(sse_app("beta"))
    async with AsyncExitStack() as stack:
        base, upstream = await stack.enter_async_context(served(counter))
        spec = {"url": f"{base}/sse", "type": "sse", "maxStreams": SSE_STREAMS, "maxConcurrency": SSE_CONCURRENCY}
        url, hub = await stack.enter_async_context(run_hub({"beta": spec}))
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=WAIT, trust_env=False))
        bound = SSE_STREAMS + 1 + SSE_CONCURRENCY + 4  # the budget, discovery's stream, idle POST connections

        hub_streams = hub.pool.upstream("beta")
        assert hub_streams is not None

        async def call(headers: dict[str, str], request_id: int, text: str) -> str:
            return await echo(http, url, headers, request_id, text, tool="beta__echo")

        sessions = []
        for index in range(SSE_SESSIONS):
            headers = await initialize(http, url)
            assert await call(headers, 2, f"s{index}") == f"beta: s{index}"
            sessions.append(headers)
            await until(lambda: counter.open <= SSE_STREAMS + 1, "at most maxStreams event streams (and discovery's)")
            await until(lambda: connections(upstream) <= bound, f"at most {bound} upstream connections")
            assert len(hub_streams.clients.streams) == min(index + 1, SSE_STREAMS)
        assert counter.gets == 1 + SSE_SESSIONS and counter.open == SSE_STREAMS + 1

        for index, headers in enumerate(sessions):
            assert await call(headers, 3, f"again {index}") == f"beta: again {index}"
            await until(lambda: counter.open <= SSE_STREAMS + 1, "at most maxStreams event streams (and discovery's)")
        # Least recently active first: every session had lost its stream by its turn, and opened a new one.
        assert counter.gets == 1 + 2 * SSE_SESSIONS
        assert counter.open == SSE_STREAMS + 1
        await until(lambda: connections(upstream) <= bound, f"at most {bound} upstream connections")


async def test_a_legacy_sse_session_holding_a_subscription_keeps_it_upstream_when_others_need_room() -> None:
    probe = Probe()
    counter = StreamCounter(sse_app("beta", probe))
    async with AsyncExitStack() as stack:
        base, _ = await stack.enter_async_context(served(counter))
        url, _hub = await stack.enter_async_context(
            run_hub({"beta": {"url": f"{base}/sse", "type": "sse", "maxStreams": 1}})
        )
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=WAIT, trust_env=False))
        subscriber = await initialize(http, url)
        subscribe = rpc(2, "resources/subscribe", {"uri": "manifold://beta/file:///readme.txt"})
        assert "result" in reply_of(await http.post(url, json=subscribe, headers=subscriber))
        assert probe.subscribed == ["file:///readme.txt"]

        other = await initialize(http, url)
        params = {"name": "beta__echo", "arguments": {"text": "newcomer"}}
        other_reply = reply_of(await http.post(url, json=rpc(2, "tools/call", params), headers=other))
        assert await echo(http, url, subscriber, 3, "still here", tool="beta__echo") == "beta: still here"
        # Either the subscriber kept its stream (and the newcomer was told the upstream is full), or
        # every upstream session opened for it was told of its subscription: else updates stop for good.
        others = 1 if "result" in other_reply else 0
        subscriber_streams = counter.gets - 1 - others
        assert len(probe.subscribed) == subscriber_streams, (counter.gets, probe.subscribed, other_reply)


# -- the linger, at the transport ------------------------------------------------------------------

LINGER = 0.2


async def answer_roots(message: Message) -> Message:
    return ROOTS


@asynccontextmanager
async def linger_upstream(capacity: int = 10) -> AsyncIterator[tuple[StreamCounter, UpstreamSpec, UpstreamClients]]:
    """A counted SDK upstream, and the clients the pool would give it (``capacity`` GET streams)."""
    counter = StreamCounter(http_app("alpha"))
    async with served(counter) as (base, _):
        spec = UpstreamSpec(name="alpha", url=f"{base}/mcp", max_streams=capacity)
        clients = HttpClients().for_upstream(spec)
        try:
            yield counter, spec, clients
        finally:
            await clients.aclose()


def isolated(
    spec: UpstreamSpec, clients: UpstreamClients, messages: list[Message] | None = None
) -> tuple[Connector, StreamableHttpTransport]:
    """An isolated session as the hub opens them for clients, but lingering ``LINGER`` seconds."""
    assert clients.posts is not None
    transport = StreamableHttpTransport(
        spec, clients.http, clients.posts, streams=clients.streams, persistent=False, linger=LINGER
    )
    connector = Connector(
        spec,
        transport,
        capabilities={"roots": {"listChanged": True}},
        on_request=answer_roots,
        on_message=messages.append if messages is not None else None,
    )
    return connector, transport


def listens(transport: StreamableHttpTransport) -> bool:
    return transport.listening  # read through a call, so the type checker does not pin its value


def result_text(result: Message) -> str:
    return str(result["content"][0]["text"])


async def test_a_quiet_sessions_get_stream_closes_after_the_linger_and_reopens_before_its_next_request() -> None:
    async with linger_upstream() as (counter, spec, clients):
        connector, transport = isolated(spec, clients)
        async with connector:
            session = counter.streams[0].session
            assert listens(transport) and counter.open == 1 and len(clients.streams) == 1
            echoed = await connector.request("tools/call", {"name": "echo", "arguments": {"text": "hi"}})
            assert result_text(echoed) == "alpha: hi"
            loop = asyncio.get_running_loop()
            await until(lambda: counter.open == 0, "the GET stream closed after the linger")
            assert loop.time() - transport.last_active >= LINGER
            assert not listens(transport) and len(clients.streams) == 0

            mark = len(counter.arrivals)
            # The roots request comes on the GET stream: the call succeeds only if it was open first.
            roots = await connector.request("tools/call", {"name": "client_roots", "arguments": {}})
            assert result_text(roots) == "file:///work"
            assert counter.arrivals[mark] == ("GET", session)
            assert len(counter.of(session)) == 2
            await until(lambda: counter.open == 0, "the reopened GET stream lingered out too")


async def test_a_session_with_a_subscription_keeps_its_get_stream_past_the_linger() -> None:
    async with linger_upstream() as (counter, spec, clients):
        messages: list[Message] = []
        subscriber, subscriber_transport = isolated(spec, clients, messages)
        other, _ = isolated(spec, clients)
        async with subscriber, other:
            mine, theirs = counter.streams[0].session, counter.streams[1].session
            await subscriber.request("resources/subscribe", {"uri": "file:///readme.txt"})
            # The other session is active later, so its linger ends later than the subscriber's would.
            await other.request("tools/call", {"name": "echo", "arguments": {"text": "later"}})
            await until(lambda: not counter.of(theirs)[-1].open, "the other session's stream lingered out")
            assert listens(subscriber_transport)
            assert len(counter.of(mine)) == 1 and counter.of(mine)[0].open

            await subscriber.request("tools/call", {"name": "touch", "arguments": {"uri": "file:///readme.txt"}})
            await until(lambda: any(m["method"] == "notifications/resources/updated" for m in messages), "the update")
            assert len(counter.of(mine)) == 1  # the same stream carried it

            await subscriber.request("resources/unsubscribe", {"uri": "file:///readme.txt"})
            await until(lambda: not counter.of(mine)[0].open, "the stream lingers out once unsubscribed")


async def test_a_session_with_a_subscription_is_not_evicted_to_make_room() -> None:
    async with linger_upstream(capacity=1) as (counter, spec, clients):
        subscriber, subscriber_transport = isolated(spec, clients)
        async with subscriber:
            mine = counter.streams[0].session
            await subscriber.request("resources/subscribe", {"uri": "file:///readme.txt"})
            other, _ = isolated(spec, clients)
            async with other:
                await other.request("tools/call", {"name": "echo", "arguments": {"text": "newcomer"}})
                # Evicting the subscriber would silently lose its resource updates until its next request.
                assert listens(subscriber_transport)
                assert counter.of(mine)[0].open
