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
from dataclasses import dataclass, field
from typing import Any, Final

from connectors import jsonrpc
from connectors.jsonrpc import Message
from hub.catalog import ListKind
from hub.context import Caller
from hub.envelope import SUBSCRIPTION_KEY
from hub.views import ViewRule

__all__ = ["LIST_FLAGS", "Listener", "Listeners"]

QUEUE_SIZE: Final = 256
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
    queue: asyncio.Queue[Message | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    overflowed: bool = False

    def put(self, method: str, params: Message | None = None) -> None:
        meta = {SUBSCRIPTION_KEY: self.request_id}
        body = {**(params or {}), "_meta": {**((params or {}).get("_meta") or {}), **meta}}
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(jsonrpc.notification(method, body))
        except asyncio.QueueFull:
            self.overflowed = True  # end the stream; the client listens again and re-reads its lists
            self.queue._queue.clear()  # type: ignore[attr-defined]
            self.queue.put_nowait(None)

    def end(self) -> None:
        """End the stream (the client went, or the hub is stopping)."""
        if self.queue.full():
            self.queue._queue.clear()  # type: ignore[attr-defined]
        self.queue.put_nowait(None)


class Listeners:
    """Every open listener of the hub."""

    def __init__(self) -> None:
        self._all: set[Listener] = set()

    def __len__(self) -> int:
        return len(self._all)

    def add(self, listener: Listener) -> None:
        self._all.add(listener)

    def remove(self, listener: Listener) -> None:
        self._all.discard(listener)

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
