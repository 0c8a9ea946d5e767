"""Session records in SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.sqlite_store import SqliteStore as Store
from hub.store import SessionRecord, StoreError

pytestmark = pytest.mark.anyio


def record(session_id: str = "a" * 32, last_seen: float = 100.0) -> SessionRecord:
    return SessionRecord(session_id, "2025-11-25", {"name": "c", "version": "1"}, {"roots": {}}, 50.0, last_seen)


async def test_records_survive_reopening_the_file(tmp_path: Path) -> None:
    path = str(tmp_path / "hub.db")
    async with Store(path) as store:
        await store.save(record())
    async with Store(path) as store:
        assert await store.load("a" * 32) == record()
        assert await store.load("b" * 32) is None


async def test_delete_touch_and_prune() -> None:
    async with Store(":memory:") as store:
        await store.save(record("a" * 32, last_seen=100.0))
        await store.save(record("b" * 32, last_seen=100.0))
        await store.touch(["a" * 32], when=500.0)
        loaded = await store.load("a" * 32)
        assert loaded is not None and loaded.last_seen == 500.0
        assert await store.prune(seen_before=200.0) == 1
        assert await store.load("b" * 32) is None
        await store.delete("a" * 32)
        assert await store.load("a" * 32) is None


async def test_an_unopenable_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot open the session store"):
        async with Store(str(tmp_path / "missing-dir" / "hub.db")):
            pass


async def test_using_a_closed_store_is_an_error() -> None:
    store = Store(":memory:")
    with pytest.raises(StoreError, match="not open"):
        await store.load("a" * 32)


async def test_a_file_from_before_sessions_had_owners_is_brought_up_to_date(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as old:
        old.execute(
            "CREATE TABLE sessions (id TEXT PRIMARY KEY, protocol_version TEXT NOT NULL, client_info TEXT NOT NULL,"
            " client_capabilities TEXT NOT NULL, created REAL NOT NULL, last_seen REAL NOT NULL)"
        )
        old.execute("INSERT INTO sessions VALUES (?, '2025-06-18', '{}', '{}', 1.0, 2.0)", ("c" * 32,))
    async with Store(str(path)) as store:
        loaded = await store.load("c" * 32)
        assert loaded is not None and (loaded.principal, loaded.tenant) == ("", "")
        owned = SessionRecord("d" * 32, "2025-11-25", {}, {}, 1.0, 2.0, principal="key:ci", tenant="acme")
        await store.save(owned)
        assert await store.load("d" * 32) == owned


async def test_audit_records_are_kept_found_and_pruned() -> None:
    from hub.store import AuditQuery, AuditRecord

    def audit(when: float, tenant: str, name: str) -> AuditRecord:
        return AuditRecord(when, tenant, "key:k", "s", "tools/call", name, "up", 1.5, "ok", None, 10, 20, None, "")

    async with Store(":memory:") as store:
        await store.append_audit([audit(t, "acme" if t % 2 else "zeta", f"up__tool{t}") for t in range(10)])
        acme = await store.audit(AuditQuery(tenant="acme"))
        assert [r.time for r in acme] == [9, 7, 5, 3, 1]  # newest first
        assert [r.name for r in await store.audit(AuditQuery(name_glob="up__tool[12]"))] == ["up__tool2", "up__tool1"]
        assert len(await store.audit(AuditQuery(since=8))) == 2
        assert await store.prune_audit(before=3, keep=5) == 5
        assert [r.time for r in await store.audit(AuditQuery())] == [9, 8, 7, 6, 5]
