"""A session's streams: numbering, readers, the GET stream, logging for replay, pruning."""

from __future__ import annotations

import pytest

from hub.errors import StreamConflict
from hub.session_streams import SessionStreams, StreamSettings
from hub.streams import Event


def test_stream_zero_is_the_get_stream_and_requests_get_the_next_numbers() -> None:
    streams = SessionStreams("r", StreamSettings())
    assert streams.get.number == 0
    assert [streams.open().number for _ in range(3)] == [1, 2, 3]
    assert streams.event_id(streams.find(2) or streams.get, 5) == "r-2-5"


def test_a_stream_is_logged_once_it_has_a_reader_and_the_reader_is_counted() -> None:
    logged: list[tuple[int, Event]] = []
    streams = SessionStreams("r", StreamSettings(), lambda number, event: logged.append((number, event)))
    stream = streams.open()
    stream.push({"jsonrpc": "2.0", "method": "x"})
    assert [n for n, _ in logged if n == stream.number] == []  # a JSON reply is never logged
    with streams.reading(stream):
        assert streams.readers == 1
        stream.push({"jsonrpc": "2.0", "method": "y"})
    assert streams.readers == 0
    assert [e.seq for n, e in logged if n == stream.number] == [1, 2]


def test_only_one_fresh_get_stream_at_a_time_but_a_resumption_may_join() -> None:
    streams = SessionStreams("r", StreamSettings())
    with streams.listening() as start:
        assert start == 0
        with pytest.raises(StreamConflict), streams.listening():
            pass
        with streams.listening(after=0):
            assert streams.get_open
    streams.get.push({"m": 1})
    with streams.listening() as later:
        assert later == 1  # later GET streams start from now


def test_release_ends_readers_of_unfinished_streams_only() -> None:
    streams = SessionStreams("r", StreamSettings())
    open_one, done = streams.open(), streams.open()
    done.finish({"id": 1, "result": {}})
    claims = (open_one.claim(), done.claim())
    streams.release_all()
    assert open_one.claim() == claims[0] + 2  # released once, then claimed here
    assert done.claim() == claims[1] + 1  # untouched: its reader delivers what is left


def test_finished_streams_are_pruned_past_the_limit_but_the_get_stream_stays() -> None:
    streams = SessionStreams("r", StreamSettings(max_finished=2))
    for _ in range(10):
        streams.open().finish()
    streams.open()
    assert len(streams) <= 2 * 2 + 2
    assert streams.find(0) is streams.get


def test_a_stream_answered_as_json_is_forgotten_and_kept_streams_stay_within_the_byte_budget() -> None:
    streams = SessionStreams("r", StreamSettings(retain_bytes=3000))
    answered = streams.open()
    answered.finish({"id": 1, "result": {"pad": "x" * 100}})
    streams.forget(answered)
    assert streams.find(answered.number) is None
    kept = []
    for n in range(5):  # SSE replies of about 1 kB each, read to their end
        stream = streams.open()
        with streams.reading(stream):
            stream.finish({"id": n, "result": {"pad": "y" * 1000}})
        kept.append(stream.number)
    assert [n for n in kept if streams.find(n) is not None] == kept[-2:]  # the oldest went first
    streams.forget(streams.get)
    assert streams.find(0) is streams.get  # the GET stream is never forgotten
