"""The write-behind event log: queued without blocking, flushed in batches, replayed, forgotten."""

from __future__ import annotations

import asyncio

import pytest

from hub.events import EventLog
from hub.sqlite_store import SqliteStore
from hub.streams import Event

pytestmark = pytest.mark.anyio


async def test_logged_events_replay_in_order_after_a_position() -> None:
    async with SqliteStore(":memory:") as store, EventLog(store, max_age=60, max_events=100) as log:
        for seq in range(1, 5):
            log.record("s1", "run", 3, Event(seq, b'{"n":%d}' % seq, False))
        log.record("s2", "run", 3, Event(1, b"{}", False))
        assert log.backlog == 5
        assert await log.replay("s1", "run", 3, 2) == [(3, b'{"n":3}'), (4, b'{"n":4}')]
        assert log.backlog == 0  # replay flushed first
        assert await log.replay("s1", "other-run", 3, 0) == []


async def test_a_forgotten_session_has_nothing_to_replay() -> None:
    async with SqliteStore(":memory:") as store, EventLog(store, max_age=60, max_events=100) as log:
        log.record("s1", "run", 0, Event(1, b"{}", False))
        await log.forget("s1")
        assert await log.replay("s1", "run", 0, 0) == []


async def test_what_is_queued_is_written_when_the_log_closes(tmp_path: object) -> None:
    path = str(tmp_path) + "/events.db"
    async with SqliteStore(path) as store:
        async with EventLog(store, max_age=60, max_events=100) as log:
            log.record("s1", "run", 1, Event(1, b'{"last":true}', True))
        assert await store.events_after("s1", "run", 1, 0) == [(1, b'{"last":true}')]


async def test_a_log_written_through_says_where_each_event_is_and_settles_it_even_after_a_forget() -> None:
    async with SqliteStore(":memory:") as store, EventLog(store, max_age=60, max_events=100, durable=5.0) as log:
        first = log.record("gone", "run", 1, Event(1, b"{}", False))
        second = log.record("kept", "run", 1, Event(1, b'{"n":1}', False))
        assert first is not None and second is not None and second > first
        await log.forget("gone")  # taken out of the queue: it must not hold back what comes after it
        async with asyncio.timeout(1.0):
            await log.settle(second)
        assert await store.events_after("kept", "run", 1, 0) == [(1, b'{"n":1}')]


async def test_a_log_written_behind_gives_no_place_to_wait_for() -> None:
    async with SqliteStore(":memory:") as store, EventLog(store, max_age=60, max_events=100) as log:
        assert log.record("s1", "run", 1, Event(1, b"{}", False)) is None
