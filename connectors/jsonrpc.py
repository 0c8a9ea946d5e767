"""JSON-RPC 2.0 messages as plain dicts, encoded with orjson.

Messages stay dicts on the hot path: the hub rewrites an id or a token and
passes the rest through untouched, so it never builds models for payloads
it only forwards.
"""

from __future__ import annotations

import enum
from typing import Any

import orjson

__all__ = [
    "Kind",
    "Message",
    "classify",
    "dumps",
    "error_response",
    "loads",
    "notification",
    "request",
    "response",
    "too_deep",
]

Message = dict[str, Any]


class Kind(enum.Enum):
    REQUEST = "request"
    NOTIFICATION = "notification"
    RESPONSE = "response"
    ERROR = "error"


def dumps(message: Any) -> bytes:
    return orjson.dumps(message)


def loads(data: bytes | str) -> Any:
    """Decode JSON; raises ``ValueError`` (``orjson.JSONDecodeError``) on bad input."""
    return orjson.loads(data)


def request(request_id: int | str, method: str, params: Message | None = None) -> Message:
    message: Message = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    return message


def notification(method: str, params: Message | None = None) -> Message:
    message: Message = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        message["params"] = params
    return message


def response(request_id: Any, result: Any) -> Message:
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


def error_response(request_id: Any, error: Message) -> Message:
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


def _valid_id(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def classify(message: Any) -> Kind | None:
    """The kind of a decoded JSON-RPC 2.0 message, or ``None`` when it is not one."""
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        return None
    method = message.get("method")
    if method is not None:
        if not isinstance(method, str) or not method:
            return None
        params = message.get("params")
        if params is not None and not isinstance(params, dict):
            return None
        if "id" not in message:
            return Kind.NOTIFICATION
        return Kind.REQUEST if _valid_id(message["id"]) else None
    if "id" not in message:
        return None
    if "result" in message and "error" not in message:
        return Kind.RESPONSE if _valid_id(message["id"]) else None
    error = message.get("error")
    if (
        "result" not in message
        and (message["id"] is None or _valid_id(message["id"]))
        and isinstance(error, dict)
        and _valid_id(error.get("code"))
        and not isinstance(error.get("code"), str)
    ):
        return Kind.ERROR
    return None


def too_deep(body: bytes, value: Any, limit: int) -> bool:
    """Whether decoded ``value`` (from ``body``) nests arrays and objects more than ``limit`` deep.

    Encoding fails past a depth of about 254, so such input is refused at the door. A body
    with fewer than ``limit`` brackets cannot be that deep: the common case costs two scans
    in C and no walk.
    """
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            pending.extend((child, depth + 1) for child in item.values() if isinstance(child, dict | list))
        elif isinstance(item, list):
            pending.extend((child, depth + 1) for child in item if isinstance(child, dict | list))
    return False
