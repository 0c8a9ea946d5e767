"""The shared ASGI plumbing: bounded body reads and error replies."""

from __future__ import annotations

import asyncio
import json
from collections.abc import MutableMapping
from typing import Any

import pytest

from hub.asgi import read_body, respond_error
from hub.errors import BodyTooLarge, InvalidRequest, RequestTimeout, ShuttingDown, to_wire

pytestmark = pytest.mark.anyio


def receiving(*events: dict[str, Any]) -> Any:
    queue = list(events)

    async def receive() -> MutableMapping[str, Any]:
        if not queue:
            await asyncio.Event().wait()  # the rest of the body never comes
        return queue.pop(0)

    return receive


async def test_a_body_in_chunks_is_read_whole() -> None:
    receive = receiving(
        {"type": "http.request", "body": b"ab", "more_body": True}, {"type": "http.request", "body": b"c"}
    )
    assert await read_body(receive, 10, 1) == b"abc"


async def test_a_body_past_the_limit_a_late_body_and_a_gone_client_are_refused() -> None:
    with pytest.raises(BodyTooLarge):
        await read_body(receiving({"type": "http.request", "body": b"x" * 11}), 10, 1)
    with pytest.raises(RequestTimeout, match=r"within 0\.05s"):
        await read_body(receiving({"type": "http.request", "body": b"x", "more_body": True}), 10, 0.05)
    with pytest.raises(InvalidRequest, match="disconnected"):
        await read_body(receiving({"type": "http.disconnect"}), 10, 1)


async def test_an_error_reply_carries_its_status_headers_and_the_request_id() -> None:
    sent: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await respond_error(send, to_wire(ShuttingDown()), 7)
    assert sent[0]["status"] == 503
    assert (b"retry-after", b"2") in sent[0]["headers"]
    body = json.loads(sent[1]["body"])
    assert body["id"] == 7 and body["error"]["code"] == -32000
