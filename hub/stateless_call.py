"""One call of a stateless client that may need the client's input, across its rounds.

The call's hooks (see :func:`hub.stateless.StatelessContexts.context`) feed it
what the upstream sends for the client: progress, logs, and questions (an
upstream's sampling, elicitation or roots request). Whichever request of the
client waits for the call now (its :class:`Waiter`) is woken to write them;
while none does, notifications are held (a few) for the next retry. Where
calls wait between rounds, and their bounds, is :mod:`hub.stateless_calls`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from typing import Any, Final, Protocol

from connectors import jsonrpc
from connectors.eras import INPUT_KEY
from connectors.jsonrpc import Message
from hub.context import Caller
from hub.errors import InvalidParams
from hub.relay import held_question

__all__ = ["CallGone", "StatelessCall", "Waiter"]

logger = logging.getLogger(__name__)

_HELD: Final = 64  # notifications kept for the next retry while a call is parked
_OUTBOX: Final = 256  # notifications waiting for the attached request's writer
_MAX_QUESTIONS: Final = 16  # open questions of one call
_NONE: Final[deque[Message]] = deque(maxlen=0)  # an outbox or hold not made yet (nothing is kept in it)


class CallGone(Exception):
    """The call ended while its client was away (cancelled, expired, or the hub stopping)."""


class Waiter(Protocol):
    """The request waiting for a call now (see :mod:`hub.stateless_reply`)."""

    def wake(self) -> None:
        """The call has something for the client before its result."""

    async def deliver(self, result: Message | None, error: BaseException | None) -> None:
        """The call ended: its result or its error."""

    def broken(self) -> None:
        """The reply could not be written: the request is to end with an error (its connection closed)."""


class StatelessCall:
    """One interactive request of a stateless client, across its rounds."""

    __slots__ = (
        "_changed", "_held", "_keys", "_level", "_open", "_outbox", "_token", "_unsent",
        "asking", "caller", "capabilities", "expiry", "id", "method", "name", "reply", "round", "task", "upstream",
    )  # fmt: skip

    def __init__(self, caller: Caller, method: str, name: str, capabilities: Message) -> None:
        self.id = ""
        """Its name in the states it is sealed in: given when it first parks."""
        self.caller = caller
        self.method = method
        self.name = name
        self.capabilities = capabilities
        self.round = ""  # a round's nonce, set when the call parks (its state then names it)
        self.task: asyncio.Task[Message] | None = None
        self._open: dict[str, asyncio.Future[Message]] = {}  # questions asked and not yet answered
        self._unsent: dict[str, Message] = {}  # of those, the ones the client has not seen yet
        # Made when first needed: most calls send nothing but their result.
        self._keys: itertools.count[int] | None = None
        self._changed: asyncio.Event | None = None
        self._outbox: deque[Message] = _NONE
        self._held: deque[Message] = _NONE
        self.asking: set[StatelessCall] | None = None
        """The calls in flight to its upstream that may be asked a question on its session's own stream."""
        self.reply: Waiter | None = None
        """The request that waits for the call now, if one does."""
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
        if isinstance(wanted, str) and wanted and wanted not in self._open:
            key = wanted
        else:
            self._keys = self._keys or itertools.count(1)
            key = f"q{next(self._keys)}"
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._open[key] = future
        self._unsent[key] = {"method": method, "params": params}
        self._signal()
        if self.reply is not None:
            self.reply.wake()
        try:
            return await future
        finally:
            self._open.pop(key, None)
            self._unsent.pop(key, None)

    def progress(self, update: Message) -> None:
        """Progress of the call, for whichever request waits for it (under that request's own token)."""
        if self._token is None and self.reply is not None:
            return  # the attached request asked for no progress
        self._put(jsonrpc.notification("notifications/progress", {**update, "progressToken": self._token}))

    def log(self, message: Message, level: int) -> None:
        """A log message of the call: sent only to a request that asked for this level or a lower one."""
        if self._level is not None and level >= self._level:
            self._put(message)

    def _put(self, message: Message) -> None:
        if self.reply is not None:
            if self._outbox is _NONE:
                self._outbox = deque(maxlen=_OUTBOX)
            self._outbox.append(message)
            self._signal()
            self.reply.wake()
        else:
            if self._held is _NONE:
                self._held = deque(maxlen=_HELD)
            self._held.append(message)

    def _signal(self) -> None:
        if self._changed is not None:
            self._changed.set()

    async def settle(self, result: Message | None, error: BaseException | None) -> None:
        """The call ended (in its own task): the waiting request, if one does, has its reply."""
        reply = self.reply
        if reply is not None:
            try:
                await reply.deliver(result, error)
            except Exception:
                logger.exception("the reply of a stateless call could not be written")
                reply.broken()

    # -- what the request side calls ----------------------------------------------------------------

    def attach(self, progress_token: Any, level: int | None, reply: Waiter) -> None:
        """A request of the client now waits for this call (the first, or a retry)."""
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        self.reply = reply
        self._token = progress_token
        self._level = level
        if self._held and self._outbox is _NONE:
            self._outbox = deque(maxlen=_OUTBOX)
        while self._held:
            held = self._held.popleft()
            if held.get("method") != "notifications/progress":
                self._outbox.append(held)
            elif progress_token is not None:
                self._outbox.append({**held, "params": {**held["params"], "progressToken": progress_token}})
        self._signal()
        if self._outbox or self._unsent or (self.task is not None and self.task.done()):
            reply.wake()

    def detach(self, reply: Waiter | None = None) -> None:
        """No request waits for the call any more (or ``reply`` does not, if it is given)."""
        if reply is None or self.reply is reply:
            self.reply = None
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

    async def changed(self) -> None:
        """Wait until something is to be written, asked, or the call is done."""
        if self.task is not None and self.task.done():
            return
        if self._changed is None:
            self._changed = asyncio.Event()
        self._changed.clear()
        if self._outbox or self._unsent:
            return
        await self._changed.wait()

    def done(self, task: asyncio.Task[Message]) -> None:
        if self.asking is not None:
            self.asking.discard(self)
        self._signal()
        if self.reply is not None:
            # A call cancelled before its task ever ran did not settle: a follower writes its reply.
            self.reply.wake()
