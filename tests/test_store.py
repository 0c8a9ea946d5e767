"""Session records in SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.store import SessionRecord, Store, StoreError

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
