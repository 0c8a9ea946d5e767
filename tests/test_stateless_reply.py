"""Unit tests of one stateless call's reply: who writes it when the call ends in an unusual way.

The ASGI side is a small stand-in that behaves as the specification says: the
body was read already, and ``receive()`` answers ``http.disconnect`` once the
response is complete or the client is gone.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import MutableMapping
from typing import Any

import pytest

from connectors.jsonrpc import Message
from hub.context import Caller
from hub.errors import RateLimited
from hub.request_state import StateSeal
from hub.stateless_call import StatelessCall
from hub.stateless_calls import StatelessCalls
from hub.stateless_reply import Reply
from hub.views import CatalogView

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

WAIT = 5.0
ANN = Caller("ann", "t")


class Connection:
    """One request's connection: what was sent on it, and whether its client left."""

    def __init__(self) -> None:
        self.sent: list[MutableMapping[str, Any]] = []
        self._ended = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self._ended.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: MutableMapping[str, Any]) -> None:
        self.sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self._ended.set()

    def leave(self) -> None:
        self._ended.set()

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.sent[0]["headers"])

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent[1:])


def _same(result: Message) -> Message:
    return result


def _finish(call: StatelessCall, view: CatalogView, result: Message) -> Message:
    return result


def reply_for(calls: StatelessCalls, call: StatelessCall, connection: Connection) -> Reply:
    view: Any = None  # (the finishing function above does not look at it)
    reply = Reply(calls, call, 7, connection.send, _same, _finish, view)
    call.attach(None, None, reply)
    return reply


async def test_a_call_stopped_before_its_task_ran_still_gets_its_reply() -> None:
    async with StatelessCalls(StateSeal(), input_timeout=5.0) as calls:
        ran = asyncio.Event()

        async def run(call: StatelessCall) -> Message:
            ran.set()
            return {"content": []}

        connection = Connection()
        call = calls.start(ANN, "tools/call", "x", {}, run)
        reply = reply_for(calls, call, connection)
        calls.stop()  # the drain ran out: the task is cancelled before it ever ran
        outcome = await asyncio.wait_for(reply.wait(connection.receive), WAIT)
        assert not ran.is_set()
        body = json.loads(connection.body)
        assert body["id"] == 7 and body["error"]["code"] == -32000, body  # the hub is shutting down
        assert connection.status == 503 and outcome[0] == "error"
        assert int(connection.headers[b"retry-after"]) >= 1  # the refusal says when to come back


async def test_a_call_that_ends_with_a_refusal_replies_with_its_status_and_headers() -> None:
    async with StatelessCalls(StateSeal(), input_timeout=5.0) as calls:

        async def run(call: StatelessCall) -> Message:
            raise RateLimited("ann's tool calls: 1 per minute", 12)

        connection = Connection()
        call = calls.start(ANN, "tools/call", "x", {}, run)
        reply = reply_for(calls, call, connection)
        outcome = await asyncio.wait_for(reply.wait(connection.receive), WAIT)
        body = json.loads(connection.body)
        assert body["error"]["code"] == -32029 and outcome[:2] == ("error", -32029), body
        assert connection.status == 429 and connection.headers[b"retry-after"] == b"12"
        assert connection.headers[b"content-type"] == b"application/json"


async def test_a_request_whose_client_left_ends_only_once_its_call_has() -> None:
    async with StatelessCalls(StateSeal(), input_timeout=5.0) as calls:
        started, unwound = asyncio.Event(), asyncio.Event()

        async def run(call: StatelessCall) -> Message:
            started.set()
            try:
                await asyncio.Event().wait()
            finally:
                await asyncio.sleep(0)  # (cancelling the upstream request takes a turn or more)
                unwound.set()
            return {}

        connection = Connection()
        call = calls.start(ANN, "tools/call", "x", {}, run)
        reply = reply_for(calls, call, connection)
        await asyncio.wait_for(started.wait(), WAIT)
        connection.leave()
        outcome = await asyncio.wait_for(reply.wait(connection.receive), WAIT)
        assert unwound.is_set() and call.task is not None and call.task.done()
        assert outcome == ("cancelled", None, 0) and connection.sent == [] and len(calls) == 0


async def test_a_reply_that_cannot_be_written_ends_its_request_with_an_error() -> None:
    async with StatelessCalls(StateSeal(), input_timeout=5.0) as calls:

        async def run(call: StatelessCall) -> Message:
            return {"content": []}

        class Broken(Connection):
            async def send(self, message: MutableMapping[str, Any]) -> None:
                raise RuntimeError("the transport refused the write")

        connection = Broken()
        call = calls.start(ANN, "tools/call", "x", {}, run)
        reply = reply_for(calls, call, connection)
        with pytest.raises(Exception, match="could not be written"):
            await asyncio.wait_for(reply.wait(connection.receive), WAIT)
