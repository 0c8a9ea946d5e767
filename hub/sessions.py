"""The session manager: creates, finds and ends session actors, within a cap."""

from __future__ import annotations

import asyncio
import logging
import secrets
from types import TracebackType
from typing import Self

from connectors.jsonrpc import Message
from connectors.pool import ConnectorPool
from hub.catalog import Catalog
from hub.errors import SessionLimit
from hub.session import Session

__all__ = ["SessionManager"]

logger = logging.getLogger(__name__)

_SHUTDOWN_DEADLINE = 10.0


class SessionManager:
    """Owns every session actor; an async context manager run by the app's lifespan."""

    def __init__(self, *, pool: ConnectorPool, catalog: Catalog, max_sessions: int, idle_timeout: float) -> None:
        self.max_sessions = max_sessions
        self.idle_timeout = idle_timeout
        self._pool = pool
        self._catalog = catalog
        self._sessions: dict[str, Session] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._tg = asyncio.TaskGroup()
        self._open = False

    async def __aenter__(self) -> Self:
        await self._tg.__aenter__()
        self._open = True
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._open = False
        for session in list(self._sessions.values()):
            session.close()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=_SHUTDOWN_DEADLINE)
            for task in pending:
                task.cancel()
        await self._tg.__aexit__(None, None, None)

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, *, protocol_version: str, client_info: Message, client_capabilities: Message) -> Session:
        """Start a new session actor.

        Raises:
            SessionLimit: the hub already holds ``max_sessions`` sessions, or is shutting down.
        """
        if not self._open:
            raise SessionLimit("the hub is shutting down")
        if len(self._sessions) >= self.max_sessions:
            raise SessionLimit(f"the hub holds its maximum of {self.max_sessions} sessions; try again later")
        session_id = secrets.token_hex(16)
        session = Session(
            session_id,
            protocol_version=protocol_version,
            client_info=client_info,
            client_capabilities=client_capabilities,
            upstreams=self._pool.open_session(),
            catalog=self._catalog,
            idle_timeout=self.idle_timeout,
        )
        self._sessions[session_id] = session
        task = self._tg.create_task(session.run(self._ended), name=f"session-{session_id[:8]}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        logger.info("session %s opened (%s, %s)", session_id, protocol_version, client_info.get("name", "?"))
        return session

    def _ended(self, session: Session) -> None:
        if self._sessions.get(session.id) is session:
            del self._sessions[session.id]
            logger.info("session %s closed", session.id)

    def get(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    def broadcast(self, message: Message) -> int:
        """Send a message to every session with an open GET stream; returns how many took it."""
        return sum(session.send(message) for session in list(self._sessions.values()))
