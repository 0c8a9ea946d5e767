"""A client's tasks (the 2025-11-25 experimental tasks) across its upstreams.

Task ids are the upstream's; two upstreams may use the same one, so the hub
shows each task under a public id made from the upstream's name and the
original id, and keeps a table back. Task objects pass through otherwise
unchanged. The table is bounded: past ``capacity`` tasks the oldest is
forgotten (its id then answers as unknown).
"""

from __future__ import annotations

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
                _, oldest = self._by_public.popitem(last=False)
                del self._by_original[oldest]
        return public

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

    def notification(self, upstream: str, message: Message) -> Message:
        """``notifications/tasks/status`` (its params are a task) with the public id."""
        params = message.get("params")
        if message.get("method") != "notifications/tasks/status" or not isinstance(params, dict):
            return message
        return {**message, "params": self.publish(upstream, params)}
