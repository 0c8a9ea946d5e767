"""Forwarding one request to the replica that owns its session, and its reply back.

The request goes out as it came (method, path, query, headers, the body
already read), marked with the forwarding replica's run id so the owner never
forwards it again. The reply comes back as it goes: a JSON body whole, an SSE
stream piece by piece as the owner writes it. When the client goes away the
owner's connection is closed, which the owner sees as its client going away.

What failed is told apart, because it decides what may happen next: nothing
reached the owner (:class:`OwnerUnreachable`; ``refused`` when nothing listens
there any more, so its run is over), or the owner went away after it had the
request (:class:`OwnerLost`: the request may have been acted on, so it is
never sent again).
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Final, Self

import httpx

from hub.asgi import Receive, Scope, Send

__all__ = ["FORWARDED_HEADER", "REPLICA_HEADER", "Forwarder", "OwnerLost", "OwnerUnreachable"]

FORWARDED_HEADER: Final = "x-manifold-forwarded"
REPLICA_HEADER: Final = "x-manifold-replica"
"""On a 421: the run id of the replica that answered (another process than the one asked for, after a restart)."""
_HOP_BY_HOP: Final = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "content-length", FORWARDED_HEADER}
)


class OwnerUnreachable(Exception):
    """The request did not reach the owner."""

    def __init__(self, refused: bool, detail: str) -> None:
        super().__init__(detail)
        self.refused = refused


class OwnerLost(Exception):
    """The owner went away after it had the request, before it started its reply."""


class Forwarder:
    """One HTTP client to the other replicas; an async context manager."""

    def __init__(self, run: str, *, connect_timeout: float, read_timeout: float) -> None:
        self.run = run
        self.forwarded = 0
        """Requests forwarded to another replica."""
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(
                connect=connect_timeout, read=read_timeout, write=connect_timeout, pool=connect_timeout
            ),
            limits=httpx.Limits(max_connections=512, max_keepalive_connections=64),
            follow_redirects=False,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._client.aclose()

    async def forward(
        self, base_url: str, scope: Scope, body: bytes, receive: Receive, send: Send
    ) -> tuple[int, str | None]:
        """Send the request to the replica at ``base_url`` and its reply to the client; returns the
        status and, for a 421 (it does not own the session), the run id of the replica that said so,
        which is not sent on.

        Raises: OwnerUnreachable, OwnerLost.
        """
        query = scope.get("query_string", b"")
        url = base_url + scope["path"] + (("?" + query.decode("latin-1")) if query else "")
        headers = [
            (name, value) for name, value in scope["headers"] if name.decode("latin-1").lower() not in _HOP_BY_HOP
        ]
        headers.append((FORWARDED_HEADER.encode(), self.run.encode()))
        request = self._client.build_request(scope["method"], url, headers=headers, content=body)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.ConnectError as exc:
            raise OwnerUnreachable(True, f"{type(exc).__name__}: {exc}") from exc
        except (httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
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
            if response.headers.get("content-type", "").startswith("text/event-stream"):
                await _stream(response, out, receive, send)
            else:
                try:
                    data = await response.aread()
                except httpx.HTTPError as exc:
                    raise OwnerLost(f"{type(exc).__name__}: {exc}") from exc
                out.append((b"content-length", str(len(data)).encode()))
                await send({"type": "http.response.start", "status": response.status_code, "headers": out})
                await send({"type": "http.response.body", "body": data})
            return response.status_code, None
        finally:
            await response.aclose()


async def _stream(response: httpx.Response, headers: list[tuple[bytes, bytes]], receive: Receive, send: Send) -> None:
    # Piece by piece, until the owner ends the stream, breaks off (the client resumes elsewhere), or the client goes.
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    pump = asyncio.get_running_loop().create_task(_pump(response, send))
    watcher = asyncio.get_running_loop().create_task(_wait_disconnect(receive))
    try:
        await asyncio.wait((pump, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (pump, watcher):
            task.cancel()
        for task in (pump, watcher):
            with contextlib.suppress(asyncio.CancelledError, OSError, RuntimeError):
                await task
    with contextlib.suppress(OSError, RuntimeError):
        await send({"type": "http.response.body", "body": b""})


async def _pump(response: httpx.Response, send: Send) -> None:
    with contextlib.suppress(httpx.HTTPError):
        async for chunk in response.aiter_raw():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
