"""The Streamable HTTP transport (2025-03-26 and later) under the JSON-RPC engine.

Every message is one POST. A request's reply comes back on that POST, as one
JSON body or as an SSE stream that may carry progress notifications (and
server-to-client requests) before the response. A reply stream that drops
before the response is resumed with ``Last-Event-ID`` when the upstream gave
its events ids. Messages that belong to no request arrive on a GET stream.

GET streams are held within the upstream's :class:`StreamBudget`. A session
that only makes calls needs its GET stream only around them: an isolated
session's stream closes after a quiet spell (unless the session holds
subscriptions) and opens again before its next request, so idle sessions
hold no connection. Every message read is bounded by ``max_message_bytes``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import httpx

from connectors import jsonrpc
from connectors.eras import MODERN, param_headers_for, routing_headers
from connectors.errors import (
    UpstreamError,
    UpstreamProtocolError,
    UpstreamSessionExpired,
    UpstreamTimeout,
    UpstreamTooLarge,
    UpstreamUnavailable,
    http_refusal,
)
from connectors.http1 import BodyTooLarge, Http1Error, Http1Pool, Http1Response
from connectors.jsonrpc import Message
from connectors.spec import UpstreamSpec
from connectors.sse_decoder import EventTooLarge, SseDecoder
from connectors.stream_budget import StreamBudget
from connectors.transport import Link

__all__ = ["StreamableHttpTransport"]

logger = logging.getLogger(__name__)

_SESSION_HEADER: Final = "mcp-session-id"
_OPENING: Final = frozenset({"initialize", "notifications/initialized", "server/discover"})  # the handshake
_VERSION_HEADER: Final = "mcp-protocol-version"
_POST_HEADERS: Final = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
_RESUME_ATTEMPTS: Final = 5
_RETRY_CAP_MS: Final = 5000
_LISTEN_FAILURES: Final = 5
_DRAIN_SECONDS: Final = 5.0
LINGER_SECONDS: Final = 30.0
"""How long an isolated session's GET stream stays open after its last request."""


@dataclass
class _Cursor:
    """Where an SSE stream stands: the last event id seen, and the retry delay asked for."""

    last_id: str | None = None
    retry_ms: int = 1000

    def wait(self) -> float:
        return min(self.retry_ms, _RETRY_CAP_MS) / 1000


class StreamableHttpTransport:
    """One upstream session over Streamable HTTP.

    POSTs go through ``posts`` and everything else through ``http``, both shared by every
    session of the upstream. ``persistent`` sessions (discovery, shared) keep their GET
    stream open for good; the others let it linger ``linger`` seconds after a request.
    """

    def __init__(
        self,
        spec: UpstreamSpec,
        http: httpx.AsyncClient,
        posts: Http1Pool,
        *,
        streams: StreamBudget | None = None,
        persistent: bool = True,
        linger: float = LINGER_SECONDS,
        tool_schema: Callable[[str], Any] | None = None,
    ) -> None:
        self._tool_schema = tool_schema
        self.spec = spec
        self._http = http
        self._posts = posts
        self._streams = streams
        self._persistent = persistent
        self._linger = linger
        self._link: Link | None = None
        self._session_id: str | None = None
        self._reopening = False  # from reset() until the new session is open (opened())
        self._listener: asyncio.Task[None] | None = None
        self._listen_offered = True  # until the upstream answers GET with 405
        self._linger_timer: asyncio.TimerHandle | None = None
        self._requests = 0  # requests whose reply has not come yet
        self.last_active = 0.0

    @property
    def link(self) -> Link:
        assert self._link is not None, "the transport is not open"
        return self._link

    @property
    def listening(self) -> bool:
        return self._listener is not None and not self._listener.done()

    # -- Transport ---------------------------------------------------------------------------------

    async def open(self, link: Link) -> None:
        self._link = link
        self._session_id = None
        self._reopening = False

    def reset(self) -> None:
        self._session_id = None
        self._reopening = True

    async def opened(self) -> None:
        self._reopening = False
        # The GET stream is open before the first request: an upstream drops what it has no stream for.
        self._stop_listening()  # it listened on a session the upstream has forgotten
        if self.link.protocol_version == MODERN:
            self._listen_offered = False  # no GET stream in the stateless era (the engine listens instead)
            return
        await self._start_listening()

    async def close(self) -> None:
        self._stop_listening()
        if self._session_id is not None:
            # Tell the upstream we are done so it frees the session; a refusal (405) is fine.
            with contextlib.suppress(httpx.HTTPError):
                await self._http.delete(self.spec.url, headers=self._headers(), timeout=self.spec.connect_timeout)
            self._session_id = None

    async def send(self, message: Message) -> None:
        self._check_open(message)
        is_request = "method" in message and "id" in message
        if is_request:
            self.last_active = asyncio.get_running_loop().time()
            if not self.listening and self._listen_offered and message["method"] != "initialize":
                await self._start_listening()
            self._requests += 1
        try:
            await self._post(message, is_request)
        finally:
            if is_request:
                self._requests -= 1
                self._schedule_linger()

    def _check_open(self, message: Message) -> None:
        if self._reopening and message.get("method") not in _OPENING:
            # It got past the engine's wait for the new session before reset(): the upstream would
            # refuse it, or take it before the handshake ends. The engine waits and sends it again.
            raise UpstreamSessionExpired(self.spec.name, "our session is being opened again")

    # -- POST --------------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {**self.spec.headers, **_POST_HEADERS}
        if self._session_id is not None:
            headers[_SESSION_HEADER] = self._session_id
        version = self.link.protocol_version
        if version:
            headers[_VERSION_HEADER] = version
        return headers

    async def _post(self, message: Message, is_request: bool) -> None:
        name = self.spec.name
        sent_session = self._session_id  # a 404 means "expired" only for a request that named a session
        self._check_open(message)  # again: opening the GET stream took a while
        headers = self._headers()
        if self.link.protocol_version == MODERN:
            headers.update(routing_headers(message))
            params = message.get("params")
            if message.get("method") == "tools/call" and self._tool_schema is not None and isinstance(params, dict):
                headers.update(param_headers_for(self._tool_schema(str(params.get("name"))), params.get("arguments")))
        try:
            response = await self._posts.post(headers, jsonrpc.dumps(message))
        except Http1Error as exc:
            raise UpstreamUnavailable(name, str(exc)) from exc
        except TimeoutError:
            raise UpstreamUnavailable(name, f"no connection within {self.spec.connect_timeout:g}s") from None
        rest = None
        try:
            rest = await self._read_reply(response, message, is_request, sent_session)
        except Http1Error as exc:
            raise UpstreamUnavailable(name, str(exc)) from exc
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(name, f"HTTP timeout ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable(name, f"{type(exc).__name__}: {exc}") from exc
        except (EventTooLarge, BodyTooLarge) as exc:
            raise UpstreamTooLarge(name, "a message", exc.limit) from None
        except ValueError as exc:  # undecodable JSON in a body or an event
            raise UpstreamProtocolError(name, f"invalid JSON: {exc}") from exc
        finally:
            if rest is None or response.complete:
                response.release()
            else:
                # Read the reply stream to its end (the upstream ends it after the reply) so the
                # connection goes back to the pool, without making the caller wait for it.
                self.link.spawn(self._drain(response, rest))

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
        self, response: Http1Response, message: Message, is_request: bool, sent_session: str | None
    ) -> SseDecoder | None:
        """Deliver the reply; returns the decoder of an SSE reply stream still to be read to its end."""
        name = self.spec.name
        status = response.status
        if status == 404 and sent_session is not None:
            raise UpstreamSessionExpired(name, "the upstream no longer knows our session")
        if status >= 400:
            await self._refused(await response.read(self.spec.max_message_bytes), status)
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
            self._deliver_all(jsonrpc.loads(await response.read(self.spec.max_message_bytes)), message["id"])
            return None
        if content_type.startswith("text/event-stream"):
            return await self._read_events(response, message["id"])
        raise UpstreamProtocolError(name, f"unexpected content type {content_type or 'none'!r}")

    async def _read_events(self, response: Http1Response, request_id: int) -> SseDecoder | None:
        decoder = SseDecoder(self.spec.max_message_bytes)
        if await self._consume_reply(response, decoder, request_id):
            return decoder
        cursor = _Cursor(decoder.last_id, decoder.retry_ms or _Cursor.retry_ms)
        if cursor.last_id is not None:
            self.link.interrupted(request_id)
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
                if await self._consume_stream(resumed, cursor, request_id):
                    return None
            fruitless = 0 if cursor.last_id != before else fruitless + 1
        raise UpstreamUnavailable(self.spec.name, "the reply stream ended before the reply")

    async def _consume_reply(self, response: Http1Response, decoder: SseDecoder, request_id: int) -> bool:
        """Deliver a POST's reply stream; True once the reply to ``request_id`` has come."""
        link = self.link
        async for chunk in response:
            for event in decoder.feed(chunk):
                if event.data and event.event == "message":
                    self._deliver_all(jsonrpc.loads(event.data), request_id)
            if not link.awaiting(request_id):
                return True
        return False

    async def _consume_stream(self, response: httpx.Response, cursor: _Cursor, request_id: int | None) -> bool:
        """Deliver a GET stream's events; True once the reply to ``request_id`` has come."""
        decoder = SseDecoder(self.spec.max_message_bytes)
        async for chunk in response.aiter_bytes():
            for event in decoder.feed(chunk):
                if event.data and event.event in ("message", ""):
                    self._deliver_all(jsonrpc.loads(event.data), request_id)
            if decoder.last_id is not None:
                cursor.last_id = decoder.last_id
            if decoder.retry_ms is not None:
                cursor.retry_ms = decoder.retry_ms
            if request_id is not None and not self.link.awaiting(request_id):
                return True
        return False

    async def _refused(self, body: bytes, status: int) -> None:
        refusal = http_refusal(self.spec.name, status, body)
        if isinstance(refusal, UpstreamError):
            raise refusal
        self.link.deliver(refusal)  # a JSON-RPC error for one of our requests: that request's answer

    def _deliver_all(self, decoded: Any, via: int | None) -> None:
        link = self.link
        for item in decoded if isinstance(decoded, list) else [decoded]:
            link.deliver(item, via)

    # -- the GET stream ----------------------------------------------------------------------------

    def evictable(self) -> bool:
        # A session holding subscriptions needs its stream even when idle: never the one to go.
        return self._requests == 0 and not self.link.busy and not self.link.listening_wanted

    def evict(self) -> None:
        logger.debug("upstream %s: GET stream closed to make room for another session's", self.spec.name)
        self._stop_listening(release=False)

    async def _start_listening(self) -> None:
        if self._streams is not None and not self._streams.acquire(self):
            logger.warning(
                "upstream %s: %d streams open (maxStreams); this session gets no GET stream",
                self.spec.name,
                self._streams.capacity,
            )
            return
        listening = asyncio.Event()
        self._listener = self.link.spawn(self._listen(listening))
        try:
            async with asyncio.timeout(self.spec.connect_timeout):
                await listening.wait()
        except TimeoutError:
            logger.info("upstream %s: its GET stream did not answer within the connect timeout", self.spec.name)

    def _stop_listening(self, *, release: bool = True) -> None:
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        if self._listener is not None:
            self._listener.cancel()
            self._listener = None
        if release and self._streams is not None:
            self._streams.release(self)

    def _schedule_linger(self) -> None:
        if self._persistent or self._linger_timer is not None or not self.listening:
            return
        self._linger_timer = asyncio.get_running_loop().call_at(self.last_active + self._linger, self._lingered)

    def _lingered(self) -> None:
        self._linger_timer = None
        if not self.listening:
            return
        now = asyncio.get_running_loop().time()
        if self._requests or self.link.listening_wanted or now < self.last_active + self._linger:
            self._linger_timer = asyncio.get_running_loop().call_at(
                max(now, self.last_active) + self._linger, self._lingered
            )
            return
        self._stop_listening()

    async def _listen(self, listening: asyncio.Event) -> None:
        """Keep the GET stream open for messages that belong to no request.

        ``listening`` is set once the first attempt has its answer, whatever it is.
        """
        cursor = _Cursor()
        failures = 0
        try:
            while failures < _LISTEN_FAILURES and not self._reopening:  # a new session gets a new listener
                headers = {**self._headers(), "accept": "text/event-stream"}
                if cursor.last_id is not None:
                    headers["last-event-id"] = cursor.last_id
                try:
                    async with self._http.stream("GET", self.spec.url, headers=headers) as response:
                        listening.set()
                        if response.status_code == 405:
                            self._listen_offered = False
                            return
                        if response.status_code == 404:
                            return  # the session is gone; a new one gets a new listener
                        if response.status_code == 200:
                            failures = 0
                            await self._consume_stream(response, cursor, None)
                        else:
                            failures += 1
                except (httpx.HTTPError, ValueError) as exc:
                    failures += 1
                    logger.debug("GET stream of %s dropped: %s", self.spec.name, exc)
                finally:
                    listening.set()
                await asyncio.sleep(cursor.wait())
            if failures >= _LISTEN_FAILURES:
                logger.info("upstream %s: gave up on its GET stream after %d failures", self.spec.name, failures)
        finally:
            listening.set()
            if self._streams is not None and self._listener is asyncio.current_task():
                self._streams.release(self)
