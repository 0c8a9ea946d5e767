"""The legacy HTTP+SSE transport (2024-11-05) under the JSON-RPC engine.

The transport holds one GET stream open; the upstream names a message URL in
its first ``endpoint`` event, every message is POSTed there, and every reply
comes back on the stream, so responses are matched to waiters by id. The
stream *is* the session: it counts against the upstream's stream budget, and
when the budget makes room by closing an idle one, that session is lost and
its client opens a new one on next use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from urllib.parse import urljoin, urlsplit

import httpx

from connectors import jsonrpc
from connectors.errors import (
    UpstreamBusy,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamTooLarge,
    UpstreamUnavailable,
)
from connectors.jsonrpc import Message
from connectors.spec import UpstreamSpec
from connectors.sse_decoder import EventTooLarge, SseDecoder
from connectors.stream_budget import StreamBudget
from connectors.transport import Link

__all__ = ["SseTransport"]

logger = logging.getLogger(__name__)


class SseTransport:
    """One upstream session over legacy HTTP+SSE."""

    def __init__(self, spec: UpstreamSpec, http: httpx.AsyncClient, *, streams: StreamBudget | None = None) -> None:
        self.spec = spec
        self._http = http
        self._streams = streams
        self._link: Link | None = None
        self._reader: asyncio.Task[None] | None = None
        self._endpoint: asyncio.Future[str] | None = None
        self.last_active = 0.0

    async def open(self, link: Link) -> None:
        self._link = link
        if self._streams is not None and not self._streams.acquire(self):
            raise UpstreamBusy(self.spec.name, f"{self._streams.capacity} sessions open (maxStreams), none idle")
        loop = asyncio.get_running_loop()
        self._endpoint = loop.create_future()
        self._reader = loop.create_task(self._read(link))
        await asyncio.shield(self._endpoint)

    def reset(self) -> None:
        pass  # the stream is the session: a forgotten one is lost, not renewed

    async def opened(self) -> None:
        pass

    async def close(self) -> None:
        if self._streams is not None:
            self._streams.release(self)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None

    def evictable(self) -> bool:
        link = self._link
        return link is not None and not link.busy and not link.listening_wanted

    def evict(self) -> None:
        logger.info("upstream %s: an idle session closed to make room (maxStreams)", self.spec.name)
        if self._reader is not None:
            self._reader.cancel()

    async def _read(self, link: Link) -> None:
        reason = "the upstream closed its event stream"
        headers = {**self.spec.headers, "accept": "text/event-stream"}
        decoder = SseDecoder(self.spec.max_message_bytes)
        try:
            async with self._http.stream("GET", self.spec.url, headers=headers) as response:
                if response.status_code != 200:
                    raise UpstreamUnavailable(self.spec.name, f"HTTP {response.status_code} on the event stream")
                async for chunk in response.aiter_bytes():
                    for event in decoder.feed(chunk):
                        if event.event == "endpoint":
                            self._accept_endpoint(event.data.decode("utf-8", errors="replace"))
                        elif event.event in ("message", "") and event.data:
                            link.deliver(jsonrpc.loads(event.data))
        except asyncio.CancelledError:
            reason = "closed"
            raise
        except httpx.HTTPError as exc:
            reason = f"{type(exc).__name__}: {exc}"
            self._fail_endpoint(UpstreamUnavailable(self.spec.name, reason))
        except EventTooLarge as exc:
            error = UpstreamTooLarge(self.spec.name, "an event", exc.limit)
            reason = error.reason
            self._fail_endpoint(error)
        except ValueError as exc:
            reason = f"invalid JSON on the event stream: {exc}"
            self._fail_endpoint(UpstreamProtocolError(self.spec.name, reason))
        except UpstreamUnavailable as exc:
            reason = exc.reason
            self._fail_endpoint(exc)
        finally:
            self._fail_endpoint(UpstreamUnavailable(self.spec.name, reason))
            link.lost(reason)

    def _accept_endpoint(self, data: str) -> None:
        endpoint = urljoin(self.spec.url, data.strip())
        if urlsplit(endpoint).netloc != urlsplit(self.spec.url).netloc:
            # A different origin would receive our headers; refuse it.
            raise UpstreamUnavailable(self.spec.name, f"endpoint {endpoint!r} is on another origin")
        if self._endpoint is not None and not self._endpoint.done():
            self._endpoint.set_result(endpoint)

    def _fail_endpoint(self, error: Exception) -> None:
        if self._endpoint is not None and not self._endpoint.done():
            self._endpoint.set_exception(error)
            self._endpoint.exception()  # retrieved here so an unawaited failure is not logged

    async def send(self, message: Message) -> None:
        name = self.spec.name
        assert self._endpoint is not None and self._link is not None
        if self._reader is not None and self._reader.done():
            raise UpstreamUnavailable(name, "the event stream is closed")
        if "method" in message and "id" in message:
            self.last_active = asyncio.get_running_loop().time()
        headers = {**self.spec.headers, "content-type": "application/json"}
        try:
            response = await self._http.post(self._endpoint.result(), content=jsonrpc.dumps(message), headers=headers)
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(name, f"HTTP timeout ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable(name, f"{type(exc).__name__}: {exc}") from exc
        if response.status_code == 404:
            self._link.lost("the upstream no longer knows our session")
            raise UpstreamUnavailable(name, "the upstream no longer knows our session")
        if response.status_code >= 300:
            raise UpstreamProtocolError(name, f"HTTP {response.status_code} on the message endpoint")
