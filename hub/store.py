"""What the hub keeps beyond one run: session records, the SSE event log, audit records.

One interface (:class:`Store`) with an embedded implementation in SQLite
(:mod:`hub.sqlite_store`); :func:`hub.storage.open_store` picks one from ``hub.storage``.
A session record holds what ``initialize`` settled (the version, the client's
info and capabilities) and whom the session belongs to; upstream sessions are
never stored: a restored session opens fresh ones on first use.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self

from hub.errors import HubError

__all__ = ["AuditQuery", "AuditRecord", "EventRow", "SessionRecord", "Store", "StoreError"]


class StoreError(HubError):
    """The store could not be read or written."""


@dataclass(frozen=True)
class SessionRecord:
    id: str
    protocol_version: str
    client_info: dict[str, Any]
    client_capabilities: dict[str, Any]
    created: float
    last_seen: float
    principal: str = ""
    tenant: str = ""


@dataclass(frozen=True)
class EventRow:
    session_id: str
    run: str
    stream: int
    seq: int
    created: float
    data: bytes
    """The event's JSON message, as written to clients."""


@dataclass(frozen=True)
class AuditRecord:
    """One call or refusal, as ``manifold audit`` shows it. Never a secret."""

    time: float
    tenant: str
    principal: str
    session: str
    method: str
    name: str
    upstream: str
    duration_ms: float
    outcome: str
    """``ok``, ``isError`` (the tool said so), ``error`` (with ``code``) or ``refused``."""
    code: int | None
    bytes_in: int
    bytes_out: int
    arguments: str | None
    detail: str


@dataclass(frozen=True)
class AuditQuery:
    since: float = 0.0
    tenant: str | None = None
    name_glob: str | None = None
    limit: int = 1000


class Store(Protocol):
    """The store's interface; an async context manager. Every method raises StoreError."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def save(self, record: SessionRecord) -> None: ...

    async def load(self, session_id: str) -> SessionRecord | None: ...

    async def delete(self, session_id: str) -> None: ...

    async def touch(self, session_ids: Iterable[str], when: float | None = None) -> None: ...

    async def prune(self, seen_before: float) -> int: ...

    async def append_events(self, rows: list[EventRow]) -> None: ...

    async def events_after(
        self, session_id: str, run: str, stream: int, seq: int, upto: int | None = None
    ) -> list[tuple[int, bytes]]: ...

    async def prune_events(self, created_before: float, keep: int) -> int: ...

    async def delete_events(self, session_id: str) -> None: ...

    async def append_audit(self, records: list[AuditRecord]) -> None: ...

    async def audit(self, query: AuditQuery) -> list[AuditRecord]: ...

    async def prune_audit(self, before: float, keep: int) -> int: ...
