"""The HTTP server around the app: uvicorn, with request limits and a drain on SIGTERM.

:func:`protocol_for` is uvicorn's httptools protocol with three limits the
hub needs at the socket, before any memory is spent on a request: the size
of the request line and headers together, their count (both 431 beyond),
and the time the headers may take to arrive (408, then the connection
closes). A connection that sends nothing is closed after that time too; one
that is idle after a reply, after ``hub.keepAliveTimeout``.

:class:`HubServer` turns the first SIGTERM or SIGINT into a drain (see
:meth:`hub.runtime.Hub.drain`) and exits cleanly once it is done; a second
signal stops at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from types import FrameType
from typing import Any, Final

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from hub.config import HubSettings
from hub.runtime import Hub

__all__ = ["HubServer", "http_options", "protocol_for", "server_config"]

logger = logging.getLogger(__name__)

_GRACEFUL_SECONDS: Final = 5


class _HeadersRefused(Exception):
    pass


def protocol_for(settings: HubSettings) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with the hub's header size, count and read-time limits."""
    max_bytes = settings.max_header_bytes
    max_count = settings.max_headers
    read_timeout = settings.request_read_timeout

    class LimitedHttpProtocol(HttpToolsProtocol):
        _header_bytes = 0
        _header_count = 0
        _refusal: bytes | None = None
        _timer: asyncio.TimerHandle | None = None
        _in_head = False
        _began = False
        _head_bytes = 0

        def data_received(self, data: bytes) -> None:
            # httptools reports a header only once it ends: count the raw bytes of a head still
            # arriving too, so one endless header is cut off at the limit, not buffered whole.
            # (The chunk a request begins in is not counted: a small request is never refused.)
            self._began = False
            super().data_received(data)
            if self._in_head and not self._began and not self.transport.is_closing():
                self._head_bytes += len(data)
                if self._head_bytes > max_bytes:
                    self._close_with(
                        b"431 Request Header Fields Too Large",
                        f"request headers larger than {max_bytes} bytes".encode(),
                    )

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._header_bytes = 0
            self._header_count = 0
            self._began = True
            self._in_head = True
            self._head_bytes = 0
            if self._timer is None:
                self._arm()

        def on_url(self, url: bytes) -> None:
            self._count(len(url), 0)
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count(len(name) + len(value), 1)
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._disarm()
            self._in_head = False
            super().on_headers_complete()

        def _count(self, size: int, headers: int) -> None:
            self._header_bytes += size
            self._header_count += headers
            if self._header_bytes > max_bytes:
                self._refusal = f"request headers larger than {max_bytes} bytes".encode()
                raise _HeadersRefused
            if self._header_count > max_count:
                self._refusal = f"more than {max_count} request headers".encode()
                raise _HeadersRefused

        def send_400_response(self, msg: str) -> None:
            if self._refusal is None:
                super().send_400_response(msg)
                return
            self._close_with(b"431 Request Header Fields Too Large", self._refusal)

        def _arm(self) -> None:
            self._disarm()
            self._timer = self.loop.call_later(read_timeout, self._timed_out)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _timed_out(self) -> None:
            self._timer = None
            if self.transport.is_closing():
                return
            if self.cycle is None or self.cycle.response_complete:
                if self._header_bytes or self._header_count:
                    self._close_with(b"408 Request Timeout", b"the request headers did not arrive in time")
                else:
                    self.transport.close()  # connected, and never said anything

        def _close_with(self, status: bytes, text: bytes) -> None:
            self.transport.write(
                b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\n"
                b"content-length: " + str(len(text)).encode() + b"\r\nconnection: close\r\n\r\n" + text
            )
            self.transport.close()

    return LimitedHttpProtocol


def http_options(settings: HubSettings) -> dict[str, Any]:
    """uvicorn's options for the hub's HTTP connections: the limited protocol, the keep-alive."""
    return {"http": protocol_for(settings), "timeout_keep_alive": settings.keep_alive_timeout}


def server_config(
    app: Any,
    settings: HubSettings,
    *,
    host: str,
    port: int,
    log_level: str = "info",
    log_config: dict[str, Any] | None = None,
) -> uvicorn.Config:
    """uvicorn's config for the hub's app: the limited protocol, the lifespan, a bounded shutdown."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        log_config=log_config,
        lifespan="on",
        timeout_graceful_shutdown=_GRACEFUL_SECONDS,
        **http_options(settings),
    )


class HubServer(uvicorn.Server):
    """uvicorn's server, draining the hub on the first SIGTERM or SIGINT."""

    def __init__(self, config: uvicorn.Config, hub: Hub) -> None:
        super().__init__(config)
        self.hub = hub
        self._drain_requested = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain: asyncio.Event | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Unlike uvicorn's own handler, the signal is not raised again after shutdown: a drained
        # hub exits 0, without a traceback.
        if self._drain_requested and self._loop is not None:
            # A second signal: the calls still running get their error reply now, and the drain ends.
            self._loop.call_soon_threadsafe(self.hub.hurry)
        if self._drain_requested or not self.started or self._loop is None or self._drain is None:
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            self.should_exit = True
            return
        self._drain_requested = True
        self._loop.call_soon_threadsafe(self._drain.set)

    async def serve(self, sockets: list[Any] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._drain = asyncio.Event()
        # SIGHUP reloads the config file (refused whole when it has problems; see hub.reload).
        self._loop.add_signal_handler(signal.SIGHUP, self.hub.reloader.request, "SIGHUP")
        async with asyncio.TaskGroup() as tasks:
            watcher = tasks.create_task(self._drain_on_signal(self._drain))
            try:
                await super().serve(sockets=sockets)
            finally:
                watcher.cancel()

    async def _drain_on_signal(self, requested: asyncio.Event) -> None:
        await requested.wait()
        logger.info("shutting down: draining (a second signal stops at once)")
        try:
            await self.hub.drain()
        except Exception:
            logger.exception("the drain failed; stopping anyway")
        finally:
            self.should_exit = True
