"""Real servers on 127.0.0.1 for the tests, started and stopped on events, never sleeps."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from hub.app import create_app
from hub.config import parse_config
from hub.runtime import Hub
from hub.server import http_options
from tests.upstreams import Probe, http_app, sse_app

START_DEADLINE = 15.0


class _Server(uvicorn.Server):
    """A uvicorn server that says when it is ready."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # Several servers share this process: none may own its signals. (SSE servers built on
        # sse-starlette end every stream when the server holding SIGTERM starts to exit.)
        yield


def reserve_port() -> socket.socket:
    """A socket bound to a free loopback port and not listening: connections to it are refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # asyncio sets TCP_NODELAY only then
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@asynccontextmanager
async def serve(app: ASGIApp, sock: socket.socket | None = None, **options: Any) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1; yields its base URL. ``options`` go to uvicorn's config."""
    sock = sock or reserve_port()
    port = sock.getsockname()[1]
    server = _Server(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2, **options))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    ready = asyncio.create_task(server.ready.wait())
    await asyncio.wait({task, ready}, timeout=START_DEADLINE, return_when=asyncio.FIRST_COMPLETED)
    if not server.ready.is_set():
        ready.cancel()
        task.cancel()
        raise RuntimeError("server did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        try:
            await asyncio.wait_for(task, timeout=START_DEADLINE)
        finally:
            sock.close()


HubFactory = Callable[..., AbstractAsyncContextManager[tuple[str, Hub]]]


@asynccontextmanager
async def run_hub(servers: dict[str, dict[str, Any]], **hub_settings: Any) -> AsyncIterator[tuple[str, Hub]]:
    """Serve a hub in front of ``servers``; yields (its /mcp URL, the Hub)."""
    async with run_config({"hub": hub_settings, "mcpServers": servers}) as served:
        yield served


@asynccontextmanager
async def run_config(document: dict[str, Any], env: dict[str, str] | None = None) -> AsyncIterator[tuple[str, Hub]]:
    """Serve a hub for a whole config document (auth, tenants...); yields (its /mcp URL, the Hub).

    The test defaults (in-memory storage, quick reconnects) apply unless the document sets them.
    """
    hub_settings = {"storage": ":memory:", "reconnect": {"initialDelay": 0.05, "maxDelay": 0.2}}
    document = {**document, "hub": {**hub_settings, **document.get("hub", {})}}
    config = parse_config(document, env=env or {})
    app = create_app(config)
    async with serve(app, **http_options(config.hub)) as url:
        yield f"{url}/mcp", app.hub


@asynccontextmanager
async def two_upstreams(
    probe_a: Probe | None = None, probe_b: Probe | None = None, **modes: Any
) -> AsyncIterator[tuple[str, Hub]]:
    """A hub in front of 'alpha' (Streamable HTTP) and 'beta' (legacy SSE)."""
    async with AsyncExitStack() as stack:
        alpha = await stack.enter_async_context(serve(http_app("alpha", probe_a)))
        beta = await stack.enter_async_context(serve(sse_app("beta", probe_b)))
        servers = {
            "alpha": {"url": f"{alpha}/mcp", **modes},
            "beta": {"url": f"{beta}/sse", "type": "sse", **modes},
        }
        yield await stack.enter_async_context(run_hub(servers))


async def asgi_lifespan(receive: Any, send: Any) -> None:
    """Answer the ASGI lifespan protocol for a scripted app that has nothing to start."""
    while (await receive())["type"] != "lifespan.shutdown":
        await send({"type": "lifespan.startup.complete"})
    await send({"type": "lifespan.shutdown.complete"})


async def asgi_body(receive: Any) -> bytes:
    """The whole body of an ASGI HTTP request."""
    body = b""
    while True:
        event = await receive()
        body += bytes(event.get("body", b""))
        if not event.get("more_body"):
            return body
