"""Claiming sessions among replicas, for the session manager: who may take a session back here.

With replicas (:mod:`hub.replicas`), a session is restored on a replica only
once that replica holds its owner key. Requests that take the same session
back at once share one claim: the last of them to finish without a session
here gives it back, never one while another may still start it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from hub.store import StoreError

__all__ = ["Leases", "SessionClaims"]

logger = logging.getLogger(__name__)


class Leases(Protocol):
    """Who owns which session among replicas (:class:`hub.replicas.Replicas`)."""

    run: str
    owned: set[str]

    async def claim(self, session_id: str, replacing: str | None = None) -> str | None: ...

    async def ending(self, session_id: str) -> None: ...

    async def release(self, session_id: str) -> None: ...


class SessionClaims:
    """The claims of sessions being taken back on this replica."""

    def __init__(self, leases: Leases) -> None:
        self.leases = leases
        self._restoring: dict[str, int] = {}

    def busy(self, session_id: str) -> bool:
        """Whether a request is taking the session back here right now."""
        return session_id in self._restoring

    @contextlib.asynccontextmanager
    async def restoring(self, session_id: str, started: Callable[[], bool]) -> AsyncIterator[bool]:
        """Around taking a session back: yields whether this replica holds it (claimed now if nobody
        did); afterwards, the claim is given back if no session ``started`` here and no other
        request is still at it."""
        leases = self.leases
        self._restoring[session_id] = self._restoring.get(session_id, 0) + 1
        try:
            mine = True
            if session_id not in leases.owned:
                try:
                    mine = await leases.claim(session_id) == leases.run
                except StoreError as exc:
                    logger.warning("%s", exc)
                    mine = False
            yield mine
        finally:
            left = self._restoring.pop(session_id) - 1
            if left:
                self._restoring[session_id] = left
            elif not started() and session_id in leases.owned:
                await leases.release(session_id)
