"""What plugs in under the JSON-RPC engine: a transport moves messages, the engine gives them meaning.

A :class:`Transport` carries one upstream session's messages (Streamable
HTTP, the legacy HTTP+SSE transport, a stdio process). It knows nothing of
ids, progress or cancellation: it sends what the engine gives it and hands
every message it receives to the engine's :class:`Link`. Only transports
import HTTP libraries.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Protocol

from connectors.jsonrpc import Message

__all__ = ["Link", "Transport"]


class Link(Protocol):
    """The engine, as its transport sees it."""

    @property
    def protocol_version(self) -> str:
        """The negotiated version ("" before the handshake)."""
        ...

    def deliver(self, message: Any, via: int | None = None) -> None:
        """Route one decoded message; ``via`` is the request whose reply stream carried it."""

    def awaiting(self, request_id: int) -> bool:
        """Whether the reply to ``request_id`` is still to come."""
        ...

    def interrupted(self, request_id: int) -> None:
        """The upstream closed a request's reply stream before replying (it polls); the transport resumes."""

    @property
    def busy(self) -> bool:
        """Whether any request of the session awaits its reply."""
        ...

    @property
    def listening_wanted(self) -> bool:
        """Whether the session must hear unrelated messages even when idle (it holds subscriptions)."""
        ...

    def lost(self, reason: str) -> None:
        """The session is gone for good; every waiter gets an error."""

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run a side task owned by the engine (cancelled when it closes)."""
        ...


class Transport(Protocol):
    """One upstream session's byte mover; opened and closed by the engine, in the engine's task."""

    async def open(self, link: Link) -> None:
        """Open whatever is needed before the handshake.

        Raises:
            UpstreamError: the upstream could not be reached.
        """

    async def send(self, message: Message) -> None:
        """Send one message; replies may be delivered through the link before this returns.

        Raises:
            UpstreamSessionExpired: the upstream no longer knows our session.
            UpstreamError: the message could not be delivered, or its reply was not MCP.
        """

    async def opened(self) -> None:
        """A session (first or renewed) is open: start whatever runs beside requests."""

    def reset(self) -> None:
        """Forget the upstream session before a fresh handshake."""

    async def close(self) -> None:
        """Release everything; called once, by the task that opened it. Never raises."""
