"""Messages waiting to be written to one client stream."""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from connectors.jsonrpc import Message

__all__ = ["Outbox"]

logger = logging.getLogger(__name__)


class Outbox:
    """A bounded line of messages for one stream, ended by :meth:`finish`.

    Notifications past ``limit`` are dropped (and counted) rather than
    letting a slow reader hold up the upstream; the final reply always fits.
    """

    def __init__(self, limit: int = 1024) -> None:
        self.limit = limit
        self.dropped = 0
        self._items: deque[Message] = deque()
        self._ready = asyncio.Event()
        self._finished = False

    @property
    def finished(self) -> bool:
        return self._finished

    def push(self, message: Message) -> bool:
        """Queue a message; False when the outbox is finished or full."""
        if self._finished or len(self._items) >= self.limit:
            self.dropped += 1
            return False
        self._items.append(message)
        self._ready.set()
        return True

    def finish(self, message: Message | None = None) -> None:
        """Queue the last message (if any) and end the stream after it."""
        if self._finished:
            return
        if message is not None:
            self._items.append(message)
        self._finished = True
        self._ready.set()

    async def get(self) -> Message | None:
        """The next message, or ``None`` once the outbox is finished and drained."""
        while not self._items:
            if self._finished:
                return None
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()
