"""A small HTTP/1.1 client for the hub's hot path: POST one JSON-RPC message, stream the reply.

Measured on the benchmark's echo call, httpx spends about 0.9 ms of CPU per
request (70% of the hub's work for a proxied call); this client, on asyncio
protocols with httptools' C parser, about 0.1 ms. It does only what the hot
path needs: keep-alive POSTs to one origin (http or https), bodies with a
known length, replies delimited by length, chunks or close, with
backpressure. It never sends a request twice: a connection idle past a few
seconds is not reused, and a failure is the caller's to report. Every other
request to an upstream (GET streams, resumption, DELETE, the legacy
transport) goes through httpx.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections import deque
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Final, Self, cast
from urllib.parse import urlsplit

import httptools

__all__ = ["BodyTooLarge", "Http1ConnectError", "Http1Error", "Http1Pool", "Http1Response"]

_PAUSE_AT: Final = 1 << 20  # buffered body bytes before the socket is paused
_IDLE_MAX: Final = 4.0  # seconds a connection may sit idle and still be reused (servers often close at 5)


class Http1Error(Exception):
    """The connection failed or the peer spoke something that is not HTTP/1.1."""


class Http1ConnectError(Http1Error):
    """No connection could be made: the request was not sent."""


class BodyTooLarge(Exception):
    """A reply body passed the limit its reader set."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"a reply body larger than {limit} bytes")
        self.limit = limit


class Http1Response:
    """One reply: status and headers at once, the body as it arrives."""

    def __init__(self, connection: _Connection) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.complete = False
        self._connection = connection
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._error: Exception | None = None
        self._wake = asyncio.Event()

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body.

        Raises:
            BodyTooLarge: it (or its announced length) passed ``limit`` bytes; the connection is closed.
            Http1Error: the connection broke.
        """
        if limit is not None:
            announced = self.headers.get("content-length", "")
            if announced.isdigit() and len(announced) < 20 and int(announced) > limit:
                self.release()
                raise BodyTooLarge(limit)
        chunks: list[bytes] = []
        size = 0
        async for chunk in self:
            size += len(chunk)
            if limit is not None and size > limit:
                self.release()
                raise BodyTooLarge(limit)
            chunks.append(chunk)
        return b"".join(chunks)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            while self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                self._connection.resume()
                yield chunk
            if self._error is not None:
                raise self._error
            if self.complete:
                return
            self._wake.clear()
            await self._wake.wait()

    async def wait_complete(self) -> None:
        """Wait for the end of the body, dropping what is left of it."""
        async for _ in self:
            pass

    def release(self) -> None:
        """Done with this reply: an unfinished body means the connection cannot be reused."""
        if not self.complete:
            self._connection.close()

    # -- fed by the connection ---------------------------------------------------------------------

    def _body(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        if self._buffered > _PAUSE_AT:
            self._connection.pause()
        self._wake.set()

    def _finish(self, error: Exception | None = None) -> None:
        self.complete = error is None
        self._error = error
        self._wake.set()


class _Connection(asyncio.Protocol):
    def __init__(self, pool: Http1Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._interim = False
        self.response: Http1Response | None = None
        self.headers_ready: asyncio.Future[Http1Response] | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._paused = False
        self._length_known = False

    # -- asyncio.Protocol --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(Http1Error(f"invalid HTTP from the upstream: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._forget(self)
        response = self.response
        if response is not None and not response.complete:
            if response.status and not self._length_known:
                self._done()  # a body delimited by the end of the connection
            else:
                self._fail(Http1Error(f"the connection closed mid-reply ({exc or 'closed by the upstream'})"))

    # -- httptools callbacks -----------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.response is None:
            return
        key = name.decode("latin-1").lower()
        self.response.headers[key] = value.decode("latin-1")
        if key in ("content-length", "transfer-encoding"):
            self._length_known = True

    def on_headers_complete(self) -> None:
        assert self.response is not None and self.headers_ready is not None
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            # An interim reply (103 Early Hints...): the real one follows on the same connection.
            self._interim = True
            self.response.headers.clear()
            return
        self.response.status = status
        if not self.headers_ready.done():
            self.headers_ready.set_result(self.response)

    def on_body(self, body: bytes) -> None:
        if self.response is not None and not self._interim:
            self.response._body(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self._done()

    # -- requests ----------------------------------------------------------------------------------

    def send(self, request: bytes) -> Http1Response:
        assert self.transport is not None
        self.response = Http1Response(self)
        self.headers_ready = asyncio.get_running_loop().create_future()
        self._length_known = False
        self.transport.write(request)
        return self.response

    def _done(self) -> None:
        response, self.response = self.response, None
        if response is None:
            return
        keep = self._parser.should_keep_alive() and not self.closed
        response._finish()
        self.resume()
        if keep:
            self.pool._release(self)
        else:
            self.close()

    def _fail(self, error: Exception) -> None:
        if self.headers_ready is not None and not self.headers_ready.done():
            self.headers_ready.set_exception(error)
        if self.response is not None:
            self.response._finish(error)
            self.response = None

    def pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()


class Http1Pool:
    """Keep-alive connections to the origin of ``url``; POSTs go to its path. An async context manager."""

    def __init__(
        self,
        url: str,
        *,
        idle_limit: int = 32,
        connect_timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl = (ssl_context or ssl.create_default_context()) if parts.scheme == "https" else None
        self.idle_limit = idle_limit
        self.connect_timeout = connect_timeout
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        authority = parts.netloc.rpartition("@")[2]
        self._line = f"POST {target} HTTP/1.1\r\n".encode("latin-1")
        self._host = f"host: {authority}\r\n".encode("latin-1")
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        for connection in list(self._all):
            connection.close()
        self._idle.clear()

    async def post(self, headers: Mapping[str, str], body: bytes) -> Http1Response:
        """Send one POST; returns once the reply's headers are in.

        Raises:
            Http1Error: the upstream could not be reached or broke the connection.
            TimeoutError: no connection within the connect timeout.
        """
        request = self._request(headers, body)
        stale_before = asyncio.get_running_loop().time() - _IDLE_MAX
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed and connection.idle_since >= stale_before:
                return await self._exchange(connection, request)
            connection.close()
        return await self._exchange(await self._connect(), request)

    def _request(self, headers: Mapping[str, str], body: bytes) -> bytes:
        # A ``host`` among ``headers`` is sent instead of the origin's (a request passed on as it came).
        lines = [self._line] if "host" in headers else [self._line, self._host]
        for name, value in headers.items():
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                raise Http1Error(f"header {name!r} has a line break")
            lines.append(f"{name}: {value}\r\n".encode("latin-1"))
        lines.append(b"content-length: %d\r\n\r\n" % len(body))
        lines.append(body)
        return b"".join(lines)

    async def _exchange(self, connection: _Connection, request: bytes) -> Http1Response:
        connection.send(request)
        assert connection.headers_ready is not None
        try:
            return await connection.headers_ready
        except BaseException:
            connection.close()  # an abandoned exchange leaves the connection in an unknown state
            raise

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: _Connection(self), self.host, self.port, ssl=self.ssl
                )
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise Http1ConnectError(f"cannot connect to {self.host}:{self.port}: {reason}") from exc
        self._all.add(connection)
        return connection

    def _release(self, connection: _Connection) -> None:
        connection.idle_since = asyncio.get_running_loop().time()
        if len(self._idle) < self.idle_limit:
            self._idle.append(connection)
        else:
            connection.close()

    def _forget(self, connection: _Connection) -> None:
        self._all.discard(connection)
        if connection in self._idle:
            self._idle.remove(connection)
