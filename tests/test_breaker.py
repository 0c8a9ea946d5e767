"""The circuit breaker of one upstream, on a clock the test moves."""

from __future__ import annotations

import pytest

from connectors.breaker import CircuitBreaker
from connectors.errors import CircuitOpen
from connectors.status import BreakerState


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def state(b: CircuitBreaker) -> BreakerState:
    return b.state  # read through a call: each assertion sees the state afresh


def breaker(clock: Clock) -> CircuitBreaker:
    return CircuitBreaker("a", failures=3, cooldown=10, max_cooldown=30, clock=clock)


def test_it_opens_after_failures_in_a_row_and_says_when_it_retries(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(2):
        b.check()
        b.failed()
    assert state(b) is BreakerState.CLOSED and not caplog.records
    b.failed()
    assert state(b) is BreakerState.OPEN
    assert caplog.messages == ["upstream a: circuit open after 3 failures in a row; calls fail at once for 10s"]
    clock.now += 4
    with pytest.raises(CircuitOpen, match=r"upstream 'a': circuit open after 3 failures in a row; next try in 6.0s"):
        b.check()
    assert b.snapshot() == {"state": "open", "failures": 3, "retryInS": 6.0}


def test_an_answer_resets_the_count() -> None:
    b = breaker(Clock())
    b.failed()
    b.failed()
    b.succeeded()
    b.failed()
    b.failed()
    assert state(b) is BreakerState.CLOSED and b.failures == 2


def test_after_the_cooldown_one_trial_goes_through_and_its_success_closes_it() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.failed()
    clock.now += 10
    b.check()  # the trial
    assert state(b) is BreakerState.HALF_OPEN
    with pytest.raises(CircuitOpen):
        b.check()  # only one trial at a time
    b.succeeded()
    assert state(b) is BreakerState.CLOSED
    b.check()


def test_a_failed_trial_opens_it_again_for_longer_up_to_the_cap() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.failed()
    for expected in (20.0, 30.0, 30.0):
        clock.now += 100
        b.check()
        b.failed()
        assert state(b) is BreakerState.OPEN
        assert b.snapshot()["retryInS"] == expected


def test_a_trial_that_ends_without_a_verdict_lets_another_try() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.failed()
    clock.now += 10
    b.check()
    b.release_trial()
    b.check()  # not refused
    assert state(b) is BreakerState.HALF_OPEN
