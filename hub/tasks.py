"""A client's tasks (the 2025-11-25 experimental tasks) across its upstreams.

Task ids are the upstream's; two upstreams may use the same one, so the hub
shows each task under a public id made from the upstream's name and the
original id, and keeps a table back. Task objects pass through otherwise
unchanged. The table is bounded: past ``capacity`` tasks the oldest is
forgotten (its id then answers as unknown). It also remembers which tasks
belong to a 2026-07-28 upstream (the tasks extension), whose requests differ.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Final

from connectors.jsonrpc import Message
from hub.errors import InvalidParams

__all__ = ["RELATED_TASK", "TaskTable"]

RELATED_TASK: Final = "io.modelcontextprotocol/related-task"
CAPACITY: Final = 4096


class TaskTable:
    """Public task id <-> (upstream, the upstream's task id), for one client session."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self._by_public: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._by_original: dict[tuple[str, str], str] = {}
        self._extension: set[str] = set()
        self._readers: dict[str, asyncio.Lock] = {}

    def __len__(self) -> int:
        return len(self._by_public)

    def public_id(self, upstream: str, original: str) -> str:
        key = (upstream, original)
        public = self._by_original.get(key)
        if public is None:
            public = f"{upstream}:{original}"
            self._by_original[key] = public
            self._by_public[public] = key
            if len(self._by_public) > self.capacity:
                gone, oldest = self._by_public.popitem(last=False)
                del self._by_original[oldest]
                self._extension.discard(gone)
                self._readers.pop(gone, None)
        return public

    def extension_task(self, upstream: str, original: str) -> str:
        """The public id of a task of a 2026-07-28 upstream, remembered as one."""
        public = self.public_id(upstream, original)
        self._extension.add(public)
        return public

    def reading(self, public: str) -> asyncio.Lock:
        """Held by whoever reads a 2026-07-28 task to its end for this client (one at a time)."""
        return self._readers.setdefault(public, asyncio.Lock())

    def is_extension_task(self, public: str) -> bool:
        return public in self._extension

    def extension_tasks(self, upstream: str) -> list[tuple[str, str]]:
        """(public id, original id) of the 2026-07-28 tasks on ``upstream``, oldest first."""
        return [
            (public, original)
            for public, (name, original) in self._by_public.items()
            if name == upstream and public in self._extension
        ]

    def find(self, public: str) -> tuple[str, str]:
        """Raises: InvalidParams: no task of this client has that id."""
        found = self._by_public.get(public)
        if found is None:
            raise InvalidParams(f"unknown task: {public}")
        return found

    def upstreams(self) -> list[str]:
        return sorted({upstream for upstream, _ in self._by_public.values()})

    def publish(self, upstream: str, task: Message) -> Message:
        """A task object (or a result shaped like one) with its public id."""
        original = task.get("taskId")
        if not isinstance(original, str):
            return task
        return {**task, "taskId": self.public_id(upstream, original)}

    def publish_related(self, upstream: str, result: Message) -> Message:
        """A task's result, whose ``_meta`` names the task it belongs to."""
        meta = result.get("_meta")
        if not isinstance(meta, dict) or not isinstance(meta.get(RELATED_TASK), dict):
            return result
        related = self.publish(upstream, meta[RELATED_TASK])
        return {**result, "_meta": {**meta, RELATED_TASK: related}}

    def name_related(self, upstream: str, params: Message) -> Message:
        """An upstream's question (its params) naming the task it is asked for by the task's public id.

        Only a task of this table is named: one the client does not know is left out, and an upstream
        cannot add to the table by naming tasks.
        """
        meta = params.get("_meta")
        if not isinstance(meta, dict) or RELATED_TASK not in meta:
            return params
        related = meta[RELATED_TASK]
        original = related.get("taskId") if isinstance(related, dict) else None
        public = self._by_original.get((upstream, original)) if isinstance(original, str) else None
        rest = {key: value for key, value in meta.items() if key != RELATED_TASK}
        if public is not None:
            rest[RELATED_TASK] = {**related, "taskId": public}
        return {**params, "_meta": rest}

    def notification(self, upstream: str, message: Message) -> Message:
        """``notifications/tasks/status`` (its params are a task) with the public id."""
        params = message.get("params")
        if message.get("method") != "notifications/tasks/status" or not isinstance(params, dict):
            return message
        return {**message, "params": self.publish(upstream, params)}
