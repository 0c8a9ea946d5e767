"""The bound on long-lived streams per upstream: the stream idle the longest makes room."""

from __future__ import annotations

import pytest

from connectors.stream_budget import StreamBudget


class Holder:
    def __init__(self, last_active: float, busy: bool = False) -> None:
        self.last_active = last_active
        self.busy = busy
        self.evicted = False

    def evictable(self) -> bool:
        return not self.busy

    def evict(self) -> None:
        self.evicted = True


def test_within_capacity_everyone_gets_a_place() -> None:
    budget = StreamBudget(2)
    first, second = Holder(1), Holder(2)
    assert budget.acquire(first) and budget.acquire(second) and budget.acquire(first)
    assert len(budget) == 2 and not first.evicted


def test_when_full_the_least_recently_active_idle_stream_is_evicted() -> None:
    budget = StreamBudget(2)
    old, busy_older, newcomer = Holder(5), Holder(1, busy=True), Holder(9)
    budget.acquire(old)
    budget.acquire(busy_older)
    assert budget.acquire(newcomer)
    assert old.evicted and not busy_older.evicted
    assert len(budget) == 2


def test_a_budget_full_of_busy_streams_refuses_and_release_gives_the_place_back() -> None:
    budget = StreamBudget(1)
    busy = Holder(1, busy=True)
    budget.acquire(busy)
    other = Holder(2)
    assert not budget.acquire(other)
    budget.release(busy)
    assert budget.acquire(other)


def test_a_budget_needs_room_for_one() -> None:
    with pytest.raises(ValueError, match="capacity"):
        StreamBudget(0)
