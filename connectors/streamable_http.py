"""Connector for upstreams that speak the Streamable HTTP transport (2025-03-26 and later).

Every message is one POST. A request's reply comes back on that POST, as one
JSON body or as an SSE stream that may carry progress notifications (and
server-to-client requests) before the response. A reply stream that drops
before the response is resumed with ``Last-Event-ID`` when the upstream gave
its events ids. Messages that belong to no request arrive on a GET stream
the connector keeps open while the upstream offers one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import EventSource, ServerSentEvent

from connectors import jsonrpc
from connectors.base import Connector, MessageHandler, RequestHandler
from connectors.errors import (
    UpstreamError,
    UpstreamProtocolError,
    UpstreamSessionExpired,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from connectors.http1 import Http1Error, Http1Pool, Http1Response
from connectors.jsonrpc import Message
from connectors.spec import UpstreamSpec
from connectors.sse_decoder import SseDecoder

__all__ = ["StreamableHttpConnector"]

logger = logging.getLogger(__name__)

_SESSION_HEADER = "mcp-session-id"
_VERSION_HEADER = "mcp-protocol-version"
_RESUME_ATTEMPTS = 5
_RETRY_CAP_MS = 5000
_LISTEN_FAILURES = 5
_DRAIN_SECONDS = 5.0


@dataclass
class _Cursor:
    """Where an SSE stream stands: the last event id seen, and the retry delay asked for."""

    last_id: str | None = None
    retry_ms: int = 1000

    def wait(self) -> float:
        return min(self.retry_ms, _RETRY_CAP_MS) / 1000


class StreamableHttpConnector(Connector):
    """One upstream session over Streamable HTTP.

    POSTs go through ``posts`` (shared by every session of the upstream), everything else
    through ``http``. Without ``posts`` the connector makes and closes its own.
    """

    _session_id: str | None = None

    def __init__(
        self,
        spec: UpstreamSpec,
        http: httpx.AsyncClient,
        *,
        posts: Http1Pool | None = None,
        capabilities: Message | None = None,
        on_message: MessageHandler | None = None,
        on_request: RequestHandler | None = None,
    ) -> None:
        super().__init__(spec, http, capabilities=capabilities, on_message=on_message, on_request=on_request)
        self._listener: asyncio.Task[None] | None = None
        self._owns_posts = posts is None
        self._posts = posts or Http1Pool(spec.url, connect_timeout=spec.connect_timeout)

    async def _open(self) -> None:
        self._session_id = None

    async def _close(self) -> None:
        try:
            if self._session_id is not None:
                # Tell the upstream we are done so it frees the session; a refusal (405) is fine.
                with contextlib.suppress(httpx.HTTPError):
                    timeout = self.spec.connect_timeout
                    await self._http.delete(self.spec.url, headers=self._headers(), timeout=timeout)
                self._session_id = None
        finally:
            if self._owns_posts:
                self._posts.close()

    def _on_session_reset(self) -> None:
        self._session_id = None

    async def _opened(self) -> None:
        # The GET stream is open before the first request: an upstream drops what it has no stream for.
        if self._listener is not None:
            self._listener.cancel()  # it listened on a session the upstream has forgotten
        listening = asyncio.Event()
        self._listener = self._spawn(self._listen(listening))
        await listening.wait()

    def _headers(self) -> dict[str, str]:
        headers = {
            **self.spec.headers,
            "accept": "application/json, text/event-stream",
            "content-type": "application/json",
        }
        if self._session_id is not None:
            headers[_SESSION_HEADER] = self._session_id
        if self.protocol_version:
            headers[_VERSION_HEADER] = self.protocol_version
        return headers

    async def _send(self, message: Message) -> None:
        name = self.spec.name
        sent_session = self._session_id  # a 404 means "expired" only for a request that named a session
        try:
            response = await self._posts.post(self._headers(), jsonrpc.dumps(message))
        except Http1Error as exc:
            raise UpstreamUnavailable(name, str(exc)) from exc
        except TimeoutError:
            raise UpstreamUnavailable(name, f"no connection within {self.spec.connect_timeout:g}s") from None
        rest = None
        try:
            rest = await self._read_reply(response, message, sent_session)
        except Http1Error as exc:
            raise UpstreamUnavailable(name, str(exc)) from exc
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(name, f"HTTP timeout ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable(name, f"{type(exc).__name__}: {exc}") from exc
        except ValueError as exc:  # undecodable JSON in a body or an event
            raise UpstreamProtocolError(name, f"invalid JSON: {exc}") from exc
        finally:
            if rest is None or response.complete:
                response.release()
            else:
                # Read the reply stream to its end (the upstream ends it after the reply) so the
                # connection goes back to the pool, without making the caller wait for it.
                self._spawn(self._drain(response, rest))

    async def _drain(self, response: Http1Response, decoder: SseDecoder) -> None:
        try:
            async with asyncio.timeout(_DRAIN_SECONDS):
                async for chunk in response:
                    for event in decoder.feed(chunk):
                        if event.data:
                            self._deliver_all(jsonrpc.loads(event.data), None)
        except (TimeoutError, Http1Error, ValueError):
            pass  # the connection is closed instead of pooled
        finally:
            response.release()

    async def _read_reply(
        self, response: Http1Response, message: Message, sent_session: str | None
    ) -> SseDecoder | None:
        """Deliver the reply; returns the decoder of an SSE reply stream still to be read to its end."""
        name = self.spec.name
        status = response.status
        is_request = "method" in message and "id" in message
        if status == 404 and sent_session is not None:
            raise UpstreamSessionExpired(name, "the upstream no longer knows our session")
        if status >= 400:
            await self._deliver_error_body(await response.read(), status)
            return None
        if message.get("method") == "initialize":
            self._session_id = response.headers.get(_SESSION_HEADER)
        if not is_request:
            await response.wait_complete()
            return None  # 202 Accepted (or any 2xx) for notifications and responses
        if status == 202:
            raise UpstreamProtocolError(name, f"answered request {message['method']} with 202 and no reply")
        content_type = response.headers.get("content-type", "").lower()
        if content_type.startswith("application/json"):
            self._deliver_all(jsonrpc.loads(await response.read()), message["id"])
            return None
        if content_type.startswith("text/event-stream"):
            return await self._read_events(response, message["id"])
        raise UpstreamProtocolError(name, f"unexpected content type {content_type or 'none'!r}")

    async def _read_events(self, response: Http1Response, request_id: int) -> SseDecoder | None:
        decoder = SseDecoder()
        if await self._consume_reply(response, decoder, request_id):
            return decoder
        cursor = _Cursor(decoder.last_id, decoder.retry_ms or _Cursor.retry_ms)
        hooks = self._hooks.get(request_id)
        if cursor.last_id is not None and hooks is not None and hooks.interrupted is not None:
            hooks.interrupted()
        fruitless = 0
        # An upstream that polls closes the stream again and again: only resumptions that bring
        # nothing count against the limit (the request's own timeout bounds the rest).
        while fruitless < _RESUME_ATTEMPTS and cursor.last_id is not None:
            await asyncio.sleep(cursor.wait())
            headers = {**self._headers(), "accept": "text/event-stream", "last-event-id": cursor.last_id}
            before = cursor.last_id
            async with self._http.stream("GET", self.spec.url, headers=headers) as resumed:
                if resumed.status_code != 200:
                    break
                if await self._consume(EventSource(resumed).aiter_sse(), cursor, request_id):
                    return None
            fruitless = 0 if cursor.last_id != before else fruitless + 1
        raise UpstreamUnavailable(self.spec.name, "the reply stream ended before the reply")

    async def _consume_reply(self, response: Http1Response, decoder: SseDecoder, request_id: int) -> bool:
        """Deliver a POST's reply stream; True once the reply to ``request_id`` has come."""
        async for chunk in response:
            for event in decoder.feed(chunk):
                if event.data and event.event == "message":
                    self._deliver_all(jsonrpc.loads(event.data), request_id)
            future = self._pending.get(request_id)
            if future is None or future.done():
                return True
        return False

    async def _consume(self, events: AsyncIterator[ServerSentEvent], cursor: _Cursor, request_id: int | None) -> bool:
        """Deliver a stream's events; True once the reply to ``request_id`` has come."""
        async for event in events:
            if event.id:
                cursor.last_id = event.id
            if event.retry is not None:
                cursor.retry_ms = event.retry
            if not event.data or event.event not in ("message", ""):
                continue  # priming events carry no data
            self._deliver_all(jsonrpc.loads(event.data), request_id)
            if request_id is not None:
                future = self._pending.get(request_id)
                if future is None or future.done():
                    return True
        return False

    async def _listen(self, listening: asyncio.Event) -> None:
        """Keep the GET stream open for messages that belong to no request.

        ``listening`` is set once the first attempt has its answer, whatever it is.
        """
        cursor = _Cursor()
        failures = 0
        while failures < _LISTEN_FAILURES and not self.lost.is_set():
            headers = {**self._headers(), "accept": "text/event-stream"}
            if cursor.last_id is not None:
                headers["last-event-id"] = cursor.last_id
            try:
                async with self._http.stream("GET", self.spec.url, headers=headers) as response:
                    listening.set()
                    if response.status_code in (404, 405):
                        return  # no GET stream offered, or the session is gone (a new one gets a new listener)
                    if response.status_code == 200:
                        failures = 0
                        await self._consume(EventSource(response).aiter_sse(), cursor, None)
                    else:
                        failures += 1
            except (httpx.HTTPError, ValueError) as exc:
                failures += 1
                logger.debug("GET stream of %s dropped: %s", self.spec.name, exc)
            finally:
                listening.set()
            await asyncio.sleep(cursor.wait())
        if failures:
            logger.info("upstream %s: gave up on its GET stream after %d failures", self.spec.name, failures)

    async def _deliver_error_body(self, body: bytes, status: int) -> None:
        try:
            decoded: Any = jsonrpc.loads(body) if body else None
        except ValueError:
            decoded = None
        kind = jsonrpc.classify(decoded)
        if kind is jsonrpc.Kind.ERROR and decoded.get("id") is not None:
            self._deliver(decoded)
            return
        detail = ""
        if kind is jsonrpc.Kind.ERROR:
            detail = f": {decoded['error'].get('message', '')}"
        error: type[UpstreamError] = UpstreamUnavailable
        if status in (401, 403):
            detail = detail or ": authentication failed (check the upstream's headers)"
        elif status < 500:
            error = UpstreamProtocolError
        raise error(self.spec.name, f"HTTP {status}{detail}")

    def _deliver_all(self, decoded: Any, via: int | None) -> None:
        for item in decoded if isinstance(decoded, list) else [decoded]:
            self._deliver(item, via)
