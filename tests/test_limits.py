"""The concurrency cap: a bounded waiting line, a deadline per waiter, counters that always return to zero."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from connectors.limits import Limiter, LimitExceeded

pytestmark = pytest.mark.anyio

WAIT = 5.0
LONG = 3600.0  # a queue deadline that no test may reach


@dataclass
class Holder:
    """A task that asks for a slot and keeps it until ``leave`` is set."""

    limiter: Limiter
    started: asyncio.Event = field(default_factory=asyncio.Event)
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    leave: asyncio.Event = field(default_factory=asyncio.Event)
    peak: list[int] = field(default_factory=list)

    async def run(self) -> None:
        # Setting ``started`` does not suspend, so once a waiter on it resumes, this task has
        # either entered its slot or is parked in the limiter's line.
        self.started.set()
        async with self.limiter.slot():
            self.peak.append(self.limiter.in_use)
            self.entered.set()
            await self.leave.wait()


async def start(holder: Holder) -> asyncio.Task[None]:
    task = asyncio.create_task(holder.run())
    await holder.started.wait()
    return task


async def test_no_more_than_capacity_hold_a_slot_at_once() -> None:
    limiter = Limiter(2, queue_size=10, wait=LONG)
    holders = [Holder(limiter) for _ in range(5)]
    release = asyncio.Event()
    for holder in holders:
        holder.leave = release

    async with asyncio.timeout(WAIT):
        tasks = [await start(holder) for holder in holders]
        assert (limiter.in_use, limiter.waiting) == (2, 3)
        assert sum(holder.entered.is_set() for holder in holders) == 2
        release.set()
        await asyncio.gather(*tasks)

    assert all(holder.entered.is_set() for holder in holders)
    assert max(peak for holder in holders for peak in holder.peak) == 2
    assert (limiter.in_use, limiter.waiting) == (0, 0)


async def test_a_full_waiting_line_is_refused_at_once() -> None:
    limiter = Limiter(1, queue_size=1, wait=LONG)
    holder, waiter = Holder(limiter), Holder(limiter)

    async with asyncio.timeout(WAIT):
        tasks = [await start(holder), await start(waiter)]
        assert (limiter.in_use, limiter.waiting) == (1, 1)

        with pytest.raises(LimitExceeded) as caught:
            async with limiter.slot():
                pytest.fail("entered a slot past a full line")

        assert "waiting" in caught.value.reason
        assert (limiter.in_use, limiter.waiting) == (1, 1)
        holder.leave.set()
        waiter.leave.set()
        await asyncio.gather(*tasks)


async def test_with_no_waiting_line_a_busy_limiter_refuses_at_once() -> None:
    limiter = Limiter(1, queue_size=0, wait=LONG)

    async with asyncio.timeout(WAIT), limiter.slot():
        with pytest.raises(LimitExceeded):
            async with limiter.slot():
                pytest.fail("entered a second slot with capacity 1")


async def test_a_waiter_gets_the_slot_when_it_frees() -> None:
    limiter = Limiter(1, queue_size=1, wait=LONG)
    holder, waiter = Holder(limiter), Holder(limiter)

    async with asyncio.timeout(WAIT):
        tasks = [await start(holder), await start(waiter)]
        assert holder.entered.is_set()
        assert not waiter.entered.is_set()

        holder.leave.set()
        await waiter.entered.wait()

        assert (limiter.in_use, limiter.waiting) == (1, 0)
        waiter.leave.set()
        await asyncio.gather(*tasks)

    assert (limiter.in_use, limiter.waiting) == (0, 0)


async def test_a_waiter_past_its_deadline_is_refused() -> None:
    limiter = Limiter(1, queue_size=1, wait=0.05)

    async with asyncio.timeout(WAIT), limiter.slot():
        with pytest.raises(LimitExceeded) as caught:
            async with limiter.slot():
                pytest.fail("entered a second slot with capacity 1")

        assert "within" in caught.value.reason
        assert (limiter.in_use, limiter.waiting) == (1, 0)

    assert limiter.in_use == 0


async def test_a_cancelled_waiter_leaves_the_line_and_the_slot_stays_usable() -> None:
    limiter = Limiter(1, queue_size=1, wait=LONG)
    holder, waiter = Holder(limiter), Holder(limiter)

    async with asyncio.timeout(WAIT):
        holding = await start(holder)
        waiting = await start(waiter)
        assert limiter.waiting == 1

        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

        assert (limiter.in_use, limiter.waiting) == (1, 0)
        holder.leave.set()
        await holding
        assert (limiter.in_use, limiter.waiting) == (0, 0)

        async with limiter.slot():
            assert limiter.in_use == 1

    assert not waiter.entered.is_set()


async def test_a_cancelled_holder_gives_its_slot_back() -> None:
    limiter = Limiter(1, queue_size=0, wait=LONG)
    holder = Holder(limiter)

    async with asyncio.timeout(WAIT):
        task = await start(holder)
        assert limiter.in_use == 1

        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

        assert limiter.in_use == 0
        async with limiter.slot():
            assert limiter.in_use == 1


async def test_an_error_in_the_body_gives_the_slot_back() -> None:
    limiter = Limiter(1, queue_size=0, wait=LONG)

    with pytest.raises(RuntimeError, match="boom"):
        async with limiter.slot():
            raise RuntimeError("boom")

    assert limiter.in_use == 0


@pytest.mark.parametrize(
    ("capacity", "queue_size", "wait"),
    [(0, 1, 1.0), (1, -1, 1.0), (1, 1, 0.0)],
    ids=["no-capacity", "negative-queue", "no-wait"],
)
def test_a_limiter_with_impossible_bounds_is_refused(capacity: int, queue_size: int, wait: float) -> None:
    with pytest.raises(ValueError):
        Limiter(capacity, queue_size=queue_size, wait=wait)
