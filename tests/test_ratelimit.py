"""Token buckets and in-flight caps per tenant and principal, on a clock the test moves."""

from __future__ import annotations

import pytest

from hub.access import LimitsConfig
from hub.context import Caller
from hub.errors import RateLimited
from hub.ratelimit import Limits

A1 = Caller("key:a1", "acme")
A2 = Caller("key:a2", "acme")
Z1 = Caller("key:z1", "zeta")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_refusal_naming_the_limit_with_when_to_retry() -> None:
    clock = Clock()
    limits = Limits({"acme": LimitsConfig(requests_per_minute=60, burst=3)}, clock)
    for _ in range(3):
        limits.admit(A1, tool_call=False)
    with pytest.raises(RateLimited, match=r"tenant 'acme': over 60 per minute \(requestsPerMinute\)") as caught:
        limits.admit(A1, tool_call=False)
    assert caught.value.headers == {"retry-after": "1"}
    clock.now += 1.0  # one token back at one per second
    limits.admit(A1, tool_call=False)


def test_the_tenant_bucket_bounds_its_principals_together_and_spares_other_tenants() -> None:
    clock = Clock()
    limits = Limits({"acme": LimitsConfig(requests_per_minute=60, burst=2), "zeta": LimitsConfig()}, clock)
    limits.admit(A1, tool_call=False)
    limits.admit(A2, tool_call=False)
    with pytest.raises(RateLimited, match="tenant 'acme'"):
        limits.admit(A2, tool_call=False)
    for _ in range(100):
        limits.admit(Z1, tool_call=False)  # zeta has no limits; acme's state is not its


def test_a_refusal_takes_nothing_from_any_bucket() -> None:
    clock = Clock()
    limits = Limits({"acme": LimitsConfig(requests_per_minute=60, burst=1)}, clock)
    limits.admit(A1, tool_call=False)
    for _ in range(5):
        with pytest.raises(RateLimited):
            limits.admit(A1, tool_call=False)
    clock.now += 1.0
    limits.admit(A1, tool_call=False)  # refusals did not push the refill further away


def test_tool_calls_have_a_bucket_of_their_own() -> None:
    clock = Clock()
    limits = Limits({"acme": LimitsConfig(tool_calls_per_minute=60, burst=1)}, clock)
    limits.admit(A1, tool_call=True)
    limits.admit(A1, tool_call=False)  # other requests are not tool calls
    with pytest.raises(RateLimited, match="toolCallsPerMinute"):
        limits.admit(A1, tool_call=True)


def test_calls_in_flight_are_capped_per_tenant() -> None:
    limits = Limits({"acme": LimitsConfig(max_concurrent_calls=2)})
    assert limits.caps_calls("acme") and not limits.caps_calls("zeta")
    for _ in range(2):
        limits.admit(A1, tool_call=True)
        limits.call_started("acme")
    with pytest.raises(RateLimited, match=r"tenant 'acme': 2 calls in flight \(maxConcurrentCalls\)"):
        limits.admit(A2, tool_call=True)
    limits.call_ended("acme")
    limits.admit(A2, tool_call=True)
