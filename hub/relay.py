"""The relay of server-to-client requests (sampling, elicitation, roots) to one client.

An upstream's request goes to the client on the stream of the call it
belongs to (or the session's GET stream) under a hub id that names the
upstream, so that two upstreams' ids never collide; the client's answer,
POSTed back as a JSON-RPC response, is matched by that id and returned to
the upstream that asked. Only capabilities the client declared are relayed.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Final

from connectors import jsonrpc
from connectors.jsonrpc import Message
from hub.errors import ClientError, ClientTimeout, MethodNotFound
from hub.streams import Stream

__all__ = ["RELAYED_CAPABILITIES", "Relay", "held_question", "require_capability"]

logger = logging.getLogger(__name__)

RELAYED_CAPABILITIES: Final = ("roots", "sampling", "elicitation")
_CAPABILITY_OF: Final = {
    "sampling/createMessage": "sampling",
    "elicitation/create": "elicitation",
    "roots/list": "roots",
}
MAX_PENDING: Final = 256


def require_capability(capabilities: Message, method: str, params: Message) -> None:
    """Raises: MethodNotFound: the client did not declare what ``method`` needs (or it is not relayed at all)."""
    capability = _CAPABILITY_OF.get(method)
    if capability is None:
        raise MethodNotFound(f"{method} is not relayed to clients")
    declared = capabilities.get(capability)
    if not isinstance(declared, dict):
        raise MethodNotFound(f"the client did not declare the {capability} capability")
    if capability == "elicitation":
        mode = params.get("mode", "form")
        # An empty elicitation capability means form mode only.
        if (declared and mode not in declared) or (not declared and mode != "form"):
            raise MethodNotFound(f"the client does not support {mode} elicitation")


def held_question(message: Message, capabilities: Message, open_now: int, limit: int, of: str) -> tuple[str, Message]:
    """The method and params of an upstream's question that waits for a later answer of the client.

    Raises:
        MethodNotFound: the client did not declare the capability the question needs.
        ClientError: ``limit`` questions of this ``of`` (a call, a task) are open already.
    """
    method = message["method"]
    params = message.get("params")
    params = params if isinstance(params, dict) else {}
    require_capability(capabilities, method, params)
    if open_now >= limit:
        raise ClientError({"code": -32000, "message": f"{limit} questions of this {of} are open"})
    return method, params


class Relay:
    """Questions to one client and the answers it gives."""

    def __init__(self, client_capabilities: Message, timeout: float) -> None:
        self.client_capabilities = client_capabilities
        self.timeout = timeout
        self._asks: dict[str, asyncio.Future[Message]] = {}
        self._ids = itertools.count(1)

    def __len__(self) -> int:
        return len(self._asks)

    async def ask(self, upstream: str, message: Message, stream: Stream) -> Message:
        """Relay a server-to-client request to the client and return its result.

        Raises:
            MethodNotFound: the client did not declare the capability the request needs.
            ClientError: the client answered with an error (or too many questions are open).
            ClientTimeout: the client did not answer in time.
        """
        method = message["method"]
        params = message.get("params")
        require_capability(self.client_capabilities, method, params if isinstance(params, dict) else {})
        if len(self._asks) >= MAX_PENDING:
            raise ClientError({"code": -32000, "message": f"{MAX_PENDING} questions to this client are open"})
        hub_id = f"{upstream}:{next(self._ids)}"
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._asks[hub_id] = future
        stream.push(jsonrpc.request(hub_id, method, params))
        try:
            async with asyncio.timeout(self.timeout):
                reply = await future
        except TimeoutError:
            stream.push(jsonrpc.notification("notifications/cancelled", {"requestId": hub_id, "reason": "timeout"}))
            raise ClientTimeout(f"the client did not answer {method} within {self.timeout:g}s") from None
        except asyncio.CancelledError:
            reason = {"requestId": hub_id, "reason": "cancelled by the upstream"}
            stream.push(jsonrpc.notification("notifications/cancelled", reason))
            raise
        finally:
            del self._asks[hub_id]
        if "error" in reply:
            raise ClientError(reply["error"])
        result = reply.get("result")
        return result if isinstance(result, dict) else {}

    def answer(self, message: Message) -> bool:
        """Hand the client's response to the question it answers; False when it answers none."""
        future = self._asks.get(message.get("id"))  # type: ignore[arg-type]
        if future is None or future.done():
            logger.debug("a reply to no question (%r)", message.get("id"))
            return False
        future.set_result(message)
        return True
