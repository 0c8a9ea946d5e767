"""Forwarding one request to the replica that owns its session, and its reply back.

The request goes out as it came (method, path, query, headers, the body
already read), marked with the forwarding replica's run id so the owner never
forwards it again. The reply comes back as it goes: a JSON body whole, an SSE
stream piece by piece as the owner writes it. When the client goes away the
owner's connection is closed, which the owner sees as its client going away.

POSTs (nearly every request of a session) go through the hub's own HTTP/1.1
client (:mod:`connectors.http1`, a tenth of httpx's CPU per request, as for
upstreams); GET streams and DELETEs through httpx.

What failed is told apart, because it decides what may happen next: nothing
reached the owner (:class:`OwnerUnreachable`; ``refused`` when nothing listens
there any more, so its run is over), or the owner went away after it had the
request (:class:`OwnerLost`: the request may have been acted on, so it is
never sent again).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any, Final, Self, TypeVar

import httpx

from connectors.http1 import Http1ConnectError, Http1Error, Http1Pool, Http1Response
from hub.asgi import Receive, Scope, Send

__all__ = ["FORWARDED_HEADER", "REPLICA_HEADER", "Forwarder", "OwnerLost", "OwnerUnreachable"]

T = TypeVar("T")

FORWARDED_HEADER: Final = "x-manifold-forwarded"
REPLICA_HEADER: Final = "x-manifold-replica"
"""On a 421: the run id of the replica that answered (another process than the one asked for, after a restart)."""
_HOP_BY_HOP: Final = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "content-length", FORWARDED_HEADER}
)
_MAX_POOLS: Final = 64  # one per replica this one forwards to


class OwnerUnreachable(Exception):
    """The request did not reach the owner."""

    def __init__(self, refused: bool, detail: str) -> None:
        super().__init__(detail)
        self.refused = refused


class OwnerLost(Exception):
    """The owner went away after it had the request, before it started its reply."""


class _ClientGone(Exception):
    pass


class Forwarder:
    """HTTP clients to the other replicas; an async context manager."""

    def __init__(self, run: str, *, connect_timeout: float, read_timeout: float, max_streams: int = 1024) -> None:
        self.run = run
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.forwarded = 0
        """Requests forwarded to another replica."""
        self._pools: OrderedDict[str, Http1Pool] = OrderedDict()
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout, write=connect_timeout, pool=connect_timeout),
            # A forwarded GET stream holds its connection for its life: as many as this replica has sessions.
            limits=httpx.Limits(max_connections=max_streams, max_keepalive_connections=64),
            follow_redirects=False,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for pool in self._pools.values():
            pool.close()
        await self._client.aclose()

    async def forward(
        self, base_url: str, scope: Scope, body: bytes, receive: Receive, send: Send
    ) -> tuple[int, str | None]:
        """Send the request to the replica at ``base_url`` and its reply to the client; returns the
        status and, for a 421 (it does not own the session), the run id of the replica that said so,
        which is not sent on. A client that goes away ends the exchange (status 499).

        Raises: OwnerUnreachable, OwnerLost.
        """
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in scope["headers"]
            if name.decode("latin-1").lower() not in _HOP_BY_HOP
        ]
        headers.append((FORWARDED_HEADER, self.run))
        try:
            if scope["method"] == "POST" and not scope.get("query_string") and scope["path"] == "/mcp":
                return await _unless_gone(self._post(base_url, headers, body, send), receive)
            return await _unless_gone(self._other(base_url, scope, headers, body, send), receive)
        except _ClientGone:
            return 499, None

    async def _post(
        self, base_url: str, headers: list[tuple[str, str]], body: bytes, send: Send
    ) -> tuple[int, str | None]:
        pool = self._pools.get(base_url)
        if pool is None:
            if len(self._pools) >= _MAX_POOLS:
                self._pools.popitem(last=False)[1].close()  # the one used longest ago: a replica that is gone
            pool = self._pools[base_url] = Http1Pool(f"{base_url}/mcp", connect_timeout=self.connect_timeout)
        else:
            self._pools.move_to_end(base_url)
        joined: dict[str, str] = {}
        for name, value in headers:
            joined[name] = f"{joined[name]}, {value}" if name in joined else value
        try:
            async with asyncio.timeout(self.read_timeout) as waited:
                response = await pool.post(joined, body)
        except Http1ConnectError as exc:
            raise OwnerUnreachable(_refused(exc), str(exc)) from exc
        except TimeoutError as exc:
            if waited.expired():  # the request went out: it may be carried out, so it is not sent again
                raise OwnerLost(f"no answer within {self.read_timeout:g}s (hub.replica.forwardTimeout)") from exc
            raise OwnerUnreachable(False, f"no connection within {self.connect_timeout:g}s") from exc
        except Http1Error as exc:
            raise OwnerLost(str(exc)) from exc
        self.forwarded += 1
        try:
            if response.status == 421:
                return 421, response.headers.get(REPLICA_HEADER)
            out = [
                (name.encode("latin-1"), value.encode("latin-1"))
                for name, value in response.headers.items()
                if name not in _HOP_BY_HOP
            ]

            async def read() -> bytes:
                try:
                    async with asyncio.timeout(self.read_timeout):
                        return await response.read()
                except (Http1Error, TimeoutError) as exc:
                    raise OwnerLost(str(exc) or "no more of the reply within hub.replica.forwardTimeout") from exc

            await _relay(response.status, out, _chunks(response, self.read_timeout), read, send)
            return response.status, None
        finally:
            response.release()

    async def _other(
        self, base_url: str, scope: Scope, headers: list[tuple[str, str]], body: bytes, send: Send
    ) -> tuple[int, str | None]:
        query = scope.get("query_string", b"")
        url = base_url + scope["path"] + (("?" + query.decode("latin-1")) if query else "")
        request = self._client.build_request(scope["method"], url, headers=headers, content=body)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.ConnectError as exc:
            raise OwnerUnreachable(_refused(exc), f"{type(exc).__name__}: {exc}") from exc
        except httpx.PoolTimeout as exc:
            raise OwnerUnreachable(False, "this replica forwards as many streams as it may (hub.maxSessions)") from exc
        except httpx.ConnectTimeout as exc:
            raise OwnerUnreachable(False, f"{type(exc).__name__}: {exc}") from exc
        except httpx.HTTPError as exc:
            raise OwnerLost(f"{type(exc).__name__}: {exc}") from exc
        self.forwarded += 1
        try:
            if response.status_code == 421:
                return 421, response.headers.get(REPLICA_HEADER)
            out = [
                (name.lower(), value)
                for name, value in response.headers.raw
                if name.decode("latin-1").lower() not in _HOP_BY_HOP
            ]

            async def read() -> bytes:
                try:
                    return await response.aread()
                except httpx.HTTPError as exc:
                    raise OwnerLost(f"{type(exc).__name__}: {exc}") from exc

            await _relay(response.status_code, out, _httpx_chunks(response), read, send)
            return response.status_code, None
        finally:
            await response.aclose()


def _refused(exc: BaseException) -> bool:
    """Whether a connection failed because nothing listens there (not a name that does not resolve,
    a host out of reach, or a timeout): the owner's process is gone."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError) or (isinstance(seen, OSError) and seen.errno == errno.ECONNREFUSED):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


async def _unless_gone(exchange: Coroutine[Any, Any, T], receive: Receive) -> T:
    """Run ``exchange``; a client that goes away first cancels it (its connection to the owner closes)."""
    loop = asyncio.get_running_loop()
    work = loop.create_task(exchange)
    watcher = loop.create_task(_wait_disconnect(receive))
    try:
        await asyncio.wait((work, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not work.done():
            work.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    if not work.done() or work.cancelled():
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await work
        raise _ClientGone
    return work.result()


async def _relay(
    status: int,
    headers: list[tuple[bytes, bytes]],
    chunks: AsyncIterator[bytes],
    read: Callable[[], Awaitable[bytes]],
    send: Send,
) -> None:
    """The owner's reply to the client: an SSE stream piece by piece, anything else whole."""
    if any(name == b"content-type" and value.startswith(b"text/event-stream") for name, value in headers):
        await _stream(status, headers, chunks, send)
    else:
        await _whole(status, headers, await read(), send)


async def _whole(status: int, headers: list[tuple[bytes, bytes]], data: bytes, send: Send) -> None:
    headers.append((b"content-length", str(len(data)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def _stream(status: int, headers: list[tuple[bytes, bytes]], chunks: AsyncIterator[bytes], send: Send) -> None:
    # Piece by piece, until the owner ends the stream or breaks off (the client resumes elsewhere).
    await send({"type": "http.response.start", "status": status, "headers": headers})
    async for chunk in chunks:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def _chunks(response: Http1Response, idle: float) -> AsyncIterator[bytes]:
    # Until the owner ends, breaks off, or sends nothing for ``idle`` seconds (its SSE keepalives come
    # every 15): the client then resumes elsewhere.
    pieces = response.__aiter__()
    while True:
        try:
            async with asyncio.timeout(idle):
                chunk = await anext(pieces)
        except (StopAsyncIteration, Http1Error, TimeoutError):
            return
        yield chunk


async def _httpx_chunks(response: httpx.Response) -> AsyncIterator[bytes]:
    with contextlib.suppress(httpx.HTTPError):
        async for chunk in response.aiter_raw():
            yield chunk


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
