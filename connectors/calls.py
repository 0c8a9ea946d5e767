"""What the engine keeps per request (hooks, deadline) and per upstream session (state to repeat)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from connectors import jsonrpc
from connectors.errors import ManifoldError
from connectors.jsonrpc import Message

__all__ = [
    *("Call", "CallHooks", "Deadline", "MessageHandler", "ProgressHandler", "RequestHandler", "SessionState"),
    "answer",
]

logger = logging.getLogger(__name__)

MessageHandler = Callable[[Message], None]
"""Receives upstream notifications that belong to no call (log messages, resource updates)."""

ProgressHandler = Callable[[Message], None]
"""Receives the params of a ``notifications/progress``, with the caller's own token restored."""

RequestHandler = Callable[[Message], Awaitable[Message]]
"""Answers a server-to-client request (sampling, elicitation, roots): returns its result.

Raises ManifoldError (or anything) to answer with an error instead.
"""


@dataclass(frozen=True)
class CallHooks:
    """Where the messages an upstream sends while serving one call go."""

    progress: ProgressHandler | None = None
    request: RequestHandler | None = None
    message: MessageHandler | None = None
    interrupted: Callable[[], None] | None = None
    """The upstream closed the call's reply stream before replying (it polls); the connector resumes it."""


class Deadline:
    """A request's deadline: ``limit`` seconds of silence, moved by progress, never past ``give_up``."""

    __slots__ = ("give_up", "limit", "moved", "scope")

    def __init__(self, scope: asyncio.Timeout, limit: float, give_up: float) -> None:
        self.scope = scope
        self.limit = limit
        self.give_up = give_up
        self.moved = False

    def move(self) -> None:
        when = min(asyncio.get_running_loop().time() + self.limit, self.give_up)
        current = self.scope.when()
        if current is not None and when > current:
            self.scope.reschedule(when)
            self.moved = True


@dataclass
class Call:
    """One request awaiting its reply."""

    future: asyncio.Future[Message]
    hooks: CallHooks | None
    deadline: Deadline | None


class SessionState:
    """Session-scoped requests to repeat on a new upstream session: the log level, the subscriptions."""

    def __init__(self) -> None:
        self._requests: dict[tuple[str, str], Message] = {}

    def remember(self, method: str, params: Message | None) -> None:
        uri = str((params or {}).get("uri", ""))
        if method == "logging/setLevel":
            self._requests[(method, "")] = params or {}
        elif method == "resources/subscribe":
            self._requests[(method, uri)] = params or {}
        elif method == "resources/unsubscribe":
            self._requests.pop(("resources/subscribe", uri), None)

    def requests(self) -> list[tuple[str, Message]]:
        return [(method, params) for (method, _), params in self._requests.items()]

    @property
    def subscribed(self) -> bool:
        return any(method == "resources/subscribe" for method, _ in self._requests)


async def answer(message: Message, handler: RequestHandler | None, upstream: str) -> Message:
    """The reply to a request of the upstream's: ``ping`` answered here, the rest by ``handler``
    (with none, "not supported"); a handler's failure becomes an error reply.

    Raises: asyncio.CancelledError: the upstream cancelled its own request (no reply is due).
    """
    method = message["method"]
    try:
        if method == "ping":
            return jsonrpc.response(message["id"], {})
        if handler is None:
            error = {"code": -32601, "message": f"{method} is not supported by this client"}
            return jsonrpc.error_response(message["id"], error)
        return jsonrpc.response(message["id"], await handler(message))
    except ManifoldError as exc:
        return jsonrpc.error_response(message["id"], exc.to_error())
    except Exception:
        logger.exception("answering %s from upstream %s failed", method, upstream)
        return jsonrpc.error_response(message["id"], {"code": -32603, "message": "internal error"})
