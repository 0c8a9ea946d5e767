"""``subscriptions/listen``: the long-lived streams of stateless clients, and what reaches them.

A listener opted in to some notification types (tool, prompt and resource
list changes; updates of some resource URIs) and sees them only for its own
view of the catalog: a list change of a view reaches the listeners of that
view, a resource update reaches the listeners of the caller (or, for a shared
upstream session, of the tenant) that subscribed to that URI. Each listener
has a bounded queue; one that falls that far behind is ended (its client
listens again) rather than allowed to grow.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any, Final

from connectors import jsonrpc
from connectors.jsonrpc import Message
from hub.catalog import ListKind
from hub.context import Caller
from hub.envelope import SUBSCRIPTION_KEY
from hub.errors import RateLimited, SessionLimit
from hub.views import ViewRule

__all__ = ["LIST_FLAGS", "Listener", "Listeners"]

QUEUE_SIZE: Final = 256
MAX_PER_CALLER: Final = 16
LIST_FLAGS: Final[dict[str, tuple[ListKind, ...]]] = {
    "toolsListChanged": ("tools",),
    "promptsListChanged": ("prompts",),
    "resourcesListChanged": ("resources", "resourceTemplates"),
}
_METHOD: Final = {
    "toolsListChanged": "notifications/tools/list_changed",
    "promptsListChanged": "notifications/prompts/list_changed",
    "resourcesListChanged": "notifications/resources/list_changed",
}


@dataclass(eq=False)
class Listener:
    """One open ``subscriptions/listen`` stream."""

    caller: Caller
    rule: ViewRule
    request_id: Any
    lists: frozenset[str]
    """The list flags it opted in to (``toolsListChanged``, ...)."""
    uris: set[str] = field(default_factory=set)
    """Public resource URIs whose updates it gets."""
    overflowed: bool = False
    ended: bool = False
    _pending: deque[Message] = field(default_factory=deque)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    def put(self, method: str, params: Message | None = None) -> None:
        if self.ended:
            return
        if len(self._pending) >= QUEUE_SIZE:
            self.overflowed = True  # end the stream; the client listens again and re-reads its lists
            self.end()
            return
        meta = {**((params or {}).get("_meta") or {}), SUBSCRIPTION_KEY: self.request_id}
        self._pending.append(jsonrpc.notification(method, {**(params or {}), "_meta": meta}))
        self._wake.set()

    def end(self) -> None:
        """End the stream (the client went, or the hub is stopping); what is queued is dropped."""
        self.ended = True
        self._pending.clear()
        self._wake.set()

    async def next(self) -> Message | None:
        """The next notification, when it comes; None once the stream is ended."""
        while not self._pending and not self.ended:
            self._wake.clear()
            await self._wake.wait()
        return self._pending.popleft() if self._pending else None

    async def messages(self) -> AsyncGenerator[Message, None]:
        """Every notification until the stream is ended (the writer adds keep-alives)."""
        while (message := await self.next()) is not None:
            yield message


class Listeners:
    """Every open listener of the hub, bounded in all and per caller."""

    def __init__(
        self,
        max_total: int = 1000,
        max_per_caller: int = MAX_PER_CALLER,
        subscribed: Callable[[str, str], bool] = lambda uri, tenant: False,
    ) -> None:
        self._subscribed = subscribed  # (URI, tenant): whether a session of the tenant is subscribed to it
        self.max_total = max_total
        self.max_per_caller = max_per_caller
        self._all: set[Listener] = set()
        self._fewer = asyncio.Event()

    def __len__(self) -> int:
        return len(self._all)

    async def wait_at_most(self, count: int) -> None:
        """Wait until at most ``count`` listeners are open (callers bound the wait)."""
        while len(self._all) > count:
            self._fewer.clear()
            await self._fewer.wait()

    def admit(self, caller: Caller) -> None:
        """Raises: SessionLimit: the hub holds its maximum of listen streams; RateLimited: the caller does."""
        if len(self._all) >= self.max_total:
            raise SessionLimit(f"the hub holds its maximum of {self.max_total} listen streams; try again later")
        if sum(listener.caller == caller for listener in self._all) >= self.max_per_caller:
            raise RateLimited(f"this caller holds its maximum of {self.max_per_caller} listen streams")

    def add(self, listener: Listener) -> None:
        self._all.add(listener)

    def remove(self, listener: Listener) -> None:
        self._all.discard(listener)
        self._fewer.set()

    def held(self, uri: str, tenant: str) -> bool:
        """Whether a listener or a session of ``tenant`` still gets updates of ``uri``: the tenant's
        shared upstream session, which serves them all, stays subscribed to it until none does."""
        if any(uri in listener.uris and listener.caller.tenant == tenant for listener in self._all):
            return True
        return self._subscribed(uri, tenant)

    def lists_changed(self, rule: ViewRule, kinds: set[ListKind]) -> None:
        """The lists of ``kinds`` changed for the callers under ``rule``."""
        for listener in list(self._all):
            if listener.rule != rule:
                continue
            for flag in listener.lists:
                if any(kind in kinds for kind in LIST_FLAGS[flag]):
                    listener.put(_METHOD[flag])

    def resource_updated(self, uri: str, message: Message, caller: Caller | None = None, tenant: str = "") -> None:
        """A public resource URI changed: for the listeners of ``caller``, or of every caller of ``tenant``."""
        params = message.get("params")
        for listener in list(self._all):
            if uri not in listener.uris:
                continue
            mine = listener.caller == caller if caller is not None else listener.caller.tenant == tenant
            if mine:
                listener.put("notifications/resources/updated", params if isinstance(params, dict) else {"uri": uri})

    def end_all(self) -> None:
        for listener in list(self._all):
            listener.end()
