"""Calls of stateless clients that may need the client's input, and where they wait for it.

A 2026-07-28 client cannot be asked anything in the middle of a call: there
is no stream for server-to-client requests. When a session-era upstream asks
(sampling, elicitation, roots) during a ``tools/call``, ``prompts/get`` or
``resources/read`` of such a client, the hub answers the client with an
``input_required`` result carrying the questions and a sealed
``requestState``, and parks the call: the upstream request stays open, its
question unanswered. The client's retry (a new request with
``inputResponses`` and that state) answers the questions and attaches to the
call again; progress and logs of the call go to whichever request is
attached (held, a few, while none is). A parked call whose retry does not
come in ``inputTimeout`` seconds gets its questions answered with an error
and is cancelled upstream.

Parked calls are bounded in number (hub-wide and per principal); beyond the
bound the upstream's question is answered with an error instead.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Final, Self

from connectors import jsonrpc
from connectors.eras import INPUT_KEY
from connectors.jsonrpc import Message
from hub.context import Caller
from hub.errors import BadRequestState, ClientError, ClientTimeout, InvalidParams, ShuttingDown
from hub.relay import held_question
from hub.request_state import Claims, StateSeal

__all__ = ["CallGone", "CallSlot", "StatelessCall", "StatelessCalls"]

logger = logging.getLogger(__name__)

_HELD: Final = 64  # notifications kept for the next retry while a call is parked
_OUTBOX: Final = 256  # notifications waiting for the attached request's writer
_MAX_QUESTIONS: Final = 16  # open questions of one call


class CallGone(Exception):
    """The call ended while its client was away (cancelled, expired, or the hub stopping)."""


class StatelessCall:
    """One interactive request of a stateless client, across its rounds."""

    def __init__(self, call_id: str, caller: Caller, method: str, name: str, capabilities: Message) -> None:
        self.id = call_id
        self.caller = caller
        self.method = method
        self.name = name
        self.capabilities = capabilities
        self.round = ""  # a round's nonce, set when the call parks (its state then names it)
        self.task: asyncio.Task[Message] | None = None
        self._open: dict[str, asyncio.Future[Message]] = {}  # questions asked and not yet answered
        self._unsent: dict[str, Message] = {}  # of those, the ones the client has not seen yet
        self._keys = itertools.count(1)
        self._changed = asyncio.Event()
        self._outbox: deque[Message] = deque(maxlen=_OUTBOX)
        self._held: deque[Message] = deque(maxlen=_HELD)
        self._attached = False
        self.upstream = ""
        """The upstream the call waits on (set when it is sent there)."""
        self._token: Any = None
        self._level: int | None = None
        self.expiry: asyncio.TimerHandle | None = None

    # -- what the upstream side calls (the call's hooks) ---------------------------------------------

    async def ask(self, message: Message) -> Message:
        """An upstream's question to the client; returns the client's answer from a later round.

        Raises:
            MethodNotFound: the client did not declare the capability the question needs.
            ClientError: too many questions of this call are open.
        """
        method, params = held_question(message, self.capabilities, len(self._open), _MAX_QUESTIONS, "call")
        wanted = message.get(INPUT_KEY)  # the upstream's own key, when it asked in the same era
        key = wanted if isinstance(wanted, str) and wanted and wanted not in self._open else f"q{next(self._keys)}"
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._open[key] = future
        self._unsent[key] = {"method": method, "params": params}
        self._changed.set()
        try:
            return await future
        finally:
            self._open.pop(key, None)
            self._unsent.pop(key, None)

    def progress(self, update: Message) -> None:
        """Progress of the call, for whichever request waits for it (under that request's own token)."""
        if self._token is None and self._attached:
            return  # the attached request asked for no progress
        self._put(jsonrpc.notification("notifications/progress", {**update, "progressToken": self._token}))

    def log(self, message: Message, level: int) -> None:
        """A log message of the call: sent only to a request that asked for this level or a lower one."""
        if self._level is not None and level >= self._level:
            self._put(message)

    def _put(self, message: Message) -> None:
        if self._attached:
            self._outbox.append(message)
            self._changed.set()
        else:
            self._held.append(message)

    # -- what the request side calls ----------------------------------------------------------------

    def attach(self, progress_token: Any, level: int | None) -> None:
        """A request of the client now waits for this call (the first, or a retry)."""
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        self._attached = True
        self._token = progress_token
        self._level = level
        while self._held:
            held = self._held.popleft()
            if held.get("method") != "notifications/progress":
                self._outbox.append(held)
            elif progress_token is not None:
                self._outbox.append({**held, "params": {**held["params"], "progressToken": progress_token}})
        self._changed.set()

    def detach(self) -> None:
        self._attached = False
        self._outbox.clear()

    def answer(self, responses: object) -> None:
        """The client's ``inputResponses``: one answer for every question it was sent.

        Raises: InvalidParams: an answer is missing or not an object (nothing is answered then).
        """
        asked = [key for key in self._open if key not in self._unsent]
        if not asked:
            return
        if not isinstance(responses, dict):
            raise InvalidParams("params.inputResponses must answer the input requests of the last round")
        for key in asked:
            if not isinstance(responses.get(key), dict):
                raise InvalidParams(f"params.inputResponses.{key} is missing or not an object")
        for key in asked:
            future = self._open.get(key)
            if future is not None and not future.done():
                future.set_result(responses[key])

    def fail_questions(self, error: Exception) -> None:
        for future in self._open.values():
            if not future.done():
                future.set_exception(error)

    def take_outbox(self) -> list[Message]:
        out = list(self._outbox)
        self._outbox.clear()
        return out

    def take_questions(self) -> dict[str, Message]:
        questions, self._unsent = self._unsent, {}
        return questions

    @property
    def has_questions(self) -> bool:
        return bool(self._unsent)

    @property
    def has_outbox(self) -> bool:
        return bool(self._outbox)

    async def changed(self) -> None:
        """Wait until something is to be written, asked, or the call is done."""
        if self.task is not None and self.task.done():
            return
        self._changed.clear()
        if self._outbox or self._unsent:
            return
        await self._changed.wait()

    def done(self, task: asyncio.Task[Message]) -> None:
        self._changed.set()


class StatelessCalls:
    """Every interactive call of stateless clients; owns their tasks. An async context manager."""

    def __init__(
        self,
        seal: StateSeal,
        *,
        input_timeout: float,
        max_parked: int = 1024,
        max_parked_per_principal: int = 64,
        max_parked_per_upstream: Callable[[str], int] = lambda upstream: 1024,
        replica: str = "",
    ) -> None:
        self.seal = seal
        self.replica = replica
        """Prefixes every call id (replicas on one Redis share the seal: a state tells where its call waits)."""
        self.max_parked_per_upstream = max_parked_per_upstream
        self.input_timeout = input_timeout
        self.max_parked = max_parked
        self.max_parked_per_principal = max_parked_per_principal
        self._ids = itertools.count(1)
        self._calls: dict[str, StatelessCall] = {}
        self._parked: dict[str, StatelessCall] = {}
        self._tasks: set[asyncio.Task[Message]] = set()
        self._open = False

    async def __aenter__(self) -> Self:
        self._open = True
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._open = False
        for call in list(self._calls.values()):
            call.fail_questions(ShuttingDown())
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5.0)

    def __len__(self) -> int:
        return len(self._calls)

    @property
    def parked(self) -> int:
        return len(self._parked)

    def start(
        self,
        caller: Caller,
        method: str,
        name: str,
        capabilities: Message,
        run: Callable[[StatelessCall], Awaitable[Message]],
    ) -> StatelessCall:
        """Start a call; ``run`` serves it (its hooks ask the call for input).

        Raises: ShuttingDown: the hub is stopping.
        """
        if not self._open:
            raise ShuttingDown()
        # The id only ever travels sealed (encrypted and authenticated), so a counter will do.
        call = StatelessCall(f"{self.replica}.{next(self._ids)}", caller, method, name, capabilities)
        task: asyncio.Task[Message] = asyncio.get_running_loop().create_task(_run(run, call))
        call.task = task
        self._calls[call.id] = call
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._ended(call, done))
        return call

    def _ended(self, call: StatelessCall, task: asyncio.Task[Message]) -> None:
        self._tasks.discard(task)
        self._calls.pop(call.id, None)
        self._parked.pop(call.id, None)
        if call.expiry is not None:
            call.expiry.cancel()
        if not task.cancelled():
            task.exception()  # retrieved: a call that ended parked (its client gone) has nobody to read it
        call.done(task)

    def park(self, call: StatelessCall) -> str | None:
        """Leave a call waiting for its client's retry; the state the retry must bring, or None when
        no more calls may wait (the call's questions are then answered with an error)."""
        # A parked call keeps its upstream request (and its slot there) open: bounded per upstream too,
        # so that one caller's questions cannot hold every slot of an upstream others use.
        mine = sum(parked.caller == call.caller for parked in self._parked.values())
        there = sum(parked.upstream == call.upstream for parked in self._parked.values())
        if (
            len(self._parked) >= self.max_parked
            or mine >= self.max_parked_per_principal
            or there >= self.max_parked_per_upstream(call.upstream)
        ):
            call.fail_questions(ClientError({"code": -32000, "message": "too many calls wait for their client"}))
            call.take_questions()
            return None
        call.detach()
        call.round = secrets.token_hex(8)
        self._parked[call.id] = call
        call.expiry = asyncio.get_running_loop().call_later(self.input_timeout, self._expire, call)
        claims = Claims(call.id, call.round, call.method, call.name, time.time() + self.input_timeout)
        return self.seal.seal(claims, call.caller)

    def resume(self, state: object, caller: Caller, method: str, name: str, responses: object) -> StatelessCall:
        """The parked call a retry's ``requestState`` names, given the retry's ``inputResponses``
        and taken off the shelf.

        Raises:
            BadRequestState: forged, someone else's, expired, used already, or for another request.
            InvalidParams: an answer is missing (the call stays parked; the state stays good).
        """
        claims = self.seal.open(state, caller)
        call = self._parked.get(claims.call)
        if call is None:
            raise BadRequestState("requestState names no call that waits for input (it ended or expired)")
        if claims.round != call.round:
            raise BadRequestState("requestState was used already")
        if (claims.method, claims.name) != (method, name):
            raise BadRequestState("requestState belongs to another request")
        call.answer(responses)
        del self._parked[call.id]
        call.round = ""  # the state is spent, whatever happens next
        return call

    def holder(self, state: object, caller: Caller) -> str | None:
        """The replica whose call a ``requestState`` names, when it is a good state of ``caller``'s."""
        try:
            claims = self.seal.open(state, caller)
        except BadRequestState:
            return None  # refused where it is served, with the reason
        return claims.call.rpartition(".")[0]

    def _expire(self, call: StatelessCall) -> None:
        if self._parked.pop(call.id, None) is None:
            return
        call.expiry = None
        logger.info(
            "a call of %s waited %gs for the client's input; cancelled",
            call.caller.principal or "-",
            self.input_timeout,
        )
        call.fail_questions(ClientTimeout(f"the client did not retry with its input within {self.input_timeout:g}s"))
        task = call.task
        if task is not None:
            # The upstream gets the error for its question first, then the call is cancelled.
            asyncio.get_running_loop().call_soon(task.cancel)

    def cancel(self, call: StatelessCall) -> None:
        """The attached request went away (its client closed the stream): the call is cancelled."""
        if call.task is not None and call.id not in self._parked:
            call.task.cancel()

    def stop(self) -> None:
        """End every call now (the drain ran out): attached ones answer that the hub is shutting down."""
        for call in list(self._calls.values()):
            call.fail_questions(ShuttingDown())
            if call.task is not None:
                call.task.cancel(msg="drain")


async def _run(run: Callable[[StatelessCall], Awaitable[Message]], call: StatelessCall) -> Message:
    try:
        return await run(call)
    except asyncio.CancelledError as exc:
        if exc.args == ("drain",):
            raise ShuttingDown() from None
        raise CallGone() from None


class CallSlot:
    """A tenant's call slot (``maxConcurrentCalls``): freed when the request ends, or handed to its call."""

    __slots__ = ("_release",)

    def __init__(self, release: Callable[[], None] | None) -> None:
        self._release = release

    def hand_to(self, task: asyncio.Task[Any]) -> None:
        release, self._release = self._release, None
        if release is not None:
            task.add_done_callback(lambda _: release())

    def release(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()
