"""A ``subscriptions/listen`` request served: subscribe, acknowledge, stream, clean up.

The request's resource URIs are subscribed on the caller's own upstream
sessions (each one in the caller's view; one that is not, or that its
upstream refuses, is left out of the acknowledgement). The SSE stream opens
with ``notifications/subscriptions/acknowledged`` and carries what the
listener's queue gets (:mod:`hub.listen`), with keep-alives, until the client
goes or the hub ends it; then the URIs are unsubscribed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Final

from connectors import jsonrpc
from connectors.jsonrpc import Message
from hub.asgi import Receive, Send, watch_disconnect
from hub.context import Caller
from hub.envelope import SUBSCRIPTION_KEY
from hub.errors import InvalidParams
from hub.listen import LIST_FLAGS, Listener, Listeners
from hub.sse import KEEPALIVE, SseWriter, event, with_keepalive
from hub.stateless import PrincipalSet
from hub.views import CatalogView

__all__ = ["serve_listen"]

logger = logging.getLogger(__name__)

_UNSUBSCRIBE_DEADLINE: Final = 5.0
MAX_URIS: Final = 100
"""Resource URIs one listen may ask for (each is a subscription upstream)."""


async def serve_listen(
    listeners: Listeners,
    principal: PrincipalSet,
    caller: Caller,
    view: CatalogView,
    request_id: Any,
    params: Message,
    complete: Callable[[Message], Message],
    receive: Receive,
    send: Send,
) -> None:
    """Raises:
    InvalidParams: ``params.notifications`` is not what the method takes.
    SessionLimit, RateLimited: the hub, or the caller, holds its maximum of listen streams.
    """
    wanted: Any = params.get("notifications")
    if not isinstance(wanted, dict):
        raise InvalidParams("params.notifications must be an object")
    lists = frozenset(flag for flag in LIST_FLAGS if wanted.get(flag) is True)
    uris = wanted.get("resourceSubscriptions")
    if uris is not None and not (isinstance(uris, list) and all(isinstance(u, str) for u in uris)):
        raise InvalidParams("params.notifications.resourceSubscriptions must be a list of URIs")
    if uris is not None and len(uris) > MAX_URIS:
        raise InvalidParams(f"params.notifications.resourceSubscriptions lists more than {MAX_URIS} URIs")
    listener = Listener(caller, view.rule, request_id, lists)
    listeners.admit(caller)
    listeners.add(listener)  # counted from now, before any wait: concurrent listens cannot pass the bound
    upstreams = principal.upstreams
    subscribed: list[tuple[str, str, str]] = []  # (public uri, upstream, original)
    try:
        for uri in dict.fromkeys(uris or []):
            listener.uris.add(uri)  # from now: a shared upstream session is not unsubscribed under it meanwhile
            try:
                entry = view.resource(uri)
                await _hold(principal, entry.upstream, entry.original)
            except Exception as exc:  # not in the view, or the upstream will not: the ack leaves it out
                listener.uris.discard(uri)
                logger.debug("listen: %s not subscribed: %s", uri, exc)
                continue
            subscribed.append((uri, entry.upstream, entry.original))
        honored: Message = dict.fromkeys(sorted(lists), True)
        if uris is not None:
            honored["resourceSubscriptions"] = [uri for uri, _, _ in subscribed]
        await _stream(listener, honored, complete, receive, send)
    finally:
        listeners.remove(listener)
        for uri, upstream, original in subscribed:
            # A shared upstream session serves the tenant: kept subscribed while any session or listener of it is.
            if upstreams.is_shared(upstream) and listeners.held(uri, caller.tenant):
                _forget(principal, (upstream, original))
                continue
            await _let_go(principal, upstream, original)


async def _hold(principal: PrincipalSet, upstream: str, original: str) -> None:
    """Subscribe the caller's upstream session to a URI, unless another of its listens holds it already."""
    key = (upstream, original)
    held = principal.subscribed.get(key, 0)
    principal.subscribed[key] = held + 1
    if held:
        return
    try:
        await principal.upstreams.request(upstream, "resources/subscribe", {"uri": original})
    except BaseException:
        _forget(principal, key)
        raise


async def _let_go(principal: PrincipalSet, upstream: str, original: str) -> None:
    """One listen less holds the URI; the last one unsubscribes (bounded, never raising)."""
    if _forget(principal, (upstream, original)):
        with contextlib.suppress(Exception):
            async with asyncio.timeout(_UNSUBSCRIBE_DEADLINE):
                await principal.upstreams.request(upstream, "resources/unsubscribe", {"uri": original})


def _forget(principal: PrincipalSet, key: tuple[str, str]) -> bool:
    left = principal.subscribed.get(key, 0) - 1
    if left > 0:
        principal.subscribed[key] = left
        return False
    principal.subscribed.pop(key, None)
    return True


async def _stream(
    listener: Listener, honored: Message, complete: Callable[[Message], Message], receive: Receive, send: Send
) -> None:
    gone = asyncio.Event()
    watcher = asyncio.get_running_loop().create_task(watch_disconnect(receive, gone, listener.end))
    writer = SseWriter(send)
    try:
        await writer.start()
        ack = {"notifications": honored, "_meta": {SUBSCRIPTION_KEY: listener.request_id}}
        await writer.write(event(jsonrpc.dumps(jsonrpc.notification("notifications/subscriptions/acknowledged", ack))))
        async with contextlib.aclosing(with_keepalive(listener.messages())) as items:
            async for item in items:  # None: a quiet spell, time for a keep-alive
                await writer.write(KEEPALIVE if item is None else event(jsonrpc.dumps(item)))
        if not gone.is_set() and not listener.overflowed:
            # The hub ends the subscription (it is stopping): say so with the listen's result.
            final = complete({"_meta": {SUBSCRIPTION_KEY: listener.request_id}})
            await writer.write(event(jsonrpc.dumps(jsonrpc.response(listener.request_id, final))))
    finally:
        watcher.cancel()
        await writer.end()
