"""The JSON-RPC engine of one upstream session, over any transport.

A connector is one upstream MCP session. It performs the ``initialize``
handshake, multiplexes many concurrent requests over that session, routes
every response to its waiter by id and every progress notification to its
call by token (moving the call's deadline), answers the requests the upstream
sends, and hands other notifications up. A session the upstream forgot is
opened again once, transparently. It knows no HTTP: a
:class:`~connectors.transport.Transport` moves the bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Final, Self

from connectors import jsonrpc
from connectors.calls import (
    Call,
    CallHooks,
    Deadline,
    MessageHandler,
    ProgressHandler,
    RequestHandler,
    SessionState,
    answer,
)
from connectors.eras import envelope, resolve_input, without_log_level
from connectors.errors import (
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRpcError,
    UpstreamSessionExpired,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from connectors.handshake import Handshake
from connectors.jsonrpc import Kind, Message
from connectors.listening import Listening
from connectors.spec import UpstreamSpec
from connectors.transport import Transport

__all__ = ["CallHooks", "Connector", "MessageHandler", "ProgressHandler", "RequestHandler"]

logger = logging.getLogger(__name__)

_CANCEL_DEADLINE: Final = 2.0
_LISTENED: Final = frozenset({"resources/subscribe", "resources/unsubscribe"})
_NEVER_CANCELLED: Final = frozenset({"initialize"})  # the spec forbids cancelling these


class Connector(Handshake):
    """One upstream MCP session over ``transport``; an async context manager entered and exited by one task."""

    def __init__(
        self,
        spec: UpstreamSpec,
        transport: Transport,
        *,
        capabilities: Message | None = None,
        on_message: MessageHandler | None = None,
        on_request: RequestHandler | None = None,
        on_list_changed: MessageHandler | None = None,
        listen: bool = True,
    ) -> None:
        self._listening = Listening(
            spec.name,
            lambda params: self._call("subscriptions/listen", params, None, None),
            lambda hold: self.spawn(hold()),
            lists=listen and on_list_changed is not None,
            pause=spec.connect_timeout / 10,
        )
        self.spec = spec
        self.transport = transport
        self._capabilities = capabilities or {}
        self._on_message = on_message
        self._on_request = on_request
        self._on_list_changed = on_list_changed
        self._ids = itertools.count(1)
        self._pending: dict[int, Call] = {}
        self._progress: dict[str, tuple[Any, ProgressHandler | None, Call]] = {}
        self._answering: dict[Any, asyncio.Task[None]] = {}
        self._generation = 0
        self._reinit: asyncio.Task[None] | None = None
        self._session_ready = asyncio.Event()
        self._session_state = SessionState()
        self._side_tasks: set[asyncio.Task[None]] = set()
        self.lost_event = asyncio.Event()
        self.lost_reason = ""
        self.protocol_version = ""
        self.log_level: str | None = None
        """The client's log level, sent with every request in the 2026-07-28 era."""
        self.server_info: Message = {}
        self.server_capabilities: Message = {}
        self.instructions: str | None = None
        self.last_used = 0.0

    # -- lifecycle ---------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        try:
            async with asyncio.timeout(self.spec.connect_timeout):
                await self.transport.open(self)
                await self._handshake()
                await self.transport.opened()
            self._session_ready.set()
            if self.modern:
                self._listening.start()  # the stateless era's stream of list changes (and resource updates)
        except TimeoutError:
            await self._shutdown()
            raise UpstreamUnavailable(self.spec.name, f"no handshake within {self.spec.connect_timeout:g}s") from None
        except BaseException:
            await self._shutdown()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._shutdown()

    async def _shutdown(self) -> None:
        for task in self._side_tasks:
            task.cancel()
        if self._side_tasks:
            await asyncio.gather(*self._side_tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.transport.close()
        self.lost("closed")

    @property
    def is_lost(self) -> bool:
        return self.lost_event.is_set()

    # -- requests ----------------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        params: Message | None = None,
        *,
        hooks: CallHooks | None = None,
        time_limit: float | None = None,
    ) -> Message:
        """Send a request and return its ``result``.

        Progress, requests and notifications the upstream sends while serving
        it go to ``hooks`` (when they can be told apart from unrelated ones);
        each progress notification moves the deadline by the request timeout,
        up to the spec's ``max_total``. A session the upstream has forgotten
        (HTTP 404) is re-initialized once and the request retried. Cancelling
        the caller cancels the upstream request with ``notifications/cancelled``.

        Raises:
            UpstreamRpcError: the upstream answered with a JSON-RPC error.
            UpstreamTimeout: no answer in time (the upstream is told to cancel).
            UpstreamError: the upstream could not be reached or spoke nonsense.
        """
        spec = self.spec
        if self.modern and method in _LISTENED and params is not None:
            # The stateless era has no subscribe: the listen stream asks for the URI instead.
            uri = str(params.get("uri", ""))
            (self._listening.subscribe if method == "resources/subscribe" else self._listening.unsubscribe)(uri)
            return {}
        limit = spec.request_timeout if time_limit is None else time_limit
        loop = asyncio.get_running_loop()
        self.last_used = loop.time()
        deadline: Deadline | None = None
        try:
            async with asyncio.timeout(limit) as scope:
                deadline = Deadline(scope, limit, loop.time() + max(spec.max_total, limit))
                await self._session_ready.wait()  # not while the session is being initialized again
                generation = self._generation
                try:
                    result = await self._call(method, params, hooks, deadline)
                except UpstreamSessionExpired:
                    await self._reinitialize(generation)
                    result = await self._call(method, params, hooks, deadline)
                if self.modern and result.get("resultType") == "input_required":
                    result = await resolve_input(
                        spec.name, params, result, hooks, lambda again: self._call(method, again, hooks, deadline)
                    )
        except TimeoutError:
            if deadline is not None and deadline.moved:
                reason = f"{method} made no progress for {limit:g}s, or passed the {spec.max_total:g}s maximum"
            else:
                reason = f"no answer to {method} within {limit:g}s"
            raise UpstreamTimeout(spec.name, reason) from None
        self._session_state.remember(method, params)
        return result

    async def notify(self, method: str, params: Message | None = None) -> None:
        """Send a notification, within the request timeout.

        Raises:
            UpstreamError: it could not be delivered.
        """
        try:
            async with asyncio.timeout(self.spec.request_timeout):
                await self.transport.send(jsonrpc.notification(method, params))
        except TimeoutError:
            raise UpstreamTimeout(self.spec.name, f"{method} not accepted in time") from None

    async def _call(
        self, method: str, params: Message | None, hooks: CallHooks | None, deadline: Deadline | None
    ) -> Message:
        if self.lost_event.is_set():
            raise UpstreamUnavailable(self.spec.name, f"connection lost ({self.lost_reason})")
        modern = self.modern
        params = envelope(params, self._capabilities, self.log_level, method) if modern else without_log_level(params)
        request_id = next(self._ids)
        call = Call(asyncio.get_running_loop().create_future(), hooks, deadline)
        self._pending[request_id] = call
        token_key: str | None = None
        if params is not None:
            meta = params.get("_meta")
            if isinstance(meta, dict) and "progressToken" in meta:
                # Our own token upstream: two clients' tokens may be equal; ours never are.
                token_key = f"p{request_id}"
                self._progress[token_key] = (meta["progressToken"], hooks.progress if hooks else None, call)
                params = {**params, "_meta": {**meta, "progressToken": token_key}}
            elif method == "tools/call" and deadline is not None:
                # Asked for even when the client did not: an upstream's progress keeps a long call alive.
                token_key = f"p{request_id}"
                self._progress[token_key] = (None, None, call)
                params = {**params, "_meta": {**(meta if isinstance(meta, dict) else {}), "progressToken": token_key}}
        try:
            await self.transport.send(jsonrpc.request(request_id, method, params))
            reply = await call.future
        except UpstreamError:
            if call.future.done() and not call.future.cancelled():
                call.future.exception()  # (a send that failed may have lost the session: this call's too)
            raise
        except asyncio.CancelledError:
            # The future is cancelled too when the caller was waiting on it: only a reply means done.
            replied = call.future.done() and not call.future.cancelled()
            if not replied and method not in _NEVER_CANCELLED and not self.modern:
                await self._cancel_upstream(request_id)  # (2026-07-28: the closed reply stream says it)
            raise
        finally:
            self._pending.pop(request_id, None)
            if token_key is not None:
                self._progress.pop(token_key, None)
        if "error" in reply:
            raise UpstreamRpcError(self.spec.name, reply["error"])
        result = reply.get("result")
        if not isinstance(result, dict):
            raise UpstreamProtocolError(self.spec.name, f"{method} returned a result that is not an object")
        return result

    async def _cancel_upstream(self, request_id: int) -> None:
        # Runs while the caller is being cancelled: bounded, and never raises.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(_CANCEL_DEADLINE):
                reason = {"requestId": request_id, "reason": "cancelled by the client"}
                await self.transport.send(jsonrpc.notification("notifications/cancelled", reason))

    # -- handshake ---------------------------------------------------------------------------------

    async def _reinitialize(self, generation: int) -> None:
        """Open a new upstream session after the upstream forgot ours; one run shared by every waiter.

        It runs in a task of the connector, shielded from the callers: a caller that gives up
        cannot leave the session half made. If it fails, the connector is lost and the pool
        opens a fresh one.
        """
        if generation == self._generation and (self._reinit is None or self._reinit.done()):
            self._reinit = self.spawn(self._renew())
        if self._reinit is not None and not self._reinit.done():
            await asyncio.shield(self._reinit)
        if self.lost_event.is_set():
            raise UpstreamUnavailable(self.spec.name, f"connection lost ({self.lost_reason})")

    async def _renew(self) -> None:
        logger.info("upstream %s forgot our session; initializing again", self.spec.name)
        self._session_ready.clear()
        try:
            async with asyncio.timeout(self.spec.connect_timeout):
                self.transport.reset()
                self.protocol_version = ""
                await self._handshake()
                self._generation += 1
                await self.transport.opened()
        except BaseException as exc:
            self.lost(f"could not open a new session: {getattr(exc, 'message', None) or type(exc).__name__}")
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        finally:
            self._session_ready.set()
        for method, params in self._session_state.requests():
            try:
                await self._call(method, params, None, None)
            except UpstreamError as exc:
                logger.warning("upstream %s refused %s on its new session: %s", self.spec.name, method, exc)

    # -- the link its transport delivers through ---------------------------------------------------

    def deliver(self, message: Any, via: int | None = None) -> None:
        """Route one message from the upstream; ``via`` is the request whose reply stream carried it."""
        kind = jsonrpc.classify(message)
        if kind is Kind.RESPONSE or kind is Kind.ERROR:
            call = self._pending.get(message["id"])
            if call is not None and not call.future.done():
                call.future.set_result(message)
        elif kind is Kind.NOTIFICATION:
            self._notified(message, via)
        elif kind is Kind.REQUEST:
            via_call = self._pending.get(via) if via is not None else None
            hooks = via_call.hooks if via_call is not None else None
            handler = hooks.request if hooks is not None and hooks.request is not None else self._on_request
            key = message["id"]
            task = self.spawn(self._answer(message, handler))
            self._answering[key] = task
            task.add_done_callback(lambda done: self._answered(key, done))
        else:
            logger.warning("upstream %s sent a message that is not JSON-RPC 2.0", self.spec.name)

    def _notified(self, message: Message, via: int | None) -> None:
        method = message["method"]
        params = message.get("params") or {}
        if method == "notifications/progress":
            entry = self._progress.get(str(params.get("progressToken")))
            if entry is not None:
                token, handler, call = entry
                if call.deadline is not None:
                    call.deadline.move()
                if handler is not None:
                    handler({**params, "progressToken": token})
        elif method == "notifications/subscriptions/acknowledged":
            pass  # our own listen stream opening: nothing for any client
        elif method == "notifications/cancelled":
            task = self._answering.get(params.get("requestId"))
            if task is not None:
                task.cancel()
        elif method.endswith("/list_changed"):
            # Whatever stream it came on, it concerns the catalog, not one call.
            if self._on_list_changed is not None:
                self._on_list_changed(message)
        else:
            via_call = self._pending.get(via) if via is not None else None
            hooks = via_call.hooks if via_call is not None else None
            if hooks is not None and hooks.message is not None:
                hooks.message(message)
            elif self._on_message is not None:
                self._on_message(message)

    def awaiting(self, request_id: int) -> bool:
        call = self._pending.get(request_id)
        return call is not None and not call.future.done()

    def interrupted(self, request_id: int) -> None:
        call = self._pending.get(request_id)
        if call is not None and call.hooks is not None and call.hooks.interrupted is not None:
            call.hooks.interrupted()

    @property
    def busy(self) -> bool:
        return bool(self._pending)

    @property
    def listening_wanted(self) -> bool:
        return self._session_state.subscribed

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)
        return task

    def lost(self, reason: str) -> None:
        """The session is gone: wake every waiter with a clear error."""
        if self.lost_event.is_set():
            return
        self.lost_reason = reason
        self.lost_event.set()
        for call in self._pending.values():
            if not call.future.done():
                call.future.set_exception(UpstreamUnavailable(self.spec.name, f"connection lost ({reason})"))

    # -- answering the upstream's requests ---------------------------------------------------------

    def _answered(self, key: Any, task: asyncio.Task[None]) -> None:
        if self._answering.get(key) is task:
            del self._answering[key]

    async def _answer(self, message: Message, handler: RequestHandler | None) -> None:
        method = message["method"]
        reply = await answer(message, handler, self.spec.name)
        try:
            async with asyncio.timeout(self.spec.request_timeout):
                await self.transport.send(reply)
        except (UpstreamError, TimeoutError) as exc:
            logger.warning("could not answer %s of upstream %s: %s", method, self.spec.name, exc)
