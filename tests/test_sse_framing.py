"""SSE framing shared by /mcp and /sse, and the keep-alive around a quiet stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from hub.sse import event, priming, with_keepalive

pytestmark = pytest.mark.anyio


def test_events_and_priming_events_have_the_wire_form_clients_parse() -> None:
    assert event(b'{"a":1}', "r-1-2") == b'id: r-1-2\nevent: message\ndata: {"a":1}\n\n'
    assert event(b"/messages?x", name="endpoint") == b"event: endpoint\ndata: /messages?x\n\n"
    assert priming("r-1-0", 1000) == b"id: r-1-0\nretry: 1000\ndata: \n\n"


async def test_a_quiet_stream_yields_keepalives_and_then_its_items() -> None:
    go = asyncio.Event()

    async def items() -> AsyncGenerator[int, None]:
        await go.wait()
        yield 1

    seen: list[int | None] = []
    async for item in with_keepalive(items(), idle=0.01):
        seen.append(item)
        if len(seen) == 3:
            go.set()
    assert seen[:3] == [None, None, None] and seen[-1] == 1


async def test_closing_the_keepalive_closes_what_it_wraps() -> None:
    closed = asyncio.Event()

    async def items() -> AsyncGenerator[int, None]:
        try:
            while True:
                yield 1
        finally:
            closed.set()

    wrapped = with_keepalive(items())
    assert await anext(wrapped) == 1
    await wrapped.aclose()
    assert closed.is_set()
