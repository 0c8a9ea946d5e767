"""Connector for upstreams that speak the legacy HTTP+SSE transport (2024-11-05).

The connector holds one GET stream open; the upstream names a message URL in
its first ``endpoint`` event, every message is POSTed there, and every reply
comes back on the stream, so responses are matched to waiters by id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from urllib.parse import urljoin, urlsplit

import httpx
from httpx_sse import EventSource

from connectors import jsonrpc
from connectors.base import Connector
from connectors.errors import UpstreamProtocolError, UpstreamTimeout, UpstreamUnavailable
from connectors.jsonrpc import Message

__all__ = ["SseConnector"]

logger = logging.getLogger(__name__)


class SseConnector(Connector):
    """One upstream session over legacy HTTP+SSE."""

    _reader: asyncio.Task[None] | None = None
    _endpoint: asyncio.Future[str]

    async def _open(self) -> None:
        self._endpoint = asyncio.get_running_loop().create_future()
        self._reader = asyncio.get_running_loop().create_task(self._read())
        await asyncio.shield(self._endpoint)

    async def _close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None

    async def _read(self) -> None:
        reason = "the upstream closed its event stream"
        headers = {**self.spec.headers, "accept": "text/event-stream"}
        try:
            async with self._http.stream("GET", self.spec.url, headers=headers) as response:
                if response.status_code != 200:
                    raise UpstreamUnavailable(self.spec.name, f"HTTP {response.status_code} on the event stream")
                async for event in EventSource(response).aiter_sse():
                    if event.event == "endpoint":
                        self._accept_endpoint(event.data)
                    elif event.event in ("message", "") and event.data:
                        self._deliver(jsonrpc.loads(event.data))
        except asyncio.CancelledError:
            reason = "closed"
            raise
        except httpx.HTTPError as exc:
            reason = f"{type(exc).__name__}: {exc}"
            self._fail_endpoint(UpstreamUnavailable(self.spec.name, reason))
        except ValueError as exc:
            reason = f"invalid JSON on the event stream: {exc}"
            self._fail_endpoint(UpstreamProtocolError(self.spec.name, reason))
        except UpstreamUnavailable as exc:
            reason = exc.message
            self._fail_endpoint(exc)
        finally:
            self._fail_endpoint(UpstreamUnavailable(self.spec.name, reason))
            self._mark_lost(reason)

    def _accept_endpoint(self, data: str) -> None:
        endpoint = urljoin(self.spec.url, data.strip())
        if urlsplit(endpoint).netloc != urlsplit(self.spec.url).netloc:
            # A different origin would receive our headers; refuse it.
            raise UpstreamUnavailable(self.spec.name, f"endpoint {endpoint!r} is on another origin")
        if not self._endpoint.done():
            self._endpoint.set_result(endpoint)

    def _fail_endpoint(self, error: Exception) -> None:
        if not self._endpoint.done():
            self._endpoint.set_exception(error)
            self._endpoint.exception()  # retrieved here so an unawaited failure is not logged

    async def _send(self, message: Message) -> None:
        name = self.spec.name
        if self.lost.is_set():
            raise UpstreamUnavailable(name, f"connection lost ({self.lost_reason})")
        headers = {**self.spec.headers, "content-type": "application/json"}
        try:
            response = await self._http.post(self._endpoint.result(), content=jsonrpc.dumps(message), headers=headers)
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(name, f"HTTP timeout ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable(name, f"{type(exc).__name__}: {exc}") from exc
        if response.status_code == 404:
            self._mark_lost("the upstream no longer knows our session")
            raise UpstreamUnavailable(name, "the upstream no longer knows our session")
        if response.status_code >= 300:
            raise UpstreamProtocolError(name, f"HTTP {response.status_code} on the message endpoint")
