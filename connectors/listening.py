"""The ``subscriptions/listen`` stream an engine holds to a 2026-07-28 upstream.

The stateless era has no GET stream and no ``resources/subscribe``: what an
upstream says outside any call comes on a listen stream, and only what it was
asked for. The engine of a persistent session (discovery, shared) listens for
list changes; any engine listens for the resources its client subscribed to.
Subscribing or unsubscribing opens the stream again with the new set of URIs
(the request names them all). A stream that ends is opened again, with a
growing pause, for as long as the engine lives.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final

from connectors.errors import UpstreamError
from connectors.jsonrpc import Message

__all__ = ["Listening"]

logger = logging.getLogger(__name__)

_MAX_PAUSE: Final = 30.0
_LISTS: Final[Message] = {"toolsListChanged": True, "promptsListChanged": True, "resourcesListChanged": True}


class Listening:
    """One engine's listen stream: what it asks for, and the task that holds it open."""

    def __init__(
        self,
        name: str,
        call: Callable[[Message], Awaitable[Message]],
        spawn: Callable[[Callable[[], Coroutine[Any, Any, None]]], asyncio.Task[None]],
        *,
        lists: bool,
        pause: float,
    ) -> None:
        self._name = name
        self._call = call
        self._spawn = spawn
        self._lists = lists
        self._pause = pause
        self.uris: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Listen (again) for what is wanted now; nothing at all when nothing is."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._lists or self.uris:
            self._task = self._spawn(self._hold)

    def subscribe(self, uri: str) -> None:
        if uri not in self.uris:
            self.uris.add(uri)
            self.start()

    def unsubscribe(self, uri: str) -> None:
        if uri in self.uris:
            self.uris.discard(uri)
            self.start()

    def _wanted(self) -> Message:
        wanted: Message = dict(_LISTS) if self._lists else {}
        if self.uris:
            wanted["resourceSubscriptions"] = sorted(self.uris)
        return wanted

    async def _hold(self) -> None:
        pause = self._pause
        while True:
            try:
                await self._call({"notifications": self._wanted()})
                pause = self._pause
            except UpstreamError as exc:
                logger.info("upstream %s: listen stream ended (%s)", self._name, exc.message)
                pause = min(pause * 2, _MAX_PAUSE)
            await asyncio.sleep(pause)  # not a tight loop against an upstream that ends it at once
