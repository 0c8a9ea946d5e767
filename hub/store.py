"""Durable session records and the SSE event log, so a restarted hub takes its clients back.

The only module that imports aiosqlite. ``":memory:"`` keeps everything for
the life of the process only. A session record holds what ``initialize``
settled (the version, the client's info and capabilities); upstream sessions
are never stored: a restored session opens fresh ones on first use. The event
log holds the events of SSE streams for replay on ``Last-Event-ID``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import aiosqlite

from connectors import jsonrpc
from hub.errors import HubError

__all__ = ["EventRow", "SessionRecord", "Store", "StoreError"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    protocol_version TEXT NOT NULL,
    client_info TEXT NOT NULL,
    client_capabilities TEXT NOT NULL,
    created REAL NOT NULL,
    last_seen REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    session_id TEXT NOT NULL,
    run TEXT NOT NULL,
    stream INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    created REAL NOT NULL,
    message BLOB NOT NULL,
    PRIMARY KEY (session_id, run, stream, seq)
);
CREATE INDEX IF NOT EXISTS events_created ON events (created);
"""


def _directory_missing(path: str) -> bool:
    return path != ":memory:" and not os.path.isdir(os.path.dirname(os.path.abspath(path)))


class StoreError(HubError):
    """The session store could not be read or written."""


@dataclass(frozen=True)
class SessionRecord:
    id: str
    protocol_version: str
    client_info: dict[str, Any]
    client_capabilities: dict[str, Any]
    created: float
    last_seen: float


@dataclass(frozen=True)
class EventRow:
    session_id: str
    run: str
    stream: int
    seq: int
    created: float
    data: bytes
    """The event's JSON message, as written to clients."""


class Store:
    """Session records in SQLite; an async context manager."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None

    async def __aenter__(self) -> Self:
        if _directory_missing(self.path):
            # Checked first: a failed aiosqlite connect leaves its worker thread to finish on its own.
            raise StoreError(f"cannot open the session store at {self.path}: its directory does not exist")
        try:
            self._db = await aiosqlite.connect(self.path)
            if self.path != ":memory:":
                await self._db.execute("PRAGMA journal_mode=WAL")
            await self._db.executescript(_SCHEMA)
            await self._db.commit()
        except (aiosqlite.Error, OSError) as exc:
            if self._db is not None:
                await self._db.close()
                self._db = None
            raise StoreError(f"cannot open the session store at {self.path}: {exc}") from exc
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError("the session store is not open")
        return self._db

    async def save(self, record: SessionRecord) -> None:
        """Insert or replace a record. Raises: StoreError."""
        await self._write(
            "INSERT OR REPLACE INTO sessions VALUES (?, ?, ?, ?, ?, ?)",
            (
                record.id,
                record.protocol_version,
                jsonrpc.dumps(record.client_info).decode(),
                jsonrpc.dumps(record.client_capabilities).decode(),
                record.created,
                record.last_seen,
            ),
        )

    async def load(self, session_id: str) -> SessionRecord | None:
        """The record for ``session_id``, if there is one. Raises: StoreError."""
        try:
            async with self.db.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)) as cursor:
                row = await cursor.fetchone()
        except aiosqlite.Error as exc:
            raise StoreError(f"cannot read the session store: {exc}") from exc
        if row is None:
            return None
        return SessionRecord(row[0], row[1], jsonrpc.loads(row[2]), jsonrpc.loads(row[3]), row[4], row[5])

    async def delete(self, session_id: str) -> None:
        """Forget a session. Raises: StoreError."""
        await self._write("DELETE FROM sessions WHERE id = ?", (session_id,))

    async def touch(self, session_ids: Iterable[str], when: float | None = None) -> None:
        """Mark sessions as seen at ``when`` (now by default). Raises: StoreError."""
        moment = time.time() if when is None else when
        try:
            await self.db.executemany(
                "UPDATE sessions SET last_seen = ? WHERE id = ?", [(moment, sid) for sid in session_ids]
            )
            await self.db.commit()
        except aiosqlite.Error as exc:
            raise StoreError(f"cannot write the session store: {exc}") from exc

    async def prune(self, seen_before: float) -> int:
        """Delete records last seen before ``seen_before``; returns how many. Raises: StoreError."""
        try:
            cursor = await self.db.execute("DELETE FROM sessions WHERE last_seen < ?", (seen_before,))
            await self.db.commit()
        except aiosqlite.Error as exc:
            raise StoreError(f"cannot write the session store: {exc}") from exc
        return cursor.rowcount

    async def append_events(self, rows: list[EventRow]) -> None:
        """Add events to the log. Raises: StoreError."""
        try:
            await self.db.executemany(
                "INSERT OR REPLACE INTO events VALUES (?, ?, ?, ?, ?, ?)",
                [(r.session_id, r.run, r.stream, r.seq, r.created, r.data) for r in rows],
            )
            await self.db.commit()
        except aiosqlite.Error as exc:
            raise StoreError(f"cannot write the event log: {exc}") from exc

    async def events_after(self, session_id: str, run: str, stream: int, seq: int) -> list[tuple[int, bytes]]:
        """The logged events of one stream after ``seq``, in order. Raises: StoreError."""
        try:
            async with self.db.execute(
                "SELECT seq, message FROM events"
                " WHERE session_id = ? AND run = ? AND stream = ? AND seq > ? ORDER BY seq",
                (session_id, run, stream, seq),
            ) as cursor:
                rows = await cursor.fetchall()
        except aiosqlite.Error as exc:
            raise StoreError(f"cannot read the event log: {exc}") from exc
        # Rows written by earlier versions hold text.
        return [(row[0], row[1] if isinstance(row[1], bytes) else str(row[1]).encode()) for row in rows]

    async def prune_events(self, created_before: float, keep: int) -> int:
        """Drop events older than ``created_before`` and all but the newest ``keep``. Raises: StoreError."""
        try:
            old = await self.db.execute("DELETE FROM events WHERE created < ?", (created_before,))
            extra = await self.db.execute(
                "DELETE FROM events WHERE rowid IN (SELECT rowid FROM events ORDER BY created DESC LIMIT -1 OFFSET ?)",
                (keep,),
            )
            await self.db.commit()
        except aiosqlite.Error as exc:
            raise StoreError(f"cannot write the event log: {exc}") from exc
        return old.rowcount + extra.rowcount

    async def delete_events(self, session_id: str) -> None:
        """Forget a session's events. Raises: StoreError."""
        await self._write("DELETE FROM events WHERE session_id = ?", (session_id,))

    async def _write(self, sql: str, args: tuple[Any, ...]) -> None:
        try:
            await self.db.execute(sql, args)
            await self.db.commit()
        except aiosqlite.Error as exc:
            raise StoreError(f"cannot write the session store: {exc}") from exc
