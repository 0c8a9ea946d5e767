"""The reply to one request of a stateless client that waits for a call: who writes it, and how it went.

The request (the call's first, or a retry) watches its connection for as
long as it waits: a client that closes it cancels the call. Most calls send
nothing before their result; their reply is written by the call's own task
as it ends (one JSON body), so a call costs no task beyond its own. The
first notification or question the call has for its client starts a
follower instead, which writes the SSE stream from then on: notifications,
then the result, or the questions with the sealed state the retry must
bring (the call then parks, see :mod:`hub.stateless_calls`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Final

from connectors import jsonrpc
from connectors.jsonrpc import Message
from hub.asgi import Receive, Send, respond
from hub.errors import ShuttingDown
from hub.modern_errors import stateless_error
from hub.sse import SseWriter, event
from hub.stateless_call import CallGone, StatelessCall
from hub.stateless_calls import StatelessCalls
from hub.views import CatalogView

__all__ = ["Outcome", "Reply", "ReplyBroken"]

logger = logging.getLogger(__name__)

Outcome = tuple[str, int | None, int]
"""(outcome, JSON-RPC error code, bytes sent), for the audit."""

Headers = list[tuple[bytes, bytes]]
_JSON: Final[Headers] = [(b"content-type", b"application/json")]


class ReplyBroken(Exception):
    """The reply of a stateless call could not be written; its connection is to be closed."""


class Reply:
    """One request's wait for a call."""

    __slots__ = (
        *("_call", "_calls", "_decorate", "_finish", "_id", "_send", "_view", "_writer"),
        *("_broken", "_waiting", "complete", "follower", "outcome", "sealed"),
    )

    def __init__(
        self,
        calls: StatelessCalls,
        call: StatelessCall,
        request_id: Any,
        send: Send,
        decorate: Callable[[Message], Message],
        finish: Callable[[StatelessCall, CatalogView, Message], Message],
        view: CatalogView,
    ) -> None:
        self._calls = calls
        self._call = call
        self._id = request_id
        self._send = send
        self._writer: SseWriter | None = None
        self._decorate = decorate
        """Any result as the client gets it (``resultType``, ``serverInfo``)."""
        self._finish = finish
        """The call's result as the client gets it in its view (with its caching fields, too)."""
        self._view = view
        self.follower: asyncio.Task[None] | None = None
        self.sealed = False
        """Its last part is being written: nothing more goes to this reply."""
        self.complete = False
        self.outcome: Outcome = ("cancelled", None, 0)
        self._waiting: asyncio.Task[Any] | None = None
        self._broken = False

    # -- the request's own task --------------------------------------------------------------------

    async def wait(self, receive: Receive) -> Outcome:
        """Watch the connection until the reply is written whole or the client goes; how it went.

        Raises: ReplyBroken: the reply could not be written (the connection is to be closed).
        """
        self._waiting = asyncio.current_task()
        cancelled = False
        try:
            if self._broken:
                raise asyncio.CancelledError()  # (it broke before this wait began)
            while (await receive())["type"] != "http.disconnect":
                continue  # (the body was read whole before: nothing else can come)
        except asyncio.CancelledError:
            if not self._broken:
                raise
            if self._waiting is not None and self._waiting.cancelling():
                self._waiting.uncancel()
            raise ReplyBroken("the reply of a stateless call could not be written") from None
        finally:
            self._waiting = None
            # ASGI answers receive() with a disconnect once the response is complete, too; anything
            # else that ends the wait (this task cancelled) counts as the client gone.
            if not self.complete:
                cancelled = self._gone()
        if self.follower is not None:
            await asyncio.wait([self.follower])
        task = self._call.task
        if cancelled and task is not None:
            await asyncio.wait([task])  # the request ends once its call has (its upstream request too)
            self._settled_without_client(task)
        self._call.detach(self)  # (a call and its reply referring to each other would be garbage for the GC)
        return self.outcome

    def _gone(self) -> bool:
        self.sealed = True
        self.outcome = ("cancelled", None, 0)
        self._call.detach(self)
        if self.follower is not None:
            self.follower.cancel()
        return self._calls.cancel(self._call)

    def _settled_without_client(self, task: asyncio.Task[Message]) -> None:
        """A call whose client went away ended all the same with an error (it failed before the
        cancellation reached it): recorded as that error, with nothing sent."""
        if task.cancelled():
            return
        error = task.exception()
        if error is not None and not isinstance(error, CallGone):
            self.outcome = ("error", _error_reply(self._id, error)[2], 0)

    def broken(self) -> None:
        """The reply could not be written: the request ends with an error, so its connection is closed."""
        self._broken = True
        if self._waiting is not None and not self._waiting.done():
            self._waiting.cancel()

    # -- the call's side ---------------------------------------------------------------------------

    def wake(self) -> None:
        """The call has something for its client before its result: a follower writes from now on."""
        if self.follower is None and not self.sealed:
            self.follower = asyncio.get_running_loop().create_task(self._follow())

    async def deliver(self, result: Message | None, error: BaseException | None) -> None:
        """The call ended (in its own task): its reply is written here, unless a follower writes it."""
        if self.follower is not None or self.sealed:
            return
        self.sealed = True
        data, outcome, status = b"", self.outcome, 200
        if error is None and result is not None:
            try:
                data = jsonrpc.dumps(jsonrpc.response(self._id, self._finish(self._call, self._view, result)))
                outcome = ("isError" if result.get("isError") is True else "ok", None, len(data))
            except Exception as exc:  # (answered as an internal error rather than never)
                logger.exception("a stateless call's result could not be written")
                error = exc
        # (A call that ended without its client, CallGone, gets the empty reply: nobody reads it.)
        headers = _JSON
        if error is not None and not isinstance(error, CallGone):
            data, status, code, headers = _error_reply(self._id, error)
            outcome = ("error", code, len(data))
        self.outcome = outcome
        self.complete = True  # (before the write: the disconnect that ends the response must not cancel)
        await respond(self._send, status, data, headers)

    # -- the follower ------------------------------------------------------------------------------

    async def _follow(self) -> None:
        try:
            await self._write_all()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception("writing the reply of a stateless call failed")
            self.sealed = self.complete = True
            data, status, code, headers = _error_reply(self._id, exc)
            self.outcome = ("error", code, 0)
            try:
                if self._writer is None:
                    await respond(self._send, status, data, headers)
                else:
                    await self._writer.end()
            except Exception:
                self.broken()

    async def _write_all(self) -> None:
        """Write what the call sends until its result, or its questions for the client."""
        call, calls = self._call, self._calls
        task = call.task
        assert task is not None
        while True:
            await call.changed()
            for note in call.take_outbox():
                await self._sse(jsonrpc.dumps(note))
            if call.has_questions and not task.done():
                state = calls.park(call)
                if state is None:
                    continue
                asked: Message = {"inputRequests": call.take_questions(), "requestState": state}
                data = jsonrpc.dumps(
                    jsonrpc.response(self._id, self._decorate({**asked, "resultType": "input_required"}))
                )
                outcome: tuple[str, int | None] = ("input_required", None)
                break
            if task.done():
                try:
                    if task.cancelled():
                        raise _cancelled(task)  # (cancelled before its task ever ran)
                    result: Message = task.result()
                except CallGone:
                    self.sealed = self.complete = True
                    if self._writer is None:
                        await respond(self._send, 200, b"", _JSON)
                    else:
                        await self._writer.end()
                    return
                except Exception as exc:
                    data, status, code, headers = _error_reply(self._id, exc)
                    await self._last(data, ("error", code), status, headers)  # (unless SSE began)
                    return
                data = jsonrpc.dumps(jsonrpc.response(self._id, self._finish(self._call, self._view, result)))
                outcome = ("isError" if result.get("isError") is True else "ok", None)
                break
        await self._last(data, outcome)

    async def _sse(self, data: bytes) -> None:
        if self._writer is None:
            self._writer = SseWriter(self._send)
            await self._writer.start()
        await self._writer.write(event(data))

    async def _last(
        self, data: bytes, outcome: tuple[str, int | None], status: int = 200, headers: Headers = _JSON
    ) -> None:
        self.sealed = True
        self.outcome = (*outcome, len(data))
        if self._writer is None:
            self.complete = True
            await respond(self._send, status, data, headers)
        else:
            await self._writer.write(event(data))
            self.complete = True
            await self._writer.end()


def _cancelled(task: asyncio.Task[Message]) -> Exception:
    """What a call's task cancelled before it ran stands for: the drain ending it, or its client gone."""
    try:
        task.result()
    except asyncio.CancelledError as exc:
        return ShuttingDown() if exc.args == ("drain",) else CallGone()
    return CallGone()


def _error_reply(request_id: Any, exc: BaseException) -> tuple[bytes, int, int | None, Headers]:
    """A stateless call's error as its reply: the body, the HTTP status, the JSON-RPC code, and the
    response headers (the error's own, such as ``Retry-After``, beside the content type)."""
    error, status, extra = stateless_error(exc)
    code = error.get("code")
    headers = _JSON + [(k.encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()] if extra else _JSON
    body = jsonrpc.dumps(jsonrpc.error_response(request_id, error))
    return body, status, code if isinstance(code, int) else None, headers
