"""How the 2026-07-28 era answers with an error: the JSON-RPC error, and the HTTP status its code takes.

The era gives errors HTTP statuses by code (400 for the request's own faults,
404 for an unknown method); a refusal that carries its own status (401, 429,
503) keeps it. Resource-not-found is ``-32602`` in this era.
"""

from __future__ import annotations

from typing import Any, Final

from connectors import jsonrpc
from connectors.jsonrpc import Message
from hub.asgi import Send, respond
from hub.errors import InvalidParams, UnknownResource, to_wire

__all__ = ["reply_error", "stateless_error"]

_STATUS: Final = {-32700: 400, -32600: 400, -32602: 400, -32020: 400, -32021: 400, -32022: 400, -32601: 404}


def stateless_error(exc: BaseException) -> tuple[Message, int, dict[str, str]]:
    """The error of a stateless request, its HTTP status (from its code) and headers."""
    if isinstance(exc, UnknownResource):
        exc = InvalidParams(exc.message, data=exc.data)  # 2026-07-28 says "resource not found" with -32602
    wire = to_wire(exc)
    code = wire.error.get("code")
    status = wire.status if wire.status != 200 else _STATUS.get(code if isinstance(code, int) else 0, 200)
    return wire.error, status, wire.headers


async def reply_error(send: Send, request_id: Any, exc: BaseException) -> None:
    error, status, headers = stateless_error(exc)
    out = [(b"content-type", b"application/json")] + [(k.encode(), v.encode()) for k, v in headers.items()]
    await respond(send, status, jsonrpc.dumps(jsonrpc.error_response(request_id, error)), out)
