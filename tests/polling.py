"""Waiting on a condition that has no event to wait on (what the other end of a socket did), under a deadline."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Final

POLL: Final = 0.02
"""Between two looks at the condition."""
LIMIT: Final = 10.0


async def until(condition: Callable[[], bool | Awaitable[bool]], what: str, limit: float = LIMIT) -> float:
    """Poll ``condition`` until it holds; returns the seconds it took. Fails after ``limit`` seconds."""
    started = time.monotonic()
    for _ in range(int(limit / POLL) + 1):
        holds = condition()
        if inspect.isawaitable(holds):
            holds = await holds
        if holds:
            return time.monotonic() - started
        if time.monotonic() - started > limit:
            break
        await asyncio.sleep(POLL)
    raise AssertionError(f"not within {limit}s: {what}")
