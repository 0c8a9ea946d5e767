"""Picks the store ``hub.storage`` names: a SQLite file (or ``:memory:``), or a Redis URL."""

from __future__ import annotations

from hub.redis_store import RedisStore
from hub.schema import HubSettings
from hub.sqlite_store import SqliteStore
from hub.store import Store

__all__ = ["open_store"]


def open_store(settings: HubSettings, redis_password: str | None = None) -> Store:
    """The store ``settings.storage`` names, not yet entered."""
    if settings.replicated:
        return RedisStore(
            settings.storage,
            password=redis_password,
            timeout=settings.redis.timeout,
            prefix=settings.redis.key_prefix,
            events_kept=settings.events.max_logged,
            events_max_age=settings.events.max_age,
        )
    return SqliteStore(settings.storage)
