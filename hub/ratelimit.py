"""Rate limits and in-flight caps per tenant and per principal.

Token buckets refill at ``requestsPerMinute`` (and ``toolCallsPerMinute``)
and hold ``burst`` tokens; a tenant's bucket bounds all its principals
together and each principal has a bucket of its own at the same rate, so one
noisy principal cannot spend its neighbours' share alone and one tenant
cannot spend another's at all. ``maxConcurrentCalls`` caps a tenant's tool
calls in flight (and its ``tasks/result`` reads waiting for their task, which
hold an upstream request open as a call does). A refusal names the limit and
says when to try again.

On a Redis store the buckets live in Redis (:mod:`hub.shared_limits`), so a
tenant's limit is its total over every hub process; while Redis does not answer,
each process counts in its own buckets (at most one limit per process then).
``maxConcurrentCalls`` is counted per process.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from hub.access import LimitsConfig
from hub.context import Caller
from hub.errors import RateLimited
from hub.shared_limits import SharedBuckets
from hub.store import StoreError

__all__ = ["Limits", "TokenBucket"]

_MAX_BUCKETS: Final = 100_000


class TokenBucket:
    """``capacity`` tokens, refilled at ``rate`` per second."""

    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.stamp = now

    def wait(self, now: float) -> float:
        """Refill; returns 0 when a token is there, else the seconds until one will be."""
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate


@dataclass(frozen=True)
class _Rule:
    name: str
    per_minute: float
    burst: float


class Limits:
    """Every tenant's limits, for one config (a reload makes a new one that keeps nothing)."""

    def __init__(
        self,
        tenants: dict[str, LimitsConfig],
        clock: Callable[[], float] = time.monotonic,
        shared: SharedBuckets | None = None,
    ) -> None:
        self.shared = shared
        self._rules: dict[str, tuple[_Rule | None, _Rule | None, int | None]] = {}
        for tenant, limits in tenants.items():
            requests = tools = None
            if limits.requests_per_minute is not None:
                burst = limits.burst or max(1, int(limits.requests_per_minute / 10))
                requests = _Rule("requestsPerMinute", limits.requests_per_minute, burst)
            if limits.tool_calls_per_minute is not None:
                burst = limits.burst or max(1, int(limits.tool_calls_per_minute / 10))
                tools = _Rule("toolCallsPerMinute", limits.tool_calls_per_minute, burst)
            self._rules[tenant] = (requests, tools, limits.max_concurrent_calls)
        self._clock = clock
        self._buckets: OrderedDict[tuple[str, str, str], TokenBucket] = OrderedDict()
        self._in_flight: dict[str, int] = {}

    def admit(self, caller: Caller, tool_call: bool) -> None:
        """Count one request of ``caller`` (a tool call counts twice: as a request and as a call).

        Raises:
            RateLimited: a bucket of its tenant or principal is empty, or its calls in flight are at the cap.
        """
        rules = self._rules.get(caller.tenant)
        if rules is None:
            return
        requests, tools, concurrent = rules
        now = self._clock()
        if requests is not None:
            self._take(requests, caller, now)
        if tool_call:
            if tools is not None:
                self._take(tools, caller, now)
            self._check_in_flight(caller, concurrent)

    def in_flight(self, tenant: str) -> int:
        """The tenant's calls in flight in this process (what ``maxConcurrentCalls`` caps)."""
        return self._in_flight.get(tenant, 0)

    def check_in_flight(self, caller: Caller) -> None:
        """Raises: RateLimited: the caller's tenant has ``maxConcurrentCalls`` calls in flight."""
        rules = self._rules.get(caller.tenant)
        if rules is not None:
            self._check_in_flight(caller, rules[2])

    async def admit_shared(self, caller: Caller, tool_call: bool) -> None:
        """:meth:`admit`, with the buckets in Redis when the store is Redis.

        Raises:
            RateLimited: as :meth:`admit`.
        """
        rules = self._rules.get(caller.tenant)
        if rules is None:
            return
        if self.shared is None:
            self.admit(caller, tool_call)
            return
        requests, tools, concurrent = rules
        if requests is not None:
            await self._take_shared(self.shared, requests, caller)
        if tool_call:
            if tools is not None:
                await self._take_shared(self.shared, tools, caller)
            self._check_in_flight(caller, concurrent)

    def _check_in_flight(self, caller: Caller, concurrent: int | None) -> None:
        if concurrent is not None and self._in_flight.get(caller.tenant, 0) >= concurrent:
            raise RateLimited(f"tenant '{caller.tenant}': {concurrent} calls in flight (maxConcurrentCalls)")

    async def _take_shared(self, shared: SharedBuckets, rule: _Rule, caller: Caller) -> None:
        scopes = [("tenant", caller.tenant), ("principal", caller.principal)]
        try:
            if not shared.store.reachable:
                raise StoreError("the Redis store is unreachable")  # known already: no request waits its deadline
            empty, wait = await shared.take(rule.name, scopes, rule.per_minute / 60, rule.burst)
        except StoreError:
            self._take(rule, caller, self._clock())  # Redis is away: this process counts alone
            return
        if empty:
            scope, who = scopes[empty - 1]
            raise RateLimited(f"{scope} '{who}': over {rule.per_minute:g} per minute ({rule.name})", wait)

    def _take(self, rule: _Rule, caller: Caller, now: float) -> None:
        buckets = []
        for scope, who in (("tenant", caller.tenant), ("principal", caller.principal)):
            key = (rule.name, scope, who)
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = TokenBucket(rule.per_minute / 60, rule.burst, now)
                self._buckets[key] = bucket
                if len(self._buckets) > _MAX_BUCKETS:
                    self._buckets.popitem(last=False)
            wait = bucket.wait(now)
            if wait:  # refused: nothing taken from any bucket
                raise RateLimited(f"{scope} '{who}': over {rule.per_minute:g} per minute ({rule.name})", wait)
            buckets.append(bucket)
        for bucket in buckets:
            bucket.tokens -= 1

    def caps_calls(self, tenant: str) -> bool:
        """Whether the tenant has a cap on calls in flight (so they need counting)."""
        rules = self._rules.get(tenant)
        return rules is not None and rules[2] is not None

    def call_started(self, tenant: str) -> None:
        self._in_flight[tenant] = self._in_flight.get(tenant, 0) + 1

    def call_ended(self, tenant: str) -> None:
        left = self._in_flight.get(tenant, 0) - 1
        if left > 0:
            self._in_flight[tenant] = left
        else:
            self._in_flight.pop(tenant, None)
