"""Replicas on one Redis: who is running, and which replica owns which session.

Each replica (one hub process) names itself by its run id and says where the
others reach it (``hub.replica.advertiseUrl``). It keeps a heartbeat key that
expires with the lease (``hub.replica.lease`` seconds) and an entry in the
registry hash; every third of a lease it beats, reads the registry and drops
the entries whose heartbeat is gone.

A session belongs to the replica whose run id its owner key holds. The owner
sets the key when the session is opened (or taken over) and renews every key
it holds with each heartbeat, in one script: a key still its own is extended;
a key another replica now holds means the session moved, and the local copy is
closed without touching the record; a key that lapsed (the owner was too slow
to renew it, or Redis lost it) is set again, unless the session was ended
meanwhile by another replica: whoever ends a session leaves a tombstone for it
(kept for ``hub.sessionIdleTimeout``) before it deletes the record, and an
owner that finds one closes its local copy. A key set again whose record is
gone too (Redis lost its data) gets its record written back, retried with
each heartbeat until it is. Taking a session
over is a compare-and-set on the owner key: it succeeds only if the key still
names the replica believed dead (or nobody), so two replicas never both take
it. Owners read here are cached (bounded), so requests keep finding a live
owner while Redis is away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, cast

from connectors import jsonrpc
from hub.redis_store import RedisStore
from hub.store import StoreError

__all__ = ["Replica", "Replicas"]

logger = logging.getLogger(__name__)

_CACHED_OWNERS: Final = 10_000
_RENEW_BATCH: Final = 1000

_RENEW: Final = """
local out = {}
for i = 1, #KEYS, 3 do
  local owner = redis.call('GET', KEYS[i])
  if owner == ARGV[1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
    out[#out + 1] = 0
  elseif owner then
    out[#out + 1] = 2
  elseif redis.call('EXISTS', KEYS[i + 2]) == 1 then
    out[#out + 1] = 3
  else
    redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
    if redis.call('EXISTS', KEYS[i + 1]) == 1 then out[#out + 1] = 1 else out[#out + 1] = 4 end
  end
end
return out
"""
_RENEWED, _LAPSED, _MOVED, _ENDED, _LOST_DATA = 0, 1, 2, 3, 4
_REWRITE_AT_ONCE: Final = 100
_CLAIM: Final = """
local owner = redis.call('GET', KEYS[1])
if owner == ARGV[1] or (not owner) or owner == ARGV[2] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
  return ARGV[1]
end
return owner
"""
_RELEASE: Final = """
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then redis.call('DEL', key) end
end
return 0
"""


@dataclass(frozen=True, slots=True)
class Replica:
    """One replica as the registry knows it."""

    id: str
    url: str
    started: float
    config: str
    """The hash of the config it serves."""
    sessions: int

    def report(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "started": self.started,
            "config": self.config,
            "sessions": self.sessions,
        }


class Replicas:
    """This replica's place among the others; an async context manager owning the heartbeat."""

    def __init__(
        self,
        store: RedisStore,
        run: str,
        url: str,
        *,
        lease: float,
        config_hash: Callable[[], str],
        on_lost: Callable[[str], None],
        on_vanished: Callable[[str], Awaitable[bool]],
    ) -> None:
        self.store = store
        self.run = run
        self.url = url
        self.lease = lease
        self.started = time.time()
        self.owned: set[str] = set()
        """Sessions whose owner key this replica holds."""
        self.takeovers = 0
        """Sessions taken over from a replica that was gone."""
        self.known: dict[str, Replica] = {}
        """The live replicas as of the last heartbeat (this one included)."""
        self._config_hash = config_hash
        self._on_lost = on_lost
        self._on_vanished = on_vanished
        self._owners: OrderedDict[str, str] = OrderedDict()
        self._beat: asyncio.Task[None] | None = None
        self.tombstone_ttl = 1800.0
        """Seconds the mark of an ended session is kept (the hub's ``sessionIdleTimeout``)."""
        self.registered = False
        """Whether a heartbeat has reached Redis yet (before it, this replica opens no session)."""
        self._rewrites: set[str] = set()  # sessions whose record Redis lost and that are not written back yet

    def _owner_key(self, session_id: str) -> str:
        return self.store.key("owner", session_id)

    def _ended_key(self, session_id: str) -> str:
        return self.store.key("ended", session_id)

    def _alive_key(self, run: str) -> str:
        return self.store.key("replica", run)

    @property
    def _lease_ms(self) -> int:
        return max(1, int(self.lease * 1000))

    async def __aenter__(self) -> Replicas:
        try:
            await self._heartbeat()
        except StoreError as exc:
            logger.warning("replica heartbeat: %s", exc)
        self._beat = asyncio.get_running_loop().create_task(self._run(), name="replica-heartbeat")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._beat is not None:
            self._beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beat
        # Leases given back at once: another replica takes the sessions over without waiting for them to expire.
        keys = [self._owner_key(sid) for sid in self.owned]
        run = self.run
        registry, alive = self.store.key("replicas"), self._alive_key(run)

        async def leave(r: Any) -> None:
            if keys:
                await r.eval(_RELEASE, len(keys), *keys, run)
            await r.hdel(registry, run)
            await r.delete(alive)

        with contextlib.suppress(StoreError):
            await self.store.call("leave the replicas", leave)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                await self._heartbeat()
            except StoreError as exc:
                logger.warning("replica heartbeat: %s", exc)
            except Exception:
                logger.exception("replica heartbeat failed")  # the next one may do better; it must not stop

    async def _heartbeat(self) -> None:
        me = Replica(self.run, self.url, self.started, self._config_hash(), len(self.owned))
        entry = jsonrpc.dumps([me.url, me.started, me.config, me.sessions])
        owned = sorted(self.owned)
        registry = self.store.key("replicas")

        async def beat(r: Any) -> tuple[list[int], dict[bytes, bytes], list[Any]]:
            async with r.pipeline(transaction=False) as pipe:
                pipe.set(self._alive_key(self.run), b"1", px=self._lease_ms)
                pipe.hset(registry, self.run, entry)
                for start in range(0, len(owned), _RENEW_BATCH):  # Redis runs one script at a time: keep each short
                    keys = [
                        key
                        for sid in owned[start : start + _RENEW_BATCH]
                        for key in (self._owner_key(sid), self.store.key("session", sid), self._ended_key(sid))
                    ]
                    pipe.eval(_RENEW, len(keys), *keys, self.run, self._lease_ms)
                done = await pipe.execute()
            entries, alive = await self._read_registry(r)
            return [outcome for batch in done[2:] for outcome in batch], entries, alive

        renewed, entries, alive = await self.store.call("replica heartbeat", beat)
        self.registered = True
        await self._take_registry(entries, alive)
        for sid, outcome in zip(owned, renewed, strict=True):
            if outcome in (_MOVED, _ENDED):
                why = "is owned by another replica now" if outcome == _MOVED else "was ended by another replica"
                logger.warning("session %s %s; closing the local copy", sid, why)
                self.owned.discard(sid)
                self._rewrites.discard(sid)
                self._on_lost(sid)
            elif outcome == _LAPSED:
                logger.warning("session %s: its lease had lapsed (a slow heartbeat); renewed", sid)
            elif outcome == _LOST_DATA:
                self._rewrites.add(sid)
        pending = sorted(self._rewrites & self.owned)
        if pending:
            logger.warning("Redis lost its data: %d sessions' owner keys and records written back", len(pending))
            for start in range(0, len(pending), _REWRITE_AT_ONCE):
                batch = pending[start : start + _REWRITE_AT_ONCE]
                written_back = await asyncio.gather(*(self._on_vanished(sid) for sid in batch))
                for sid, written in zip(batch, written_back, strict=True):
                    if written:
                        self._rewrites.discard(sid)

    async def _read_registry(self, r: Any) -> tuple[dict[bytes, bytes], list[Any]]:
        entries = cast("dict[bytes, bytes]", await r.hgetall(self.store.key("replicas")))
        runs = list(entries)
        alive = await r.mget([self._alive_key(run.decode()) for run in runs]) if runs else []
        return entries, alive

    async def _take_registry(self, entries: dict[bytes, bytes], alive: list[Any]) -> None:
        known: dict[str, Replica] = {}
        gone: list[str] = []
        for (raw_run, raw), beating in zip(entries.items(), alive, strict=True):
            run = raw_run.decode()
            if beating is None:
                gone.append(run)
                continue
            try:
                url, started, config, sessions = jsonrpc.loads(raw)
                known[run] = Replica(run, str(url), float(started), str(config), int(sessions))
            except (ValueError, TypeError):
                logger.warning("replica %s has a registry entry this version cannot read; left out", run)
        self.known = known
        if gone:
            registry = self.store.key("replicas")
            with contextlib.suppress(StoreError):
                await self.store.call("drop gone replicas", lambda r: r.hdel(registry, *gone))

    async def refresh(self) -> None:
        """Read the registry now (for a report that must be of this moment). Raises: StoreError."""
        entries, alive = await self.store.call("read the replicas", self._read_registry)
        await self._take_registry(entries, alive)

    # -- owners ------------------------------------------------------------------------------------

    def cached_owner(self, session_id: str) -> str | None:
        return self._owners.get(session_id)

    def forget_owner(self, session_id: str) -> None:
        self._owners.pop(session_id, None)

    def _cache(self, session_id: str, owner: str | None) -> None:
        if owner is None or owner == self.run:
            self._owners.pop(session_id, None)
            return
        self._owners[session_id] = owner
        self._owners.move_to_end(session_id)
        while len(self._owners) > _CACHED_OWNERS:
            self._owners.popitem(last=False)

    async def owner(self, session_id: str) -> str | None:
        """The run id of the replica that owns a session now, or None. Raises: StoreError."""
        key = self._owner_key(session_id)
        raw = await self.store.call("read a session's owner", lambda r: r.get(key))
        owner = None if raw is None else cast("bytes", raw).decode()
        self._cache(session_id, owner)
        return owner

    async def claim(self, session_id: str, replacing: str | None = None) -> str | None:
        """Take a session: it had no owner, or ``replacing`` (a replica that is gone) owned it.

        Returns the owner now (this replica's run id when taken). Raises: StoreError.
        """
        key = self._owner_key(session_id)
        raw = await self.store.call(
            "claim a session",
            lambda r: r.eval(_CLAIM, 1, key, self.run, replacing or "", self._lease_ms),
        )
        owner = None if raw is None else (raw.decode() if isinstance(raw, bytes) else str(raw))
        if owner == self.run:
            if replacing is not None:
                self.takeovers += 1
                logger.info("session %s taken over from replica %s", session_id, replacing)
            self.owned.add(session_id)
        self._cache(session_id, owner)
        return owner

    async def ending(self, session_id: str) -> None:
        """Mark a session as ended, before its record is deleted: an owner that lost its lease
        meanwhile closes its copy rather than write it back. Raises: StoreError."""
        key, ttl = self._ended_key(session_id), max(1, int(self.tombstone_ttl))
        await self.store.call("mark a session ended", lambda r: r.set(key, b"1", ex=ttl))

    async def release(self, session_id: str) -> None:
        """Give a session's owner key back (if still this replica's)."""
        self.owned.discard(session_id)
        key = self._owner_key(session_id)
        try:
            await self.store.call("release a session", lambda r: r.eval(_RELEASE, 1, key, self.run))
        except StoreError as exc:
            logger.warning("%s", exc)  # it expires with its lease

    async def locate(self, run: str) -> Replica | None:
        """The live replica ``run``, looked up in Redis when the last heartbeat did not know it; None
        when its heartbeat has stopped.

        Raises: StoreError; ValueError: it beats, but its entry cannot be read (another version).
        """
        replica = self.known.get(run)
        if replica is not None:
            return replica
        registry, alive = self.store.key("replicas"), self._alive_key(run)

        async def look(r: Any) -> tuple[Any, Any]:
            async with r.pipeline(transaction=False) as pipe:
                pipe.hget(registry, run)
                pipe.exists(alive)
                raw, beating = await pipe.execute()
            return raw, beating

        raw, beating = await self.store.call("find a replica", look)
        if raw is None or not beating:
            return None
        try:
            url, started, config, sessions = jsonrpc.loads(raw)
            replica = Replica(run, str(url), float(started), str(config), int(sessions))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"replica {run}'s registry entry cannot be read") from exc  # alive, all the same
        self.known[run] = replica  # until the next heartbeat says otherwise
        return replica

    async def find(self, run: str) -> Replica | None:
        """:meth:`locate`, or with Redis away, the replica as the last heartbeat knew it.

        Raises: ValueError: it beats, but its entry cannot be read.
        """
        try:
            return await self.locate(run)
        except StoreError:
            return self.known.get(run)

    @property
    def retry_after(self) -> int:
        """Seconds a client may wait before asking again for a session whose owner is in doubt: a lease."""
        return max(1, round(self.lease))

    def report(self) -> dict[str, Any]:
        return {
            "id": self.run,
            "url": self.url,
            "lease": self.lease,
            "config": self._config_hash(),
            "owned": len(self.owned),
            "takeovers": self.takeovers,
            "replicas": [replica.report() for replica in sorted(self.known.values(), key=lambda r: r.started)],
        }
