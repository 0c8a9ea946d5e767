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
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Self

from connectors.jsonrpc import Message
from hub.context import Caller
from hub.errors import BadRequestState, ClientError, ClientTimeout, ShuttingDown
from hub.request_state import Claims, StateSeal
from hub.stateless_call import CallGone, StatelessCall

__all__ = ["CallSlot", "StatelessCalls"]

logger = logging.getLogger(__name__)


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
        self._calls: dict[asyncio.Task[Message], StatelessCall] = {}
        """Every call running, by its task (parked ones too)."""
        self._parked: dict[str, StatelessCall] = {}
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
        for task in list(self._calls):
            task.cancel()
        if self._calls:
            await asyncio.wait(list(self._calls), timeout=5.0)

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
        call = StatelessCall(caller, method, name, capabilities)
        task: asyncio.Task[Message] = asyncio.get_running_loop().create_task(_run(run, call))
        call.task = task
        self._calls[task] = call
        task.add_done_callback(self._ended)
        return call

    def _ended(self, task: asyncio.Task[Message]) -> None:
        call = self._calls.pop(task)
        if call.id:
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
        if not call.id:
            # Named once it first parks (the name is in its state). The id only ever travels sealed
            # (encrypted and authenticated), so a counter will do.
            call.id = f"{self.replica}.{next(self._ids)}"
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

    def cancel(self, call: StatelessCall) -> bool:
        """The attached request went away (its client closed the stream): the call is cancelled
        (not a parked one: its state is with the client). Whether it was."""
        if call.task is not None and call.id not in self._parked and not call.task.done():
            call.task.cancel()
            return True
        return False

    def stop(self) -> None:
        """End every call now (the drain ran out): attached ones answer that the hub is shutting down."""
        for call in list(self._calls.values()):
            call.fail_questions(ShuttingDown())
            if call.task is not None:
                call.task.cancel(msg="drain")


async def _run(run: Callable[[StatelessCall], Awaitable[Message]], call: StatelessCall) -> Message:
    try:
        result = await run(call)
    except asyncio.CancelledError as exc:
        error: Exception = ShuttingDown() if exc.args == ("drain",) else CallGone()
        await call.settle(None, error)
        raise error from None
    except Exception as exc:
        await call.settle(None, exc)
        raise
    await call.settle(result, None)
    return result


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
