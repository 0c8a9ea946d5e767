"""Session affinity across replicas: serve a request here, or hand it to the replica that owns its session.

A request of the session era that names a session this replica does not hold
is looked up in Redis (:mod:`hub.replicas`):

- owned by a live replica: forwarded there (:mod:`hub.forward`); the owner
  counts the rate limits, audits and answers;
- owned by nobody (its owner released it, or its lease ran out), or by a
  replica that is gone (its heartbeat stopped, or nothing listens at its
  address any more): taken over with a compare-and-set and served here,
  where the session is restored from its record as a restarted hub does;
- Redis unreachable: the last owner seen is tried; with none, 503.

A forwarded request is never forwarded again: a replica that got one for a
session it does not own answers 421, and the forwarder looks the owner up
once more. The header that marks forwarding needs no secret: all it can do is
keep a request from being forwarded, and a takeover needs the owner gone
whatever the header says.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Final

from hub.asgi import Receive, Scope, Send, read_body
from hub.config import HubSettings
from hub.errors import BadRequestState, NotOwner, ReplicaLost, ReplicaUnavailable, StoreUnavailable
from hub.forward import FORWARDED_HEADER, Forwarder, OwnerLost, OwnerUnreachable
from hub.replicas import Replicas
from hub.store import StoreError

__all__ = ["Affinity"]

logger = logging.getLogger(__name__)

_SESSION_ID: Final = re.compile(r"^[0-9a-f]{32}$")
_ATTEMPTS: Final = 3  # an owner looked up again after a 421 or a takeover lost to another replica


def replayed(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the body already read, then what the client sends next."""
    sent = False

    async def again() -> dict[str, object]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return dict(await receive())

    return again


class Affinity:
    """Routes requests to the replica owning their session."""

    def __init__(
        self,
        replicas: Replicas,
        forwarder: Forwarder,
        *,
        settings: Callable[[], HubSettings],
    ) -> None:
        self.replicas = replicas
        self.forwarder = forwarder
        self.settings = settings

    async def route(self, scope: Scope, session_id: str, receive: Receive, send: Send) -> tuple[Receive, bool] | None:
        """Forward the request when another replica owns ``session_id``; returns None when it was
        answered, else the ``receive`` to serve it here with and whether a gone replica's session was
        taken over for it (the caller gives it back if the request leaves no session here).

        Raises: NotOwner, ReplicaLost, ReplicaUnavailable, StoreUnavailable.
        """
        if not _SESSION_ID.match(session_id):
            return receive, False  # not one this hub makes: answered here, as unknown
        forwarded = any(name == FORWARDED_HEADER.encode() for name, _ in scope["headers"])
        settings = self.settings()
        body = await read_body(receive, settings.max_body_bytes, settings.request_read_timeout)
        again = replayed(body, receive)
        replicas = self.replicas
        # The owner seen last is tried first (no trip to Redis); a replica that lost the session says
        # so (421), and then Redis is asked. A forwarded request always asks Redis.
        cached = None if forwarded else replicas.cached_owner(session_id)
        for _ in range(_ATTEMPTS):
            owner = cached
            cached = None
            if owner is None:
                try:
                    owner = await replicas.owner(session_id)
                except StoreError:
                    raise StoreUnavailable(
                        "the session store (Redis) is unreachable, and with it where this session is served; "
                        "try again shortly"
                    ) from None
            if owner is None or owner == replicas.run:
                return again, False  # nobody's, or this one's: served here (restoring it claims it)
            if forwarded:
                raise NotOwner("this replica does not own the session; ask its owner", run=replicas.run)
            # The client's own receive (its body read already) tells the forwarder when it goes;
            # ``again`` keeps the body for serving here after a takeover.
            status = await self._forward(owner, scope, body, receive, send)
            if status is None:
                return None
            replicas.forget_owner(session_id)
            if status == "gone" and await self._take(session_id, owner):
                return again, True
        raise ReplicaUnavailable("the replica that owns this session changed while the request waited; try again")

    async def check_store(self) -> None:
        """Raises: StoreUnavailable: Redis does not answer now (asked, not remembered), so no session may open."""
        try:
            await self.replicas.store.call("check the store", lambda r: r.ping())
        except StoreError:
            raise StoreUnavailable(
                "the session store (Redis) is unreachable: no new sessions until it answers; try again shortly"
            ) from None

    async def forward_call(self, holder: str, scope: Scope, body: bytes, receive: Receive, send: Send) -> None:
        """Forward a stateless retry to the replica where its call waits for it.

        Raises: BadRequestState (that replica is gone, and its call with it), ReplicaUnavailable, ReplicaLost.
        """
        try:
            replica = await self.replicas.find(holder)
        except ValueError:
            replica = self.replicas.known.get(holder)
        if (
            replica is None
            or replica.url == self.replicas.url
            or await self._forward(holder, scope, body, receive, send) is not None
        ):
            raise BadRequestState(
                f"requestState names a call that waited on replica {holder}, which is gone; make the request again"
            )

    async def _forward(self, owner: str, scope: Scope, body: bytes, receive: Receive, send: Send) -> str | None:
        """None once answered; ``gone`` when the owner is known to be gone; ``moved`` when it has a new owner.

        Gone means: its heartbeat stopped, nothing listens at its address any more (the connection
        is refused), or another process answers there (started after it). Any other failure to
        reach it is answered 503: a live owner's sessions are not taken from it.
        """
        replicas = self.replicas
        try:
            replica = await replicas.find(owner)
        except ValueError:
            raise ReplicaUnavailable(
                f"the replica that owns this session ({owner}) has a registry entry this one cannot read "
                "(another version?); try again shortly",
                retry_after=replicas.retry_after,
            ) from None
        if replica is None:
            return "gone"  # its heartbeat stopped: its leases are as good as expired
        if replica.url == replicas.url:
            if replica.started < replicas.started:
                return "gone"  # this process replaced the owner at its address
            raise ReplicaUnavailable(_same_address(owner, replica.url), retry_after=30)
        try:
            status, answered_by = await self.forwarder.forward(replica.url, scope, body, receive, send)
        except OwnerUnreachable as exc:
            if exc.refused:
                logger.warning("replica %s at %s refuses connections: taking its session over", owner, replica.url)
                return "gone"
            raise ReplicaUnavailable(
                f"the replica that owns this session ({owner} at {replica.url}) does not answer ({exc}); "
                "try again shortly",
                retry_after=replicas.retry_after,
            ) from None
        except OwnerLost as exc:
            raise ReplicaLost(
                f"the replica serving this request ({owner}) went away before it answered ({exc}); "
                "whether the request was carried out is unknown",
                data={"replica": owner},
            ) from None
        if status != 421:
            return None
        if answered_by is None or answered_by == owner:
            return "moved"
        if answered_by == replicas.run:
            raise ReplicaUnavailable(_same_address(owner, replica.url), retry_after=30)
        try:
            there = await replicas.find(answered_by)
        except ValueError:
            there = replicas.known.get(answered_by)
        if there is not None and there.url == replica.url and there.started > replica.started:
            return "gone"  # the owner's process was replaced by a newer one at its address
        raise ReplicaUnavailable(_same_address(owner, replica.url), retry_after=30)

    async def _take(self, session_id: str, gone: str) -> bool:
        try:
            return await self.replicas.claim(session_id, gone) == self.replicas.run
        except StoreError:
            raise StoreUnavailable(
                "the session store (Redis) is unreachable: the session cannot be taken over until it answers"
            ) from None


def _same_address(owner: str, url: str) -> str:
    logger.error("replica %s advertises %s, where another replica answers: check hub.replica.advertiseUrl", owner, url)
    return (
        f"misconfigured replicas: the owner of this session ({owner}) advertises {url}, where another replica "
        "answers; each replica needs an address of its own (hub.replica.advertiseUrl)"
    )
