"""The outbox of one client stream: ordered, bounded, and always ending with its final message."""

from __future__ import annotations

import asyncio

import pytest

from connectors.jsonrpc import Message
from hub.outbox import Outbox

pytestmark = pytest.mark.anyio

WAIT = 5.0


def note(n: int) -> Message:
    return {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": n}}


FINAL: Message = {"jsonrpc": "2.0", "id": 1, "result": {}}


async def drain(outbox: Outbox) -> list[Message]:
    """Every message up to the end of a finished outbox."""
    out: list[Message] = []
    async with asyncio.timeout(WAIT):
        while (message := await outbox.get()) is not None:
            out.append(message)
    return out


async def test_messages_come_out_in_the_order_they_went_in() -> None:
    outbox = Outbox()
    for n in range(5):
        assert outbox.push(note(n))
    outbox.finish(FINAL)

    assert await drain(outbox) == [note(0), note(1), note(2), note(3), note(4), FINAL]


async def test_pushes_past_the_limit_are_dropped_and_counted() -> None:
    outbox = Outbox(limit=2)

    accepted = [outbox.push(note(n)) for n in range(4)]
    outbox.finish()

    assert accepted == [True, True, False, False]
    assert outbox.dropped == 2
    assert await drain(outbox) == [note(0), note(1)]


async def test_the_final_message_is_delivered_even_when_full() -> None:
    outbox = Outbox(limit=1)
    outbox.push(note(0))
    outbox.push(note(1))

    outbox.finish(FINAL)

    assert await drain(outbox) == [note(0), FINAL]
    assert outbox.dropped == 1


async def test_get_returns_none_once_finished_and_drained() -> None:
    outbox = Outbox()
    outbox.push(note(0))
    outbox.finish()

    async with asyncio.timeout(WAIT):
        assert await outbox.get() == note(0)
        assert await outbox.get() is None
        assert await outbox.get() is None
    assert outbox.finished


async def test_a_push_after_finish_is_refused_and_counted() -> None:
    outbox = Outbox()
    outbox.finish(FINAL)

    assert outbox.push(note(0)) is False
    assert outbox.dropped == 1
    assert await drain(outbox) == [FINAL]


async def test_a_second_finish_is_ignored() -> None:
    outbox = Outbox()
    outbox.finish(FINAL)
    outbox.finish({"jsonrpc": "2.0", "id": 2, "result": {}})

    assert await drain(outbox) == [FINAL]


async def test_a_waiting_get_wakes_when_a_message_arrives() -> None:
    outbox = Outbox()
    # Runs only once get() below has found the outbox empty and parked.
    asyncio.get_running_loop().call_soon(outbox.push, note(0))

    async with asyncio.timeout(WAIT):
        assert await outbox.get() == note(0)


async def test_a_waiting_get_wakes_with_none_when_finished() -> None:
    outbox = Outbox()
    asyncio.get_running_loop().call_soon(outbox.finish)

    async with asyncio.timeout(WAIT):
        assert await outbox.get() is None
