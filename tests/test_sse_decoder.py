"""The incremental SSE decoder: the line and field rules of the event-stream format, across chunk borders."""

from __future__ import annotations

import pytest

from connectors.sse_decoder import EventTooLarge, SseDecoder, SseEvent


def decode(*chunks: bytes) -> tuple[list[SseEvent], SseDecoder]:
    decoder = SseDecoder()
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    return events, decoder


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_every_line_ending_ends_lines(newline: bytes) -> None:
    events, _ = decode(b"event: message" + newline + b"data: {}" + newline + newline)
    assert events == [SseEvent(b"{}", "message", None)]


def test_events_split_anywhere_across_chunks_come_out_whole() -> None:
    stream = b"id: 7\r\ndata: first\r\n\r\nid: 8\r\ndata: second\r\n\r\n"
    for cut in range(1, len(stream)):
        events, decoder = decode(stream[:cut], stream[cut:])
        assert events == [SseEvent(b"first", "message", "7"), SseEvent(b"second", "message", "8")], cut
        assert decoder.last_id == "8"


def test_multi_line_data_is_joined_with_newlines_and_comments_are_skipped() -> None:
    events, _ = decode(b": keepalive\n\ndata: a\ndata:b\ndata\n\n")
    assert events == [SseEvent(b"a\nb\n")]


def test_an_event_without_data_moves_the_last_id_and_retry_but_is_not_dispatched() -> None:
    events, decoder = decode(b"id: 3-0\nretry: 500\n\n")
    assert events == []
    assert (decoder.last_id, decoder.retry_ms) == ("3-0", 500)
    primed, _ = decode(b"id: 3-0\nretry: 500\ndata: \n\n")  # the MCP priming event: empty data
    assert primed == [SseEvent(b"", "message", "3-0")]


def test_odd_fields_are_ignored() -> None:
    events, decoder = decode(b"id: a\0b\nretry: soon\nbogus: x\nevent: endpoint\ndata: /messages\n\n")
    assert events == [SseEvent(b"/messages", "endpoint", None)]
    assert decoder.retry_ms is None


def test_a_byte_order_mark_and_non_ascii_digits_are_handled() -> None:
    events, decoder = decode(b"\xef\xbb", b"\xbfretry: \xc2\xb2\ndata: x\n\n")
    assert events == [SseEvent(b"x")]
    assert decoder.retry_ms is None


def test_a_huge_line_is_decoded_whole_and_an_endless_one_refused() -> None:
    payload = b"y" * 3_000_000
    chunks = [b"data: " + payload[:1_000_000], payload[1_000_000:], b"\n\n"]
    events, _ = decode(*chunks)
    assert events == [SseEvent(payload)]
    decoder = SseDecoder(max_event=1_000_000)
    with pytest.raises(EventTooLarge, match="larger than 1000000 bytes"):
        for _ in range(20):
            decoder.feed(b"z" * 100_000)


def test_an_event_of_endless_short_data_lines_is_refused_at_the_limit() -> None:
    decoder = SseDecoder(max_event=100_000)
    with pytest.raises(EventTooLarge):
        for _ in range(10_000):
            decoder.feed(b"data: " + b"x" * 50 + b"\n")
    decoder = SseDecoder(max_event=100_000)
    for _ in range(10_000):  # the same lines in events of their own never pass it
        assert len(decoder.feed(b"data: " + b"x" * 50 + b"\n\n")) == 1


def test_a_long_line_in_small_chunks_is_scanned_once() -> None:
    decoder = SseDecoder()
    payload = b"q" * 8_000_000
    events = [e for i in range(0, len(payload), 1000) for e in decoder.feed(payload[i : i + 1000])]
    events += decoder.feed(b"\n")
    assert events == [] and decoder.feed(b"\n") == []
    # Bounded time is what this shows: 8,000 chunks of an 8 MB line; quadratic rescans would take minutes.
