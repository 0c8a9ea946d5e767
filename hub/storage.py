"""Picks the store ``hub.storage`` names."""

from __future__ import annotations

from hub.sqlite_store import SqliteStore
from hub.store import Store

__all__ = ["open_store"]


def open_store(storage: str) -> Store:
    """The store for ``storage`` (a SQLite file, or ``:memory:``), not yet entered."""
    return SqliteStore(storage)
