"""A circuit breaker per upstream: after repeated failures, calls fail at once instead of piling up.

Closed, it counts consecutive failures (no connection, no answer in time, an
answer that is not MCP); an answer of any kind, JSON-RPC errors included,
resets the count. At ``failures`` in a row it opens: calls fail at once with
:class:`~connectors.errors.CircuitOpen`, which says when the next try is.
Once the cooldown has passed it is half-open: one trial call goes through;
its success closes the breaker, its failure opens it again for twice as long
(up to ``max_cooldown``). A successful reconnect of the upstream closes it too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from connectors.errors import CircuitOpen
from connectors.status import BreakerState

__all__ = ["CircuitBreaker"]

logger = logging.getLogger(__name__)


class CircuitBreaker:
    """The breaker of one upstream; not thread-safe (one event loop)."""

    def __init__(
        self,
        upstream: str,
        *,
        failures: int = 5,
        cooldown: float = 30.0,
        max_cooldown: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failures < 1 or cooldown <= 0:
            raise ValueError("failures must be >= 1 and cooldown > 0")
        self.upstream = upstream
        self.threshold = failures
        self.base_cooldown = cooldown
        self.max_cooldown = max(max_cooldown, cooldown)
        self._clock = clock
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.opened = 0  # times it opened since it was last closed
        self._cooldown = cooldown
        self._retry_at = 0.0
        self._trial = False

    def check(self) -> None:
        """Let a call through, or refuse it.

        Raises:
            CircuitOpen: the breaker is open, or half-open with its trial call under way.
        """
        if self.state is BreakerState.CLOSED:
            return
        now = self._clock()
        if self.state is BreakerState.OPEN:
            if now < self._retry_at:
                raise CircuitOpen(self.upstream, self.failures, self._retry_at - now)
            self.state = BreakerState.HALF_OPEN
            self._trial = False
        if self._trial:
            raise CircuitOpen(self.upstream, self.failures, 0.0)
        self._trial = True

    def succeeded(self) -> None:
        if self.state is not BreakerState.CLOSED or self.failures:
            self.close()

    def failed(self) -> None:
        self.failures += 1
        if self.state is BreakerState.HALF_OPEN:
            self._cooldown = min(self._cooldown * 2, self.max_cooldown)
            self._open()
        elif self.state is BreakerState.CLOSED and self.failures >= self.threshold:
            self._open()

    def release_trial(self) -> None:
        """The trial call ended without a verdict (cancelled): let another one try."""
        self._trial = False

    def close(self) -> None:
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.opened = 0
        self._cooldown = self.base_cooldown
        self._trial = False

    def _open(self) -> None:
        self.state = BreakerState.OPEN
        self.opened += 1
        self._retry_at = self._clock() + self._cooldown
        self._trial = False
        logger.warning(
            "upstream %s: circuit open after %d failures in a row; calls fail at once for %gs",
            *(self.upstream, self.failures, self._cooldown),
        )

    def snapshot(self) -> dict[str, Any]:
        """For health reports; an open breaker past its cooldown reports half-open (its next call is the trial)."""
        state = self.state
        report: dict[str, Any] = {"state": state.value, "failures": self.failures}
        if state is BreakerState.OPEN:
            left = self._retry_at - self._clock()
            if left > 0:
                report["retryInS"] = round(left, 1)
            else:
                report["state"] = BreakerState.HALF_OPEN.value
        return report
