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
    if position.stream == 0:
        return await log.replay(session_id, position.run, 0, position.seq)
    rows = await log.replay(session_id, position.run, position.stream, -1)
    marker = rows[0][1] if rows and rows[0][0] == 0 else None
    events = [(seq, data) for seq, data in rows if seq > 0]
    if marker is not None and not (events and _is_reply(events[-1][1])):
        seq = (events[-1][0] if events else 0) + 1
        data = lost_reply(jsonrpc.loads(marker).get("id"), position.run)
        log.record(session_id, position.run, position.stream, Event(seq, data, True))
        events.append((seq, data))
    return [(seq, data) for seq, data in events if seq > position.seq]
