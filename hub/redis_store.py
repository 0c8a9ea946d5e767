"""The store in Redis: session records, the SSE event log and audit records, shared by hub processes.

The only module that imports the Redis client. ``hub.storage`` names it with a
``redis://`` (or ``rediss://`` for TLS) URL; a password comes from the URL or
from ``MANIFOLD_REDIS_PASSWORD``. Every call has a deadline
(``hub.redis.timeout``); a failed call raises :class:`StoreError` and marks the
store unreachable until a call (or the probe, every second) succeeds again
(:attr:`RedisStore.reachable`).

Layout, under one key prefix: a hash per session record plus an index by last
activity (so :meth:`prune` works as SQLite's does); one sorted set per
(session, run, stream) of logged events (score: the event's sequence number),
trimmed to ``keep`` and expiring with the log's age; audit records in one
Redis stream, trimmed by age and count. Whatever else needs Redis goes
through :meth:`RedisStore.call`, which keeps the deadline and the bookkeeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from fnmatch import fnmatchcase
from types import TracebackType
from typing import Any, Final, Self, TypeVar, cast
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from connectors import jsonrpc
from hub.store import AuditQuery, AuditRecord, EventRow, SessionRecord, StoreError

__all__ = ["RedisStore", "redacted"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_EVENT_TTL_SLACK: Final = 60  # seconds an event key outlives the log's max age
_PROBE_EVERY: Final = 1.0
_TOUCH: Final = (
    "for _, key in ipairs(KEYS) do"
    " if redis.call('EXISTS', key) == 1 then redis.call('HSET', key, 'last_seen', ARGV[1]) end end"
)
_AUDIT_FIELDS: Final = tuple(AuditRecord.__dataclass_fields__)


def redacted(url: str) -> str:
    """The URL without its password, for logs and health."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return parts._replace(netloc=f"{user}{host}{port}").geturl()


def _seq_member(seq: int, data: bytes) -> bytes:
    return seq.to_bytes(8, "big") + data


class RedisStore:
    """The store in Redis; an async context manager."""

    def __init__(
        self,
        url: str,
        *,
        password: str | None = None,
        timeout: float = 1.0,
        prefix: str = "manifold",
        events_kept: int = 100_000,
        events_max_age: float = 300.0,
    ) -> None:
        self.url = url
        self.events_kept = events_kept
        """Events kept per stream (``hub.events.maxLogged``)."""
        self.events_max_age = events_max_age
        self.timeout = timeout
        self.prefix = prefix
        self.reachable = False
        self.last_error = ""
        self.failures = 0
        """Calls that failed since the store was opened (a counter for metrics)."""
        self._password = password
        self._client: aioredis.Redis | None = None
        self._probe: asyncio.Task[None] | None = None
        self._turned = asyncio.Event()

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    async def __aenter__(self) -> Self:
        try:
            # A full pool makes a call wait (within the deadline) for a connection, not fail at once.
            pool = aioredis.BlockingConnectionPool.from_url(
                self.url,
                password=self._password if urlsplit(self.url).password is None else None,
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                health_check_interval=0,
                max_connections=256,
                timeout=self.timeout,
            )
            self._client = aioredis.Redis.from_pool(pool)  # closed with the client
        except (ValueError, RedisError) as exc:
            raise StoreError(f"cannot use the Redis store at {redacted(self.url)}: {exc}") from exc
        try:
            await self.call("ping", lambda r: r.ping())
        except StoreError as exc:
            # The hub starts anyway: it says so in health, refuses new sessions, and recovers by itself.
            logger.warning("%s", exc)
        self._probe = asyncio.get_running_loop().create_task(self._watch(), name="redis-probe")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
            self._probe = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _watch(self) -> None:
        # A ping every second keeps ``reachable`` true to the moment, whether or not requests need Redis.
        while True:
            await asyncio.sleep(_PROBE_EVERY)
            with contextlib.suppress(StoreError):
                await self.call("ping", lambda r: r.ping())

    @property
    def client(self) -> aioredis.Redis:
        if self._client is None:
            raise StoreError("the session store is not open")
        return self._client

    async def call(self, what: str, fn: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        """Run one exchange with Redis within the deadline. Raises: StoreError (Redis unreachable or failing)."""
        client = self.client
        try:
            async with asyncio.timeout(self.timeout * 2):
                result = await fn(client)
        except (RedisError, OSError, TimeoutError) as exc:
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if self.reachable:
                logger.warning("Redis at %s unreachable (%s)", redacted(self.url), self.last_error)
            self._turn(False)
            raise StoreError(f"the Redis store is unreachable ({what}: {self.last_error})") from exc
        if not self.reachable:
            logger.info("Redis at %s reachable", redacted(self.url))
            self.last_error = ""
            self._turn(True)
        return result

    def _turn(self, reachable: bool) -> None:
        if reachable != self.reachable:
            self.reachable = reachable
            self._turned.set()
            self._turned = asyncio.Event()

    async def wait_reachable(self, reachable: bool) -> None:
        """Wait until :attr:`reachable` is ``reachable`` (the probe checks every second)."""
        while self.reachable != reachable:
            await self._turned.wait()

    # -- session records ---------------------------------------------------------------------------

    async def save(self, record: SessionRecord) -> None:
        fields = {
            "protocol_version": record.protocol_version,
            "client_info": jsonrpc.dumps(record.client_info),
            "client_capabilities": jsonrpc.dumps(record.client_capabilities),
            "created": repr(record.created),
            "last_seen": repr(record.last_seen),
            "principal": record.principal,
            "tenant": record.tenant,
        }

        async def save(r: aioredis.Redis) -> None:
            async with r.pipeline(transaction=True) as pipe:
                pipe.hset(self.key("session", record.id), mapping=fields)  # type: ignore[arg-type]
                pipe.zadd(self.key("sessions"), {record.id: record.last_seen})
                await pipe.execute()

        await self.call("save a session", save)

    async def load(self, session_id: str) -> SessionRecord | None:
        raw: dict[bytes, bytes] = await self.call(
            "load a session",
            lambda r: r.hgetall(self.key("session", session_id)),  # type: ignore[arg-type,return-value]
        )
        if not raw:
            return None
        get = {k.decode(): v for k, v in raw.items()}
        return SessionRecord(
            session_id,
            get["protocol_version"].decode(),
            jsonrpc.loads(get["client_info"]),
            jsonrpc.loads(get["client_capabilities"]),
            float(get["created"]),
            float(get["last_seen"]),
            get.get("principal", b"").decode(),
            get.get("tenant", b"").decode(),
        )

    async def delete(self, session_id: str) -> None:
        async def delete(r: aioredis.Redis) -> None:
            async with r.pipeline(transaction=True) as pipe:
                pipe.delete(self.key("session", session_id))
                pipe.zrem(self.key("sessions"), session_id)
                await pipe.execute()

        await self.call("delete a session", delete)

    async def touch(self, session_ids: Iterable[str], when: float | None = None) -> None:
        ids = list(session_ids)
        if not ids:
            return
        moment = time.time() if when is None else when

        async def touch(r: aioredis.Redis) -> None:
            async with r.pipeline(transaction=False) as pipe:
                pipe.zadd(self.key("sessions"), dict.fromkeys(ids, moment), xx=True)
                # A deleted session must not come back as a half record.
                pipe.eval(_TOUCH, len(ids), *(self.key("session", sid) for sid in ids), repr(moment))
                await pipe.execute()

        await self.call("touch sessions", touch)

    async def prune(self, seen_before: float) -> int:
        index = self.key("sessions")
        old = cast(
            "list[bytes]",
            await self.call("list old sessions", lambda r: r.zrangebyscore(index, "-inf", f"({seen_before}")),
        )
        if not old:
            return 0

        async def prune(r: aioredis.Redis) -> None:
            async with r.pipeline(transaction=False) as pipe:
                for sid in old:
                    pipe.delete(self.key("session", sid.decode()))
                pipe.zrem(index, *old)
                await pipe.execute()

        await self.call("prune sessions", prune)
        return len(old)

    # -- event log ---------------------------------------------------------------------------------

    def _events_key(self, session_id: str, run: str, stream: int) -> str:
        return self.key("events", session_id, run, str(stream))

    async def append_events(self, rows: list[EventRow]) -> None:
        keep = self.events_kept
        by_key: dict[str, dict[bytes, int]] = {}
        sessions: dict[str, set[str]] = {}
        for row in rows:
            key = self._events_key(row.session_id, row.run, row.stream)
            by_key.setdefault(key, {})[_seq_member(row.seq, row.data)] = row.seq
            sessions.setdefault(row.session_id, set()).add(key)
        ttl = int(self.events_max_age) + _EVENT_TTL_SLACK

        async def append(r: aioredis.Redis) -> None:
            async with r.pipeline(transaction=False) as pipe:
                for key, members in by_key.items():
                    pipe.zadd(key, members)
                    pipe.zremrangebyrank(key, 0, -(keep + 1))
                    pipe.expire(key, ttl)
                for sid, keys in sessions.items():
                    pipe.sadd(self.key("eventkeys", sid), *keys)
                    pipe.expire(self.key("eventkeys", sid), ttl)
                await pipe.execute()

        await self.call("write the event log", append)

    async def events_after(
        self, session_id: str, run: str, stream: int, seq: int, upto: int | None = None
    ) -> list[tuple[int, bytes]]:
        key = self._events_key(session_id, run, stream)
        high = "+inf" if upto is None else str(upto)
        members = cast(
            "list[bytes]", await self.call("read the event log", lambda r: r.zrangebyscore(key, f"({seq}", high))
        )
        return [(int.from_bytes(m[:8], "big"), m[8:]) for m in members]

    async def prune_events(self, created_before: float, keep: int) -> int:
        return 0  # event keys are trimmed to ``keep`` when written and expire with the log's age

    async def delete_events(self, session_id: str) -> None:
        index = self.key("eventkeys", session_id)

        async def delete(r: aioredis.Redis) -> None:
            keys = await r.smembers(index)
            await r.delete(index, *keys)

        await self.call("delete a session's events", delete)

    # -- audit -------------------------------------------------------------------------------------

    async def append_audit(self, records: list[AuditRecord]) -> None:
        stream = self.key("audit")

        async def append(r: aioredis.Redis) -> None:
            async with r.pipeline(transaction=False) as pipe:
                for record in records:
                    pipe.xadd(stream, {"r": jsonrpc.dumps([getattr(record, f) for f in _AUDIT_FIELDS])})
                await pipe.execute()

        await self.call("write the audit log", append)

    async def audit(self, query: AuditQuery) -> list[AuditRecord]:
        stream = self.key("audit")
        found: list[AuditRecord] = []
        newest: bytes | str = "+"
        low = f"{int(query.since * 1000)}-0"
        while len(found) < query.limit:

            async def page(r: aioredis.Redis, upper: bytes | str = newest) -> Any:
                return await r.xrevrange(stream, upper, low, count=1000)

            entries: list[tuple[bytes, dict[bytes, bytes]]] = await self.call("read the audit log", page)
            for _, fields in entries:
                record = AuditRecord(*jsonrpc.loads(fields[b"r"]))
                if record.time < query.since:
                    continue
                if query.tenant is not None and record.tenant != query.tenant:
                    continue
                if query.name_glob is not None and not fnmatchcase(record.name, query.name_glob):
                    continue
                found.append(record)
                if len(found) == query.limit:
                    break
            if len(entries) < 1000:
                break
            newest = b"(" + entries[-1][0]
        # Records of one batch share a write; order by their own time, as SQLite does.
        found.sort(key=lambda record: record.time, reverse=True)
        return found

    async def prune_audit(self, before: float, keep: int) -> int:
        stream = self.key("audit")

        async def prune(r: aioredis.Redis) -> int:
            old = await r.xtrim(stream, minid=f"{int(before * 1000)}-0")
            extra = await r.xtrim(stream, maxlen=keep, approximate=False)
            return int(old) + int(extra)

        return await self.call("prune the audit log", prune)
