"""The embedded store: session records, the SSE event log and audit records in SQLite.

The only module that imports aiosqlite. ``":memory:"`` keeps everything for
the life of the process only. Files made by earlier versions are brought up
to date when opened.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Final, Self

import aiosqlite

from connectors import jsonrpc
from hub.store import AuditQuery, AuditRecord, EventRow, SessionRecord, StoreError

__all__ = ["SqliteStore"]

_SCHEMA: Final = """
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
CREATE TABLE IF NOT EXISTS audit (
    time REAL NOT NULL,
    tenant TEXT NOT NULL,
    principal TEXT NOT NULL,
    session TEXT NOT NULL,
    method TEXT NOT NULL,
    name TEXT NOT NULL,
    upstream TEXT NOT NULL,
    duration_ms REAL NOT NULL,
    outcome TEXT NOT NULL,
    code INTEGER,
    bytes_in INTEGER NOT NULL,
    bytes_out INTEGER NOT NULL,
    arguments TEXT,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_time ON audit (time);
"""
_SESSION_COLUMNS: Final = {"principal": "TEXT NOT NULL DEFAULT ''", "tenant": "TEXT NOT NULL DEFAULT ''"}


def _directory_missing(path: str) -> bool:
    return path != ":memory:" and not os.path.isdir(os.path.dirname(os.path.abspath(path)))


class SqliteStore:
    """The store in SQLite; an async context manager."""

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
            async with self._db.execute("PRAGMA table_info(sessions)") as cursor:
                have = {row[1] for row in await cursor.fetchall()}
            for column, kind in _SESSION_COLUMNS.items():
                if column not in have:  # a file from before sessions were bound to their principal
                    await self._db.execute(f"ALTER TABLE sessions ADD COLUMN {column} {kind}")
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
            "INSERT OR REPLACE INTO sessions"
            " (id, protocol_version, client_info, client_capabilities, created, last_seen, principal, tenant)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.id,
                record.protocol_version,
                jsonrpc.dumps(record.client_info).decode(),
                jsonrpc.dumps(record.client_capabilities).decode(),
                record.created,
                record.last_seen,
                record.principal,
                record.tenant,
            ),
        )

    async def load(self, session_id: str) -> SessionRecord | None:
        """The record for ``session_id``, if there is one. Raises: StoreError."""
        try:
            async with self.db.execute(
                "SELECT id, protocol_version, client_info, client_capabilities, created, last_seen, principal, tenant"
                " FROM sessions WHERE id = ?",
                (session_id,),
            ) as cursor:
                row = await cursor.fetchone()
        except aiosqlite.Error as exc:
            raise StoreError(f"cannot read the session store: {exc}") from exc
        if row is None:
            return None
        info, capabilities = jsonrpc.loads(row[2]), jsonrpc.loads(row[3])
        return SessionRecord(row[0], row[1], info, capabilities, row[4], row[5], row[6], row[7])

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

    async def events_after(
        self, session_id: str, run: str, stream: int, seq: int, upto: int | None = None
    ) -> list[tuple[int, bytes]]:
        """The logged events of one stream after ``seq`` (up to ``upto``), in order. Raises: StoreError."""
        try:
            async with self.db.execute(
                "SELECT seq, message FROM events"
                " WHERE session_id = ? AND run = ? AND stream = ? AND seq > ? AND seq <= ? ORDER BY seq",
                (session_id, run, stream, seq, upto if upto is not None else 2**62),
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

    async def append_audit(self, records: list[AuditRecord]) -> None:
        """Add audit records. Raises: StoreError."""
        try:
            await self.db.executemany(
                "INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        r.time,
                        r.tenant,
                        r.principal,
                        r.session,
                        r.method,
                        r.name,
                        r.upstream,
                        r.duration_ms,
                        r.outcome,
                        r.code,
                        r.bytes_in,
                        r.bytes_out,
                        r.arguments,
                        r.detail,
                    )
                    for r in records
                ],
            )
            await self.db.commit()
        except aiosqlite.Error as exc:
            raise StoreError(f"cannot write the audit log: {exc}") from exc

    async def audit(self, query: AuditQuery) -> list[AuditRecord]:
        """Audit records matching ``query``, newest first. Raises: StoreError."""
        clauses: list[str] = ["time >= ?"]
        args: list[Any] = [query.since]
        if query.tenant is not None:
            clauses.append("tenant = ?")
            args.append(query.tenant)
        if query.name_glob is not None:
            clauses.append("name GLOB ?")
            args.append(query.name_glob)
        sql = f"SELECT * FROM audit WHERE {' AND '.join(clauses)} ORDER BY time DESC LIMIT ?"
        try:
            async with self.db.execute(sql, (*args, query.limit)) as cursor:
                rows = await cursor.fetchall()
        except aiosqlite.Error as exc:
            raise StoreError(f"cannot read the audit log: {exc}") from exc
        return [AuditRecord(*row) for row in rows]

    async def prune_audit(self, before: float, keep: int) -> int:
        """Drop audit records older than ``before`` and all but the newest ``keep``. Raises: StoreError."""
        try:
            old = await self.db.execute("DELETE FROM audit WHERE time < ?", (before,))
            extra = await self.db.execute(
                "DELETE FROM audit WHERE rowid IN (SELECT rowid FROM audit ORDER BY time DESC LIMIT -1 OFFSET ?)",
                (keep,),
            )
            await self.db.commit()
        except aiosqlite.Error as exc:
            raise StoreError(f"cannot write the audit log: {exc}") from exc
        return old.rowcount + extra.rowcount

    async def _write(self, sql: str, args: tuple[Any, ...]) -> None:
        try:
            await self.db.execute(sql, args)
            await self.db.commit()
        except aiosqlite.Error as exc:
            raise StoreError(f"cannot write the session store: {exc}") from exc
