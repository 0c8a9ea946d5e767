"""The control plane of replicas on one Redis: what one replica tells all the others.

Messages go over one Redis pub/sub channel as JSON: ``config`` (a config
document a replica applied, with its digest: the others apply it too) and
``listing`` (an upstream's catalog changed as one replica saw it, with the new
listing's digest: the others list that upstream again). A replica ignores its
own messages. Pub/sub keeps nothing for a replica that was not listening, so
the last config document is also kept in a key, and a replica that was cut off
from Redis reads it when it subscribes again.

The listener reconnects by itself, a second after each failure; every wait in
it is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from redis.exceptions import RedisError

from connectors import jsonrpc
from hub.redis_store import RedisStore
from hub.store import StoreError

__all__ = ["ControlPlane"]

logger = logging.getLogger(__name__)

_RETRY: Final = 1.0
_POLL: Final = 1.0


class ControlPlane:
    """Publishes to and listens on the replicas' channel; an async context manager owning the listener."""

    def __init__(
        self,
        store: RedisStore,
        run: str,
        *,
        on_config: Callable[[bytes, str], Awaitable[None]],
        on_listing: Callable[[str, str], None],
    ) -> None:
        self.store = store
        self.run = run
        self.channel = store.key("control")
        self.subscribed = asyncio.Event()
        """Set while the listener is subscribed."""
        self.applied_at = time.time()
        """When this replica last applied a config document (its own or another's; its file at start)."""
        self._on_config = on_config
        self._on_listing = on_listing
        self._task: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> ControlPlane:
        self._task = asyncio.get_running_loop().create_task(self._listen(), name="control-plane")
        return self

    async def __aexit__(self, *exc: object) -> None:
        tasks = [t for t in (self._task, *self._sends) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- telling -----------------------------------------------------------------------------------

    def config_applied(self, data: bytes, digest: str) -> None:
        """Tell the others of a config document this replica applied from its file."""
        self.applied_at = time.time()
        message = {"kind": "config", "from": self.run, "digest": digest, "config": data.decode("utf-8", "replace")}
        payload = jsonrpc.dumps(message)
        key = self.store.key("config")
        stamp = jsonrpc.dumps([self.applied_at, digest, message["config"]])

        async def send(r: Any) -> None:
            async with r.pipeline(transaction=False) as pipe:
                pipe.set(key, stamp)
                pipe.publish(self.channel, payload)
                await pipe.execute()

        self._send("publish a config", send)

    def listing_changed(self, upstream: str, digest: str) -> None:
        """Tell the others that an upstream's catalog changed."""
        payload = jsonrpc.dumps({"kind": "listing", "from": self.run, "upstream": upstream, "digest": digest})
        self._send("publish a catalog change", lambda r: r.publish(self.channel, payload))

    def _send(self, what: str, fn: Callable[[Any], Awaitable[Any]]) -> None:
        async def send() -> None:
            try:
                await self.store.call(what, fn)
            except StoreError as exc:
                logger.warning("the other replicas were not told: %s", exc)

        task = asyncio.get_running_loop().create_task(send())
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    # -- listening ---------------------------------------------------------------------------------

    async def _listen(self) -> None:
        first = True
        while True:
            pubsub = None
            try:
                pubsub = self.store.client.pubsub(ignore_subscribe_messages=True)
                async with asyncio.timeout(self.store.timeout * 2):
                    await pubsub.subscribe(self.channel)
                self.subscribed.set()
                if not first:
                    await self._catch_up()
                first = False
                while True:
                    message = await pubsub.get_message(timeout=_POLL)
                    if message is not None and message.get("type") == "message":
                        await self._handle(message["data"])
            except (RedisError, OSError, TimeoutError, StoreError) as exc:
                if self.subscribed.is_set():
                    logger.warning("control plane: lost Redis (%s); listening again shortly", exc)
                self.subscribed.clear()
            except Exception:
                logger.exception("control plane failed; listening again shortly")
                self.subscribed.clear()
            finally:
                if pubsub is not None:
                    with contextlib.suppress(RedisError, OSError, TimeoutError):
                        async with asyncio.timeout(self.store.timeout):
                            await pubsub.aclose()
            await asyncio.sleep(_RETRY)

    async def _catch_up(self) -> None:
        # Messages sent while this replica was cut off are gone; the last config document is not.
        raw = await self.store.call("read the last config", lambda r: r.get(self.store.key("config")))
        if raw is None:
            return
        try:
            stamp, _, config = jsonrpc.loads(raw)
            stamp = float(stamp)
            if not isinstance(config, str):
                raise TypeError("not a config document")
        except (ValueError, TypeError):
            logger.warning("control plane: the last config kept in Redis cannot be read; ignored")
            return
        if stamp > self.applied_at:
            await self._config(config.encode(), "the replicas' last config")

    async def _handle(self, data: bytes) -> None:
        try:
            message = jsonrpc.loads(data)
        except ValueError:
            logger.warning("control plane: a message that is not JSON; ignored")
            return
        if not isinstance(message, dict) or message.get("from") == self.run:
            return
        kind, sender = message.get("kind"), str(message.get("from"))
        if kind == "config" and isinstance(message.get("config"), str):
            await self._config(message["config"].encode(), f"replica {sender}")
        elif kind == "listing" and isinstance(message.get("upstream"), str):
            self._on_listing(message["upstream"], str(message.get("digest")))
        else:
            logger.warning("control plane: a message of kind %r from %s not understood; ignored", kind, sender)

    async def _config(self, data: bytes, source: str) -> None:
        self.applied_at = time.time()
        try:
            await self._on_config(data, source)
        except Exception:
            logger.exception("a config from %s could not be applied", source)
