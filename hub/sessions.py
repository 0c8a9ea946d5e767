"""The session manager: creates, finds, restores and ends session actors, within a cap."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Final, Self

from connectors.jsonrpc import Message
from hub.errors import SessionLimit
from hub.events import EventLog
from hub.session import EndReason, Session, SessionServices
from hub.store import SessionRecord, Store, StoreError

__all__ = ["SessionManager"]

logger = logging.getLogger(__name__)

_SHUTDOWN_DEADLINE: Final = 10.0
_SESSION_ID: Final = re.compile(r"^[0-9a-f]{32}$")


class SessionManager:
    """Owns every session actor; an async context manager run by the app's lifespan."""

    def __init__(self, services: SessionServices, *, store: Store, events: EventLog | None, max_sessions: int) -> None:
        self.max_sessions = max_sessions
        self.idle_timeout = services.idle_timeout
        self.services = services
        self._store = store
        self._events = events
        self._sessions: dict[str, Session] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._tg = asyncio.TaskGroup()
        self._keeper: asyncio.Task[None] | None = None
        self._open = False

    async def __aenter__(self) -> Self:
        await self._store.prune(time.time() - self.idle_timeout)
        await self._tg.__aenter__()
        self._open = True
        self._keeper = self._tg.create_task(self._keep_records(), name="session-records")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._open = False
        with contextlib.suppress(StoreError):
            await self._store.touch(list(self._sessions))
        if self._keeper is not None:
            self._keeper.cancel()
        for session in list(self._sessions.values()):
            session.close(EndReason.SHUTDOWN)
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=_SHUTDOWN_DEADLINE)
            for task in pending:
                task.cancel()
        await self._tg.__aexit__(None, None, None)

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._sessions.values()))

    async def _keep_records(self) -> None:
        # Records say when a session was last alive, so a restart after a crash can still restore it.
        while True:
            await asyncio.sleep(self.idle_timeout / 3)
            try:
                await self._store.touch(list(self._sessions))
            except StoreError as exc:
                logger.warning("%s", exc)

    async def create(self, *, protocol_version: str, client_info: Message, client_capabilities: Message) -> Session:
        """Start a new session actor and record it.

        Raises:
            SessionLimit: the hub already holds ``max_sessions`` sessions, or is shutting down.
        """
        now = time.time()
        record = SessionRecord(secrets.token_hex(16), protocol_version, client_info, client_capabilities, now, now)
        session = self._start_session(record)
        try:
            await self._store.save(record)
        except StoreError as exc:
            logger.warning("session %s will not survive a restart: %s", record.id, exc)
        return session

    async def restore(self, session_id: str) -> Session | None:
        """Take back a session a previous run of the hub recorded, if it has not expired.

        Raises:
            SessionLimit: there is no room for it.
        """
        if not self._open or not _SESSION_ID.match(session_id):
            return None
        try:
            record = await self._store.load(session_id)
        except StoreError as exc:
            logger.warning("%s", exc)
            return None
        if record is None:
            return None
        existing = self._sessions.get(session_id)
        if existing is not None:
            return existing  # restored meanwhile by a concurrent request
        if record.last_seen + self.idle_timeout < time.time():
            with contextlib.suppress(StoreError):
                await self._store.delete(session_id)
            return None
        logger.info("session %s restored from the store", session_id)
        return self._start_session(record)

    def _start_session(self, record: SessionRecord) -> Session:
        if not self._open:
            raise SessionLimit("the hub is shutting down")
        if len(self._sessions) >= self.max_sessions:
            raise SessionLimit(f"the hub holds its maximum of {self.max_sessions} sessions; try again later")
        session = Session(
            record.id,
            self.services,
            protocol_version=record.protocol_version,
            client_info=record.client_info,
            client_capabilities=record.client_capabilities,
        )
        self._sessions[record.id] = session
        task = self._tg.create_task(session.run(self._ended), name=f"session-{record.id[:8]}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        logger.info(
            "session %s opened (%s, %s)", record.id, record.protocol_version, record.client_info.get("name", "?")
        )
        return session

    async def _ended(self, session: Session) -> None:
        if self._sessions.get(session.id) is session:
            del self._sessions[session.id]
        logger.info("session %s closed (%s)", session.id, session.end_reason.value)
        if session.end_reason is not EndReason.SHUTDOWN:
            try:
                await self._store.delete(session.id)
            except StoreError as exc:
                logger.warning("%s", exc)
            if self._events is not None:
                await self._events.forget(session.id)

    def get(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    def broadcast(self, message: Message) -> int:
        """Send a message to every session's GET stream; returns how many took it."""
        return sum(session.send(message) for session in list(self._sessions.values()))

    def subscribers(self, uri: str) -> int:
        """How many sessions are subscribed to a public resource URI."""
        return sum(uri in session.subscriptions for session in self._sessions.values())

    def notify_subscribers(self, uri: str, message: Message) -> int:
        """Send a message to the GET stream of every session subscribed to ``uri``."""
        return sum(session.send(message) for session in list(self._sessions.values()) if uri in session.subscriptions)
