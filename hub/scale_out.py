"""What a hub on Redis adds to one process: its place among the replicas, forwarding, the control plane.

Built by :class:`hub.runtime.Hub` when ``hub.storage`` is a Redis URL. It
joins the parts of :mod:`hub.replicas` (heartbeat, session ownership),
:mod:`hub.affinity` with :mod:`hub.forward` (requests for another replica's
sessions) and :mod:`hub.control` (config and catalog changes told to every
replica). A catalog change is told with the digest of the upstream's new
listing, so a replica that lists the upstream again because it was told does
not tell everyone once more.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import socket
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Self

from connectors import jsonrpc
from connectors.status import Listing
from hub.affinity import Affinity
from hub.config import HubSettings
from hub.control import ControlPlane
from hub.forward import Forwarder
from hub.redis_store import RedisStore
from hub.replicas import Replicas
from hub.request_state import StateSeal
from hub.store import StoreError

__all__ = ["ScaleOut", "advertised_url", "listing_digest"]

logger = logging.getLogger(__name__)

_SEAL_KEY_BYTES = 32


def advertised_url(settings: HubSettings) -> str:
    """Where the other replicas reach this one."""
    if settings.replica.advertise_url is not None:
        return settings.replica.advertise_url
    host = settings.host
    if host in ("0.0.0.0", "::", ""):
        host = socket.getfqdn()
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def listing_digest(listing: Listing) -> str:
    items = [listing.tools, listing.prompts, listing.resources, listing.resource_templates]
    return hashlib.sha256(jsonrpc.dumps(items)).hexdigest()[:32]


class ScaleOut:
    """The replica-facing parts of one hub; an async context manager."""

    def __init__(
        self,
        store: RedisStore,
        run: str,
        settings: Callable[[], HubSettings],
        *,
        config_digest: Callable[[], str],
        adopt_config: Callable[[bytes, str], Awaitable[object]],
        refresh_upstream: Callable[[str], None],
        give_up_session: Callable[[str], None],
        rewrite_session: Callable[[str], Awaitable[bool]],
    ) -> None:
        replica = settings().replica
        self.replicas = Replicas(
            store,
            run,
            advertised_url(settings()),
            lease=replica.lease,
            config_hash=config_digest,
            on_lost=give_up_session,
            on_vanished=rewrite_session,
        )
        self.replicas.tombstone_ttl = settings().session_idle_timeout
        self.forwarder = Forwarder(
            run,
            connect_timeout=replica.connect_timeout,
            read_timeout=replica.forward_timeout,
            max_streams=settings().max_sessions + 64,
        )
        self.affinity = Affinity(self.replicas, self.forwarder, settings=settings)

        async def on_config(data: bytes, source: str) -> None:
            await adopt_config(data, source)

        self.control = ControlPlane(store, run, on_config=on_config, on_listing=self._told)
        self._refresh = refresh_upstream
        self._digests: dict[str, str] = {}
        self._told_of: dict[str, str] = {}
        self._stack = contextlib.AsyncExitStack()
        self.seal: StateSeal | None = None
        """The seal of stateless clients' ``requestState``: keyed with the key every replica shares."""
        self.sealed_alike = asyncio.Event()
        """Set once the seal has the shared key."""

    async def __aenter__(self) -> Self:
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(self.replicas)
            await stack.enter_async_context(self.forwarder)
            await stack.enter_async_context(self.control)
            if not await self._share_seal():
                task = asyncio.get_running_loop().create_task(self._keep_sharing(), name="seal-key")

                async def stop() -> None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

                stack.push_async_callback(stop)
            self._stack = stack.pop_all()
        return self

    async def _share_seal(self) -> bool:
        # The first replica on a Redis makes the key; every other one reads it (SET NX, then GET).
        store = self.replicas.store
        key = store.key("seal")

        async def fetch(r: Any) -> Any:
            await r.set(key, secrets.token_bytes(_SEAL_KEY_BYTES), nx=True)
            return await r.get(key)

        try:
            raw = await store.call("share the requestState key", fetch)
        except StoreError as exc:
            logger.warning("requestState is good on this replica only until Redis answers: %s", exc)
            return False
        if not isinstance(raw, bytes) or len(raw) != _SEAL_KEY_BYTES:
            logger.error("the requestState key in Redis (%s) is not %d bytes; not used", key, _SEAL_KEY_BYTES)
            return False
        if self.seal is not None:
            self.seal.rekey(raw)
        self.sealed_alike.set()
        return True

    async def _keep_sharing(self) -> None:
        store = self.replicas.store
        while True:
            await store.wait_reachable(True)
            if await self._share_seal() or store.reachable:
                return  # shared, or Redis answers with a key that is no good (logged)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    def upstream_changed(self, name: str, listing: Listing | None) -> None:
        """An upstream's state or listing changed here: tell the others if its catalog did."""
        if listing is None:
            return
        digest = listing_digest(listing)
        before = self._digests.get(name)
        if digest == before:
            return
        self._digests[name] = digest
        if before is None:
            return  # its first listing here: nothing changed for anyone
        if self._told_of.pop(name, None) == digest:
            return  # the change another replica told of
        self.control.listing_changed(name, digest)

    def _told(self, name: str, digest: str) -> None:
        if self._digests.get(name) == digest:
            return
        self._told_of[name] = digest
        self._refresh(name)

    def report(self) -> dict[str, Any]:
        report = self.replicas.report()
        report["forwarded"] = self.forwarder.forwarded
        report["controlPlane"] = "subscribed" if self.control.subscribed.is_set() else "disconnected"
        return report
