"""A stateless principal's lanes: its concurrent calls spread over a few upstream-session sets."""

from __future__ import annotations

import asyncio
from contextlib import ExitStack
from typing import Any, cast

import pytest

from connectors.upstream_sessions import UpstreamSessions
from hub import stateless
from hub.context import Caller
from hub.errors import SessionLimit
from hub.stateless import PrincipalSet, PrincipalUpstreams
from hub.tenants import Tenant

pytestmark = pytest.mark.anyio

ACME = Tenant("acme")
ANN, BOB, CY, DAN = (Caller(f"key:{name}", "acme") for name in ("ann", "bob", "cy", "dan"))
TASK = {"status": "working", "createdAt": "2026-12-04T00:00:00Z", "lastUpdatedAt": "2026-12-04T00:00:00Z"}


class Sessions:
    """What a set's upstream sessions are here: something to close."""

    def __init__(self, capabilities: dict[str, Any]) -> None:
        self.capabilities = capabilities
        self.closed = asyncio.Event()

    async def aclose(self) -> None:
        self.closed.set()


class Opener:
    def __init__(self) -> None:
        self.opened: list[Sessions] = []

    def __call__(self, *, capabilities: dict[str, Any] | None = None, **_: Any) -> UpstreamSessions:
        self.opened.append(Sessions(capabilities or {}))
        return cast(UpstreamSessions, self.opened[-1])


def upstreams(lanes: int = 4, max_sets: int = 100) -> tuple[PrincipalUpstreams, Opener]:
    opener = Opener()
    return PrincipalUpstreams(opener, max_sets=max_sets, idle_timeout=60, lanes=lanes), opener


def hold(stack: ExitStack, pool: PrincipalUpstreams, caller: Caller, *, spread: bool = True) -> PrincipalSet:
    return stack.enter_context(pool.use(caller, ACME, {}, spread=spread))


async def test_calls_one_after_another_all_take_the_first_lane() -> None:
    pool, opener = upstreams()
    sets = set()
    for _ in range(5):
        with pool.use(ANN, ACME, {}, spread=True) as held:
            sets.add(id(held))
    assert len(sets) == 1 and len(opener.opened) == 1 and len(pool) == 1


async def test_concurrent_calls_open_lanes_up_to_the_limit_then_take_the_least_busy() -> None:
    pool, opener = upstreams(lanes=3)
    with ExitStack() as stack:
        held = [hold(stack, pool, ANN) for _ in range(3)]
        assert len({id(h) for h in held}) == 3 and len(opener.opened) == 3
        fourth, fifth = hold(stack, pool, ANN), hold(stack, pool, ANN)
        assert fourth is not fifth and {id(fourth), id(fifth)} <= {id(h) for h in held}
        assert len(opener.opened) == 3
        assert pool.callers() == [("acme", "key:ann", 5)]  # one row per principal and shape, its lanes summed
    assert pool.callers() == [("acme", "key:ann", 0)] and pool.tenants() == {"acme": 3}
    with pool.use(ANN, ACME, {}, spread=True) as alone:
        assert alone is held[0]  # a call alone takes the first lane


async def test_a_request_that_does_not_spread_stays_on_the_first_lane_however_busy() -> None:
    pool, opener = upstreams()
    with ExitStack() as stack:
        first = hold(stack, pool, ANN)
        assert [hold(stack, pool, ANN, spread=False) for _ in range(3)] == [first] * 3
        assert len(opener.opened) == 1


async def test_extra_lanes_hold_at_most_half_the_bound() -> None:
    pool, opener = upstreams(lanes=4, max_sets=4)
    with ExitStack() as stack:
        anns = {id(hold(stack, pool, ANN)) for _ in range(6)}
        assert len(anns) == 2  # the first lane, and one more while fewer than half of 4 sets were held
        hold(stack, pool, BOB)
        hold(stack, pool, CY)
        assert len(pool) == 4
        with pytest.raises(SessionLimit):
            hold(stack, pool, DAN)  # every set is busy: refused, and nothing of anyone's is taken
        assert not any(s.closed.is_set() for s in opener.opened)


async def test_a_principal_never_shares_a_lane_with_another() -> None:
    pool, _ = upstreams()
    with ExitStack() as stack:
        anns = {id(hold(stack, pool, ANN)) for _ in range(4)}
        bobs = {id(hold(stack, pool, BOB)) for _ in range(4)}
        assert len(anns) == len(bobs) == 4 and not anns & bobs


async def test_an_idle_extra_lane_makes_room_before_anyones_first() -> None:
    pool, opener = upstreams(lanes=2, max_sets=4)
    with ExitStack() as stack:
        first, second = hold(stack, pool, ANN), hold(stack, pool, ANN)
    with ExitStack() as stack:
        hold(stack, pool, BOB)
        hold(stack, pool, CY)
    hold(ExitStack(), pool, DAN)  # four sets held: one must go, and ann's extra lane is the one
    await asyncio.wait_for(opener.opened[1].closed.wait(), 5)
    assert not any(s.closed.is_set() for s in opener.opened if s is not opener.opened[1])
    with pool.use(ANN, ACME, {}, spread=True) as held:
        assert held is first and len(opener.opened) == 5
    assert [row[1] for row in pool.callers()] == ["key:ann", "key:bob", "key:cy", "key:dan"]
    assert first is not second and len(pool) == 4


async def test_a_lowered_bound_is_reached_by_the_next_set_opened() -> None:
    pool, opener = upstreams(max_sets=10)
    for caller in (Caller(f"key:p{i}", "acme") for i in range(8)):
        with pool.use(caller, ACME, {}):
            pass
    pool.max_sets = 2
    with pool.use(ANN, ACME, {}):
        assert len(pool) == 2  # the least recently used idle sets went, as many as it took
    await asyncio.wait_for(asyncio.gather(*(s.closed.wait() for s in opener.opened[:7])), 5)
    assert not opener.opened[7].closed.is_set()


async def test_a_listen_stream_on_the_first_lane_does_not_move_a_lone_call_off_it() -> None:
    pool, opener = upstreams()
    with ExitStack() as stack:
        first = hold(stack, pool, ANN, spread=False)  # a listen stream (or a task's request) holds it
        for _ in range(3):
            with pool.use(ANN, ACME, {}, spread=True) as held:
                assert held is first
        assert len(opener.opened) == 1


async def test_a_lowered_number_of_lanes_stops_the_spreading_at_once() -> None:
    pool, _ = upstreams(lanes=4)
    with ExitStack() as stack:
        lanes = [hold(stack, pool, ANN) for _ in range(4)]
        assert len({id(h) for h in lanes}) == 4
        pool.lanes = 1
        assert [hold(stack, pool, ANN) for _ in range(3)] == [lanes[0]] * 3  # the others only wind down


async def test_an_idle_extra_lane_is_closed_after_a_while_and_the_first_is_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(stateless, "LANE_IDLE_TIMEOUT", 0.05)
    pool, opener = upstreams()
    async with pool:
        with ExitStack() as stack:
            hold(stack, pool, ANN)
            hold(stack, pool, ANN)
        await asyncio.wait_for(opener.opened[1].closed.wait(), 5)
        assert not opener.opened[0].closed.is_set() and len(pool) == 1


async def test_a_task_is_found_on_the_lane_that_made_it() -> None:
    pool, _ = upstreams()
    with ExitStack() as stack:
        lanes = [hold(stack, pool, ANN) for _ in range(3)]
        public = lanes[2].tasks.public_id("alpha", "t-1")
        lanes[2].bridges.created({**TASK, "taskId": public}, {})
    with pool.use_task(ANN, ACME, {}, public) as held:
        assert held is lanes[2]
    with pool.use_task(BOB, ACME, {}, public) as held:
        assert all(held is not lane for lane in lanes)  # another principal's lookup finds none of ann's
