"""Replay from the event log of a stream another run of the hub served (a restart, or a replica that is gone).

What the log kept after the client's ``Last-Event-ID`` is given back as it
was. A request's stream whose reply never came (the run serving it ended
mid-call) is answered with an error naming that run, so the client is not
left waiting for a reply nobody will send; the error is logged like any
event, so a second resumption gets the same one, once.
"""

from __future__ import annotations

from connectors import jsonrpc
from hub.events import EventLog
from hub.streams import Event, EventId

__all__ = ["logged_events", "lost_reply"]


def lost_reply(request_id: object, run: str) -> bytes:
    """The error that ends the stream of a request whose hub run stopped before it answered."""
    error = {
        "code": -32603,
        "message": (
            f"the hub process that was serving this request (run {run}) stopped before it answered; "
            "whether the request was carried out is unknown"
        ),
        "data": {"replica": run},
    }
    return jsonrpc.dumps(jsonrpc.error_response(request_id, error))


def _is_reply(data: bytes) -> bool:
    try:
        message = jsonrpc.loads(data)
    except ValueError:
        return False
    return isinstance(message, dict) and "method" not in message and ("result" in message or "error" in message)


async def logged_events(log: EventLog, session_id: str, position: EventId) -> list[tuple[int, bytes]]:
    """The events of ``position``'s stream after it, the reply of a lost request included."""
    run, stream, seen = position.run, position.stream, position.seq
    after = await log.replay(session_id, run, stream, seen)
    if stream == 0:
        return after
    for index, (_, data) in enumerate(after):
        if _is_reply(data):
            return after[: index + 1]  # a stream ends with its reply (two runs may have logged one each)
    # The last event of the stream (the client's own, when nothing came after it) says whether it ended.
    last = after[-1:] or await log.replay(session_id, run, stream, seen - 1, upto=seen)
    if last and last[0][0] > 0 and _is_reply(last[0][1]):
        return after
    marker = await log.replay(session_id, run, stream, -1, upto=0)
    if not marker:
        return after  # not a request's stream the log knows of
    seq = max(seen, after[-1][0] if after else 0) + 1
    data = lost_reply(jsonrpc.loads(marker[0][1]).get("id"), run)
    log.record(session_id, run, stream, Event(seq, data, True))
    return [*after, (seq, data)]
