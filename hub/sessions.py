"""The session manager: opens, finds, restores and ends session actors, within caps.

A session belongs to the principal that opened it: :meth:`SessionManager.find`
answers only that principal, and a restarted hub checks the binding before it
takes a session back. At a cap (the hub's ``maxSessions``, a tenant's
``limits.maxSessions``), a session that was opened and never used makes room
(the oldest such, the caller's own first): a client that floods ``initialize``
cannot lock others out. Sessions that have been used are never evicted;
beyond them the hub's cap answers 503 and a tenant's 429.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from types import TracebackType
from typing import Final, Self

from connectors import jsonrpc
from connectors.jsonrpc import Message
from hub.context import ANONYMOUS, Caller
from hub.errors import RateLimited, SessionLimit, ShuttingDown, StoreUnavailable
from hub.events import EventLog
from hub.session import Session
from hub.session_claims import Leases, SessionClaims
from hub.session_services import EndReason, Negotiated, SessionServices, SessionState
from hub.store import SessionRecord, Store, StoreError
from hub.tenants import ANONYMOUS_TENANT, Tenant
from hub.views import CatalogView, ViewRule, Views

__all__ = ["SessionManager"]

logger = logging.getLogger(__name__)

_SHUTDOWN_DEADLINE: Final = 10.0
_SESSION_ID: Final = re.compile(r"^[0-9a-f]{32}$")


class SessionManager:
    """Owns every session actor; an async context manager run by the app's lifespan."""

    def __init__(
        self,
        services: SessionServices,
        views: Views,
        *,
        store: Store,
        events: EventLog | None,
        max_sessions: int,
        store_ready: Callable[[], bool] = lambda: True,
        leases: Leases | None = None,
    ) -> None:
        self.max_sessions = max_sessions
        self.idle_timeout = services.idle_timeout
        self.services = services
        self.views = views
        self._store = store
        self._events = events
        self._sessions: dict[str, Session] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._tg: asyncio.TaskGroup | None = None
        self._accepting = False
        self._stack = contextlib.AsyncExitStack()
        self.store_ready = store_ready
        """Whether the store answers: a shared store that does not gets no new sessions (no split brain)."""
        self.leases = leases
        """With replicas: the session owner keys this replica holds."""
        self.claims = SessionClaims(leases) if leases is not None else None

    async def __aenter__(self) -> Self:
        await self._store.prune(time.time() - self.idle_timeout)
        await self._stack.enter_async_context(self._running())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    @contextlib.asynccontextmanager
    async def _running(self) -> AsyncIterator[None]:
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            self._accepting = True
            keeper = tg.create_task(self._keep_records(), name="session-records")
            try:
                yield
            finally:
                self._accepting = False
                with contextlib.suppress(StoreError):
                    await self._store.touch(list(self._sessions))
                keeper.cancel()
                for session in list(self._sessions.values()):
                    session.close(EndReason.SHUTDOWN)
                if self._tasks:
                    _, pending = await asyncio.wait(self._tasks, timeout=_SHUTDOWN_DEADLINE)
                    for task in pending:
                        task.cancel()
        self._tg = None

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._sessions.values()))

    async def _keep_records(self) -> None:
        # Records say when a session was last alive, so a restart after a crash can still restore it.
        while True:
            await asyncio.sleep(self.idle_timeout / 3)
            try:
                await self._store.touch([s.id for s in self._sessions.values() if s.initialized])
            except StoreError as exc:
                logger.warning("%s", exc)

    # -- opening and ending ------------------------------------------------------------------------

    def stop_accepting(self) -> None:
        """No new sessions from now on (the hub is draining)."""
        self._accepting = False

    def open(self, caller: Caller = ANONYMOUS, tenant: Tenant | None = None, rule: ViewRule | None = None) -> Session:
        """Start a new session actor for ``caller``; it is recorded once its ``initialize`` succeeds.

        Raises:
            SessionLimit: the hub holds ``max_sessions`` sessions in use.
            RateLimited: the caller's tenant holds its ``maxSessions`` in use.
            ShuttingDown: the hub is draining.
            StoreUnavailable: the shared store does not answer.
        """
        if not self.store_ready():
            raise StoreUnavailable(
                "the session store (Redis) is unreachable: no new sessions until it answers; try again shortly"
            )
        return self._start(secrets.token_hex(16), caller, tenant, rule, None)

    def find(self, session_id: str, caller: Caller) -> Session | None:
        """The live session by that id, if ``caller`` is the principal it belongs to."""
        session = self._sessions.get(session_id)
        if session is None or not _owns(caller, session):
            return None  # someone else's session answers exactly like no session
        return session

    def discard(self, session: Session) -> None:
        """End a session whose initialize failed; it never existed for the client."""
        session.close(EndReason.EXPIRED)

    async def restore(
        self, session_id: str, caller: Caller = ANONYMOUS, tenant: Tenant | None = None, rule: ViewRule | None = None
    ) -> Session | None:
        """Take back a session a previous run of the hub (or a replica that is gone) recorded, if it
        has not expired; with replicas, only one this replica owns (or can claim, owned by nobody).

        Raises:
            SessionLimit: there is no room for it.
            ShuttingDown: the hub is draining.
        """
        if not _SESSION_ID.match(session_id):
            return None
        if not self._accepting:
            raise ShuttingDown()  # come back after the restart, when the session can be taken back
        if self.claims is None:
            return await self._restore(session_id, caller, tenant, rule)
        async with self.claims.restoring(session_id, lambda: session_id in self._sessions) as mine:
            return await self._restore(session_id, caller, tenant, rule) if mine else None

    async def _restore(
        self, session_id: str, caller: Caller, tenant: Tenant | None, rule: ViewRule | None
    ) -> Session | None:
        try:
            record = await self._store.load(session_id)
        except StoreError as exc:
            logger.warning("%s", exc)
            return None
        if record is None or (record.principal, record.tenant) != (caller.principal, caller.tenant):
            return None  # not recorded, or recorded for someone else: both answer 404
        existing = self._sessions.get(session_id)
        if existing is not None:
            return existing if _owns(caller, existing) else None
        if record.last_seen + self.idle_timeout < time.time():
            with contextlib.suppress(StoreError):
                await self._store.delete(session_id)
            return None
        logger.info("session %s restored from the store", session_id)
        return self._start(record.id, caller, tenant, rule, record)

    def _start(
        self,
        session_id: str,
        caller: Caller,
        tenant: Tenant | None,
        rule: ViewRule | None,
        record: SessionRecord | None,
    ) -> Session:
        if not self._accepting or self._tg is None:
            raise ShuttingDown()
        tenant = tenant or ANONYMOUS_TENANT
        if tenant.max_sessions is not None:
            mine = [s for s in self._sessions.values() if s.caller.tenant == caller.tenant]
            if len(mine) >= tenant.max_sessions and not self._evict_unused(caller, mine):
                raise RateLimited(
                    f"tenant '{caller.tenant}' holds its maximum of {tenant.max_sessions} sessions (maxSessions)"
                )
        if len(self._sessions) >= self.max_sessions and not self._evict_unused(caller, list(self._sessions.values())):
            raise SessionLimit(f"the hub holds its maximum of {self.max_sessions} sessions; try again later")
        session = Session(
            session_id,
            self.services,
            self.views.view(rule if rule is not None else tenant.rule),
            fixed_view=rule is not None,
            caller=caller,
            created=record.created if record is not None else time.time(),
            headers=tenant.headers,
        )
        if record is not None:
            session.adopt(record.protocol_version, record.client_info, record.client_capabilities)
            session.used = True
        self._sessions[session_id] = session
        task = self._tg.create_task(session.run(self._ended), name=f"session-{session_id[:8]}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return session

    def _evict_unused(self, caller: Caller, among: list[Session]) -> bool:
        unused = [s for s in among if not s.used and s.state is not SessionState.CLOSED]  # oldest first
        own = [s for s in unused if _owns(caller, s)]
        for session in own or unused:
            logger.info("session %s never used; closed to make room", session.id)
            session.close(EndReason.EXPIRED)
            del self._sessions[session.id]
            return True
        return False

    async def record(self, session: Negotiated) -> None:
        """Write a session's record (after its initialize), so a restarted hub can take it back; with
        replicas, claim it first.

        Raises: StoreUnavailable: with replicas, the session could not be claimed or recorded.
        """
        leases = self.leases
        try:
            if leases is not None and session.id not in leases.owned and await leases.claim(session.id) != leases.run:
                raise StoreError(f"session {session.id} is another replica's")  # a new id: never
            await self._store.save(_record_of(session))
        except StoreError as exc:
            if leases is not None:
                # A session no other replica can find, or that two could both serve, is no session.
                await leases.release(session.id)
                raise StoreUnavailable(f"the session could not be recorded in the shared store: {exc}") from exc
            logger.warning("session %s will not survive a restart: %s", session.id, exc)
        logger.info(
            "session %s opened (%s, %s)", session.id, session.protocol_version, session.client_info.get("name", "?")
        )

    async def _ended(self, session: Session) -> None:
        if self._sessions.get(session.id) is session:
            del self._sessions[session.id]
        if not session.initialized:
            return
        logger.info("session %s closed (%s)", session.id, session.end_reason.value)
        if session.end_reason is EndReason.MOVED:
            return  # its record, log and owner key are another replica's now
        if session.end_reason is not EndReason.SHUTDOWN:
            try:
                if self.leases is not None:
                    await self.leases.ending(session.id)  # before the record goes: nobody writes it back
                await self._store.delete(session.id)
            except StoreError as exc:
                logger.warning("%s", exc)
            if self._events is not None:
                await self._events.forget(session.id)
            if self.leases is not None:
                # The record first, the key after: nobody takes back what was ended. (At shutdown the
                # replica gives back every key at once.)
                await self.leases.release(session.id)

    def give_up(self, session_id: str) -> None:
        """Close the local copy of a session another replica took over (its record stays)."""
        session = self._sessions.get(session_id)
        if session is not None:
            session.close(EndReason.MOVED)

    async def rewrite(self, session_id: str) -> bool:
        """Write a session's record again (the shared store lost it); False when that failed."""
        session = self._sessions.get(session_id)
        if session is not None and session.initialized:
            try:
                await self._store.save(_record_of(session))
            except StoreError as exc:
                logger.warning("session %s: its record could not be written back: %s", session_id, exc)
                return False
        return True

    # -- finding and telling -----------------------------------------------------------------------

    def get(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    @property
    def calls_in_flight(self) -> int:
        return sum(session.calls_in_flight for session in self._sessions.values())

    def stop_calls(self) -> None:
        for session in self._sessions.values():
            session.stop_calls()

    def release_streams(self) -> None:
        """End every connection reading a session's stream (clients resume on the next start)."""
        for session in self._sessions.values():
            session.streams.release_all()

    def review(self, view_of: Callable[[Caller], CatalogView]) -> int:
        """Give each session the view ``view_of`` its caller now; a session whose view changed gets
        ``list_changed`` for tools, prompts and resources. Returns how many changed."""
        changed = 0
        for session in list(self._sessions.values()):
            view = view_of(session.caller)
            if session.fixed_view or view.rule == session.view.rule:
                continue
            session.view = view
            changed += 1
            if session.initialized:
                for kind in ("tools", "prompts", "resources"):
                    session.send(jsonrpc.notification(f"notifications/{kind}/list_changed"))
        return changed

    def broadcast(self, message: Message, rule: ViewRule | None = None) -> int:
        """Send a message to the GET stream of every session (under ``rule``); returns how many took it."""
        return sum(
            session.send(message)
            for session in list(self._sessions.values())
            if session.initialized and (rule is None or session.view.rule == rule)
        )

    def broadcast_key(self, message: Message, key: str) -> int:
        """Send a message to every session whose shared upstream sessions are ``key``'s."""
        return sum(
            session.send(message)
            for session in list(self._sessions.values())
            if session.initialized and session.caller.tenant == key
        )

    def subscribed(self, uri: str, tenant: str) -> bool:
        """Whether a session of ``tenant`` is subscribed to a public resource URI."""
        return any(uri in s.subscriptions and s.caller.tenant == tenant for s in self._sessions.values())

    def notify_subscribers(self, uri: str, message: Message, key: str | None = None) -> int:
        """Send a message to the GET stream of every session subscribed to ``uri`` (of ``key``)."""
        return sum(
            session.send(message)
            for session in list(self._sessions.values())
            if uri in session.subscriptions and (key is None or session.caller.tenant == key)
        )


def _record_of(session: Negotiated) -> SessionRecord:
    return SessionRecord(
        session.id,
        session.protocol_version,
        session.client_info,
        session.client_capabilities,
        session.created,
        time.time(),
        session.caller.principal,
        session.caller.tenant,
    )


def _owns(caller: Caller, session: Session) -> bool:
    """A session is its principal's within its tenant: the same subject under another tenant is not its owner."""
    return (session.caller.principal, session.caller.tenant) == (caller.principal, caller.tenant)
