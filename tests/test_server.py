"""The HTTP server's hardening, end to end: bad and hostile input against a hub on uvicorn with its limited
protocol (``hub.server.protocol_for``), over real sockets on 127.0.0.1, in front of an SDK upstream.

Each attack checks the refusal as the attacker sees it (status, JSON-RPC code), that nothing was logged
with a traceback, and that the hub still serves a normal client afterwards. The header and slow-client
attacks speak raw bytes over asyncio sockets, so that nothing between the test and the hub buffers,
completes or fixes the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from mcp import Client

from hub.runtime import Hub
from tests.servers import run_hub, serve
from tests.upstreams import http_app
from tests.wire import HEADERS, INIT, initialize, rpc, sse_messages

pytestmark = pytest.mark.anyio

WAIT = 10.0
READ_TIMEOUT = 0.5  # hub.requestReadTimeout of these hubs
MARGIN = 1.5  # seconds past a deadline of the hub's before the test calls it missed
MAX_HEADER_BYTES = 65536
MAX_HEADERS = 100
LIMITS: dict[str, Any] = {
    "maxHeaderBytes": MAX_HEADER_BYTES,
    "maxHeaders": MAX_HEADERS,
    "requestReadTimeout": READ_TIMEOUT,
}
CHUNK = 64 * 1024


# -- the hub, and a normal client of it ---------------------------------------------------------------


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    """An SDK upstream ('alpha', Streamable HTTP); yields its base URL."""
    async with serve(http_app("alpha")) as url:
        yield url


@asynccontextmanager
async def hub_for(upstream: str, **settings: Any) -> AsyncIterator[tuple[str, Hub]]:
    """A hub in front of ``upstream`` with this module's limits (``settings`` override them)."""
    async with run_hub({"alpha": {"url": f"{upstream}/mcp"}}, **{**LIMITS, **settings}) as served:
        yield served


def last_message(response: httpx.Response) -> dict[str, Any]:
    if response.headers.get("content-type", "").startswith("application/json"):
        body: dict[str, Any] = response.json()
        return body
    return sse_messages(response.text)[-1]


async def echo(http: httpx.AsyncClient, url: str, session: dict[str, str], text: str) -> str:
    """A tool call on ``session``; returns the tool's text. Raises AssertionError if it did not work."""
    response = await http.post(
        url, json=rpc(2, "tools/call", {"name": "alpha__echo", "arguments": {"text": text}}), headers=session
    )
    assert response.status_code == 200, response.text
    message = last_message(response)
    assert "result" in message, message
    text_out: str = message["result"]["content"][0]["text"]
    return text_out


async def open_session(http: httpx.AsyncClient, url: str) -> dict[str, str]:
    session = await initialize(http, url)
    notified = await http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session)
    assert notified.status_code == 202, notified.text
    return session


async def assert_still_serving(url: str) -> float:
    """A new client opens a session and calls a tool; returns how long that took."""
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=WAIT, trust_env=False) as http:
        session = await open_session(http, url)
        assert await echo(http, url, session, "still serving") == "alpha: still serving"
        health = await http.get(url.removesuffix("/mcp") + "/health")
        assert health.status_code == 200
    return time.monotonic() - started


class _Tracebacks(logging.Handler):
    """Keeps every record that is an error or carries a traceback, formatted whole."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        if record.exc_info or record.levelno >= logging.ERROR or "Traceback" in text:
            self.records.append(text)


@contextlib.contextmanager
def no_tracebacks() -> Iterator[None]:
    """Fail if anything inside logs an error or a traceback (the hub's loggers, uvicorn's, asyncio's).

    Entered once the servers run: uvicorn's config replaces the handlers of its own loggers.
    """
    handler = _Tracebacks()
    loggers = [logging.getLogger(), logging.getLogger("uvicorn"), logging.getLogger("uvicorn.error")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    assert not handler.records, "\n".join(handler.records)


# -- raw bytes on a socket ----------------------------------------------------------------------------


@dataclass
class RawReply:
    """What came back on a raw connection: the reply's head and body, and how the connection ended."""

    data: bytes = b""
    closed: bool = False
    """The hub closed the connection (FIN or reset)."""
    seconds: float = 0.0
    """From the start of the exchange to the reply (or to the close, when nothing came)."""

    @property
    def status(self) -> int | None:
        line = self.data.split(b"\r\n", 1)[0].split(b" ")
        return int(line[1]) if len(line) > 1 and line[0].startswith(b"HTTP/1.") and line[1].isdigit() else None

    @property
    def headers(self) -> dict[str, str]:
        head = self.data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
        return {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in head)}

    @property
    def body(self) -> bytes:
        """The body, de-chunked; what has come of it so far."""
        return self._decoded()[0]

    def complete(self) -> bool:
        if b"\r\n\r\n" not in self.data:
            return False
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            return self._decoded()[1]
        length = self.headers.get("content-length", "")
        return length.isdigit() and len(self.body) >= int(length)

    def _decoded(self) -> tuple[bytes, bool]:
        raw = self.data.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in self.data else b""
        if self.headers.get("transfer-encoding", "").lower() != "chunked":
            return raw, False
        body = b""
        for _ in range(len(raw) + 1):  # at most one chunk per byte
            size_line, found, rest = raw.partition(b"\r\n")
            if not found:
                break
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                return body, True
            body += rest[:size]
            raw = rest[size + 2 :]
        return body, False


@dataclass
class Sent:
    bytes: int = 0
    finished: bool = False
    """Everything was sent (the hub took the whole request before it answered)."""
    first: asyncio.Event = field(default_factory=asyncio.Event)


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


async def read_reply(reader: asyncio.StreamReader, started: float, within: float) -> RawReply:
    """Read until a whole reply came, the connection closed, or ``within`` seconds passed (then fail)."""
    reply = RawReply()
    try:
        async with asyncio.timeout(within):
            while not reply.complete():
                chunk = await reader.read(CHUNK)
                if not chunk:
                    reply.closed = True
                    break
                reply.data += chunk
    except (ConnectionResetError, BrokenPipeError):
        reply.closed = True
    except TimeoutError:
        raise AssertionError(f"no reply and no close within {within}s; got {reply.data[:200]!r}") from None
    reply.seconds = time.monotonic() - started
    return reply


async def send_all(writer: asyncio.StreamWriter, pieces: Iterable[bytes], sent: Sent, pause: float = 0.0) -> None:
    """Write ``pieces`` one by one (``pause`` seconds apart) until they run out or the hub stops listening."""
    try:
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            sent.bytes += len(piece)
            sent.first.set()
            if pause:
                await asyncio.sleep(pause)  # the attack's own pace, not a wait for anything
        sent.finished = True
    except (ConnectionResetError, BrokenPipeError):
        pass


async def exchange(
    url: str, pieces: Iterable[bytes], within: float, pause: float = 0.0, sent: Sent | None = None
) -> tuple[RawReply, Sent]:
    """Stream ``pieces`` to the hub while reading what it answers; stop sending once it answers or closes."""
    host, port = address(url)
    started = time.monotonic()
    reader, writer = await asyncio.open_connection(host, port)
    sent = sent or Sent()
    sender = asyncio.create_task(send_all(writer, pieces, sent, pause))
    try:
        reply = await read_reply(reader, started, within)
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return reply, sent


def request_head(method: str, path: str, url: str, extra: str = "") -> bytes:
    host, port = address(url)
    return (
        f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Accept: application/json, text/event-stream\r\nContent-Type: application/json\r\n" + extra
    ).encode()


def json_rpc_error(reply: RawReply) -> dict[str, Any]:
    message = json.loads(reply.body)
    assert isinstance(message, dict) and "error" in message, message
    error: dict[str, Any] = message["error"]
    return error


# -- Last-Event-ID and JSON nesting -------------------------------------------------------------------


async def test_a_last_event_id_of_5000_digits_gets_400_invalid_request(upstream: str) -> None:
    async with (
        hub_for(upstream) as (url, hub),
        httpx.AsyncClient(timeout=WAIT, trust_env=False) as http,
    ):
        session = await open_session(http, url)
        digits = "9" * 5000
        with no_tracebacks():
            for last_event_id in (digits, f"{hub.run}-{digits}-1", f"{hub.run}-0-{digits}", f"{hub.run}-{digits}"):
                response = await http.get(url, headers={**session, "last-event-id": last_event_id})
                assert response.status_code == 400, (last_event_id[:20], response.text)
                assert response.json()["error"]["code"] == -32600
                assert "Last-Event-ID" in response.json()["error"]["message"]
            assert await echo(http, url, session, "after") == "alpha: after"
            await assert_still_serving(url)


async def test_a_body_nested_300_levels_deep_in_arguments_gets_400_naming_the_nesting(upstream: str) -> None:
    async with (
        hub_for(upstream) as (url, _),
        httpx.AsyncClient(timeout=WAIT, trust_env=False) as http,
    ):
        session = await open_session(http, url)
        nested = "[" * 300 + "]" * 300
        body = (
            '{"jsonrpc": "2.0", "id": 5, "method": "tools/call", '
            f'"params": {{"name": "alpha__echo", "arguments": {{"text": {nested}}}}}}}'
        )
        assert json.loads(body)["params"]["name"] == "alpha__echo"  # valid JSON, only deep
        with no_tracebacks():
            response = await http.post(url, content=body.encode(), headers=session)
            assert response.status_code == 400, response.text
            error = response.json()["error"]
            assert error["code"] == -32600
            assert "nest" in error["message"].lower()
            assert await echo(http, url, session, "after") == "alpha: after"
            await assert_still_serving(url)


# -- headers past the limits --------------------------------------------------------------------------


def big_header(url: str, size: int, *, finish: bool) -> Iterator[bytes]:
    """A request with one header of ``size`` bytes, streamed in chunks; ``finish`` ends the request."""
    yield request_head("POST", "/mcp", url) + b"X-Big: "
    for _ in range(size // CHUNK):
        yield b"a" * CHUNK
    if finish:
        yield b"\r\nContent-Length: 2\r\n\r\n{}"


def many_headers(url: str, count: int) -> Iterator[bytes]:
    """A request with ``count`` small headers, streamed a thousand at a time."""
    yield request_head("POST", "/mcp", url)
    for start in range(0, count, 1000):
        yield b"".join(b"X-H%d: v\r\n" % i for i in range(start, min(start + 1000, count)))
    yield b"Content-Length: 2\r\n\r\n{}"


async def test_a_10_mb_header_gets_431(upstream: str) -> None:
    # A generous read timeout: this is about the size, not the time the 10 MB take to arrive.
    async with hub_for(upstream, requestReadTimeout=5.0) as (url, _):
        with no_tracebacks():
            reply, _ = await exchange(url, big_header(url, 10 * 1024 * 1024, finish=True), within=WAIT)
            assert reply.status == 431, reply.data[:300]
            assert b"larger than 65536 bytes" in reply.body
            await assert_still_serving(url)


async def test_a_header_still_arriving_is_refused_with_431_as_soon_as_it_passes_max_header_bytes(
    upstream: str,
) -> None:
    # The header never ends: a hub that waits for its end before counting holds all of it in memory
    # (10 MB here, as much as a client can send within requestReadTimeout in general).
    async with hub_for(upstream) as (url, _):
        with no_tracebacks():
            reply, sent = await exchange(url, big_header(url, 10 * 1024 * 1024, finish=False), within=WAIT)
            assert reply.status == 431, (sent.bytes, reply.data[:300])
            assert not sent.finished
            await assert_still_serving(url)


async def test_100000_headers_get_431(upstream: str) -> None:
    async with hub_for(upstream) as (url, _):
        with no_tracebacks():
            reply, _ = await exchange(url, many_headers(url, 100_000), within=WAIT)
            assert reply.status == 431, reply.data[:300]
            assert f"more than {MAX_HEADERS} request headers".encode() in reply.body
            await assert_still_serving(url)


# -- slow and silent clients --------------------------------------------------------------------------


def byte_by_byte(url: str) -> Iterator[bytes]:
    head = request_head("POST", "/mcp", url, "Content-Length: 2\r\n") + b"\r\n{}"
    for i in range(len(head)):
        yield head[i : i + 1]


async def test_headers_sent_byte_by_byte_slower_than_the_read_timeout_get_408_or_are_closed(upstream: str) -> None:
    pause = 0.05  # each byte arrives in good time; all of them together take far longer than READ_TIMEOUT
    async with hub_for(upstream) as (url, _):
        assert len(request_head("POST", "/mcp", url)) * pause > 4 * READ_TIMEOUT
        with no_tracebacks():
            reply, sent = await exchange(url, byte_by_byte(url), within=READ_TIMEOUT + MARGIN, pause=pause)
            assert reply.status == 408 or (reply.closed and not reply.data), reply.data[:300]
            assert not sent.finished
            assert reply.seconds <= READ_TIMEOUT + MARGIN
            await assert_still_serving(url)


async def test_200_slow_connections_at_once_do_not_stop_a_normal_client_from_being_served(upstream: str) -> None:
    read_timeout = 2.0  # long enough that every slow connection is still open while the normal client works
    count = 200
    async with hub_for(upstream, requestReadTimeout=read_timeout) as (url, _):
        with no_tracebacks():
            progress = [Sent() for _ in range(count)]
            slow = [
                asyncio.create_task(
                    exchange(url, byte_by_byte(url), within=read_timeout + MARGIN, pause=0.1, sent=sent)
                )
                for sent in progress
            ]
            try:
                async with asyncio.timeout(WAIT):
                    await asyncio.gather(*(sent.first.wait() for sent in progress))  # all connected and sending
                took = await assert_still_serving(url)
                assert not any(task.done() for task in slow), "a slow connection ended before the normal client"
                assert took < 1.0, f"the normal client took {took:.2f}s beside {count} slow connections"
                replies = await asyncio.wait_for(asyncio.gather(*slow), read_timeout + MARGIN + WAIT)
            finally:
                for task in slow:
                    task.cancel()
                await asyncio.gather(*slow, return_exceptions=True)
            for reply, sent in replies:
                assert reply.status == 408 or (reply.closed and not reply.data), reply.data[:300]
                assert not sent.finished
            await assert_still_serving(url)


async def test_a_post_whose_body_never_finishes_gets_408_after_the_read_timeout(upstream: str) -> None:
    async with hub_for(upstream) as (url, _):
        body = json.dumps(rpc(1, "initialize", INIT)).encode()
        head = request_head("POST", "/mcp", url, f"Content-Length: {len(body)}\r\n") + b"\r\n"
        with no_tracebacks():
            reply, sent = await exchange(url, [head + body[:10]], within=READ_TIMEOUT + MARGIN)
            assert sent.finished  # the headers and the start of the body went out; the rest never does
            assert reply.status == 408, reply.data[:300]
            assert json_rpc_error(reply)["code"] == -32600
            assert READ_TIMEOUT * 0.8 <= reply.seconds <= READ_TIMEOUT + MARGIN
            await assert_still_serving(url)


async def test_a_connection_that_sends_nothing_is_closed_after_the_read_timeout(upstream: str) -> None:
    async with hub_for(upstream) as (url, _):
        with no_tracebacks():
            reply, _ = await exchange(url, [], within=READ_TIMEOUT + MARGIN)
            assert reply.closed
            assert reply.data == b""
            assert READ_TIMEOUT * 0.8 <= reply.seconds <= READ_TIMEOUT + MARGIN
            await assert_still_serving(url)


async def test_an_idle_connection_is_closed_after_the_keep_alive_timeout(upstream: str) -> None:
    keep_alive = 0.5
    async with hub_for(upstream, keepAliveTimeout=keep_alive) as (url, _):
        host, port = address(url)
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(f"GET /health HTTP/1.1\r\nhost: {host}:{port}\r\n\r\n".encode())
            reply = await read_reply(reader, time.monotonic(), WAIT)
            assert reply.status == 200 and not reply.closed
            idle = await read_reply(reader, time.monotonic(), keep_alive + MARGIN)
            assert idle.closed and idle.data == b""
            assert keep_alive * 0.8 <= idle.seconds <= keep_alive + MARGIN
        finally:
            writer.close()
        await assert_still_serving(url)


# -- a session flood ----------------------------------------------------------------------------------


async def test_an_initialize_flood_past_max_sessions_never_evicts_a_session_in_use(upstream: str) -> None:
    max_sessions = 50
    flood = 200
    async with (
        hub_for(upstream, maxSessions=max_sessions) as (url, hub),
        Client(url) as victim,
        httpx.AsyncClient(timeout=WAIT, trust_env=False) as attacker,
    ):
        assert "alpha__echo" in {tool.name for tool in (await victim.list_tools()).tools}
        before = await victim.call_tool("alpha__echo", {"text": "before"})
        assert before.content[0].text == "alpha: before"  # type: ignore[union-attr]
        with no_tracebacks():
            opened: set[str] = set()
            for i in range(flood):
                response = await attacker.post(url, json=rpc(i, "initialize", INIT), headers=HEADERS)
                # Each new session makes room by closing the oldest one never used: the flood's own.
                assert response.status_code == 200, (i, response.text)
                opened.add(response.headers["mcp-session-id"])
                assert len(hub.sessions) <= max_sessions
            assert len(opened) == flood

            after = await victim.call_tool("alpha__echo", {"text": "after"})
            assert after.content[0].text == "alpha: after"  # type: ignore[union-attr]
            assert await assert_still_serving(url) < WAIT
            again = await victim.call_tool("alpha__echo", {"text": "again"})
            assert again.content[0].text == "alpha: again"  # type: ignore[union-attr]
