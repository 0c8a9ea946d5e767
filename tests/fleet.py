"""Several hub replicas (each its own process) on one real Redis behind a small HTTP load balancer.

Everything is on 127.0.0.1. The balancer sends each request to the next
replica in turn (round robin, no stickiness), or, sticky, a request naming a
session to the replica whose reply gave that ``Mcp-Session-Id`` (as HAProxy's
stick tables learn it from a response header); it streams request and reply both ways, as a
real load balancer does, and closes a replica's connection when its client
goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

from tests.hub_process import HubProcess, hub_serving
from tests.redis_server import RedisServer
from tests.servers import asgi_body, asgi_lifespan, reserve_port, serve

__all__ = ["Balancer", "Fleet", "fleet"]

WAIT = 10.0
STREAM_IDLE = 60.0  # the longest the balancer waits for a replica's next bytes (keepalives come every 15 s)
_HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"te", b"upgrade"})


class Balancer:
    """An ASGI load balancer over ``backends`` (base URLs)."""

    def __init__(self, backends: list[str], *, sticky: bool = False) -> None:
        self.backends = backends
        self.sticky = sticky
        self.served = [0] * len(backends)
        """Requests sent to each backend."""
        self._turn = 0
        self._learned: dict[bytes, int] = {}
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(WAIT, read=STREAM_IDLE), trust_env=False)

    def pick(self, headers: dict[bytes, bytes]) -> int:
        session = headers.get(b"mcp-session-id")
        if self.sticky and session in self._learned:
            return self._learned[session]
        index = self._turn % len(self.backends)
        self._turn += 1
        return index

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await asgi_lifespan(receive, send)
            return
        body = await asgi_body(receive)
        headers = dict(scope["headers"])
        index = self.pick(headers)
        self.served[index] += 1
        query = scope.get("query_string", b"").decode()
        url = self.backends[index] + scope["path"] + (f"?{query}" if query else "")
        out = [(name, value) for name, value in scope["headers"] if name not in _HOP_BY_HOP]
        request = self.http.build_request(scope["method"], url, headers=out, content=body)
        try:
            response = await self.http.send(request, stream=True)
        except httpx.HTTPError as exc:
            message = f"backend {index} unreachable: {exc}".encode()
            await send({"type": "http.response.start", "status": 502, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": message})
            return
        try:
            back = [(name.lower(), value) for name, value in response.headers.raw if name.lower() not in _HOP_BY_HOP]
            learned = response.headers.get("mcp-session-id")
            if self.sticky and learned:
                self._learned[learned.encode()] = index
            await send({"type": "http.response.start", "status": response.status_code, "headers": back})
            relay = asyncio.create_task(self._relay(response, send))
            gone = asyncio.create_task(_disconnected(receive))
            await asyncio.wait((relay, gone), return_when=asyncio.FIRST_COMPLETED)
            for task in (relay, gone):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, OSError, RuntimeError):
                    await task
            with contextlib.suppress(OSError, RuntimeError):
                await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()

    @staticmethod
    async def _relay(response: httpx.Response, send: Any) -> None:
        with contextlib.suppress(httpx.HTTPError):  # a replica that dies mid-reply: its stream just ends
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})


async def _disconnected(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


@dataclass
class Fleet:
    redis: RedisServer
    replicas: list[HubProcess]
    bases: list[str]
    """Each replica's base URL (where the balancer and the other replicas reach it)."""
    configs: list[Path]
    balancer: Balancer
    url: str
    """The balancer's MCP endpoint: what clients use."""
    advertised: list[str]
    """What each replica gives the others as its address (its base URL unless told otherwise)."""
    store: aioredis.Redis = field(init=False)

    def __post_init__(self) -> None:
        self.store = aioredis.Redis.from_url(self.redis.url, socket_timeout=WAIT)

    def mcp(self, index: int) -> str:
        return f"{self.bases[index]}/mcp"

    async def owner(self, session_id: str) -> int | None:
        """Which replica (by index) owns a session now, as Redis says."""
        run = await self.store.get(f"manifold:owner:{session_id}")
        if run is None:
            return None
        entry = await self.store.hget("manifold:replicas", run)
        if entry is None:
            return None
        url = json.loads(entry)[0]
        return self.advertised.index(url)

    async def health(self, index: int, http: httpx.AsyncClient, **headers: str) -> dict[str, Any]:
        response = await http.get(f"{self.bases[index]}/health", headers=headers)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result


@asynccontextmanager
async def fleet(
    tmp_path: Path,
    servers: dict[str, Any],
    *,
    size: int = 3,
    sticky: bool = False,
    lease: float = 1.0,
    hub: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    advertise: dict[int, str] | None = None,
) -> AsyncIterator[Fleet]:
    """``size`` replicas in front of ``servers``, on a fresh redis-server, behind a balancer
    (``advertise``: an address other than its own for a replica to give the others)."""
    async with AsyncExitStack() as stack:
        redis = RedisServer(tmp_path)
        await redis.start()
        stack.push_async_callback(redis.stop)
        ports = []
        for _ in range(size):
            sock = reserve_port()
            ports.append(sock.getsockname()[1])
            sock.close()  # the replica binds it next
        bases = [f"http://127.0.0.1:{port}" for port in ports]
        configs = []
        for index, port in enumerate(ports):
            document = {
                "hub": {
                    "port": port,
                    "storage": redis.url,
                    "replica": {"advertiseUrl": (advertise or {}).get(index, bases[index]), "lease": lease},
                    "reconnect": {"initialDelay": 0.05, "maxDelay": 0.2},
                    "workspaces": str(tmp_path / f"workspaces{index}"),
                    **(hub or {}),
                },
                "mcpServers": servers,
                **(extra or {}),
            }
            path = tmp_path / f"replica{index}.json"
            path.write_text(json.dumps(document))
            configs.append(path)
        replicas = list(
            await asyncio.gather(
                *(stack.enter_async_context(hub_serving(path, port)) for path, port in zip(configs, ports, strict=True))
            )
        )
        balancer = Balancer(bases, sticky=sticky)
        stack.push_async_callback(balancer.http.aclose)
        url = await stack.enter_async_context(serve(balancer))
        advertised = [(advertise or {}).get(index, base) for index, base in enumerate(bases)]
        group = Fleet(redis, replicas, bases, configs, balancer, f"{url}/mcp", advertised)
        stack.push_async_callback(group.store.aclose)
        yield group
