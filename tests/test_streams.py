"""Stream buffers and event ids."""

from __future__ import annotations

import json

import pytest

from hub.streams import EventId, Stream

pytestmark = pytest.mark.anyio


def test_event_ids_round_trip_and_odd_ones_are_refused() -> None:
    assert EventId.parse(str(EventId("ab12", 3, 7))) == EventId("ab12", 3, 7)
    for odd in ("", "ab12", "ab12-3", "ab12-x-1", "ab12-0-\u00b2", "-1-2"):
        assert EventId.parse(odd) is None


async def test_a_reader_resumes_after_its_position_and_only_its_own_disconnect_ends_it() -> None:
    stream = Stream(1, retain=10)
    for n in range(3):
        stream.push({"n": n})
    old = stream.claim()
    new = stream.claim()
    stream.release(old)  # a stale connection going away must not end the new reader
    stream.finish({"n": "end"})
    seen = [json.loads(event.data)["n"] async for event in stream.read(1, new)]
    assert seen == [1, 2, "end"]
