"""What a request to the MCP endpoint must look like: its media types, version header, body and id."""

from __future__ import annotations

from typing import Any, Final

from connectors import jsonrpc
from connectors.spec import MODERN_VERSIONS, SUPPORTED_VERSIONS
from hub.envelope import PROTOCOL_KEY
from hub.errors import InvalidRequest, ParseError, TooDeep, UnsupportedVersion

__all__ = [
    "SESSION_HEADER",
    "VERSION_HEADER",
    "accepts",
    "check_version",
    "decode_message",
    "is_modern",
    "request_id_of",
    "wears_envelope",
]

SESSION_HEADER: Final = "mcp-session-id"
VERSION_HEADER: Final = "mcp-protocol-version"


def accepts(accept: str, media: str) -> bool:
    kind = media.split("/")[0]
    for part in accept.split(","):
        value = part.split(";")[0].strip().lower()
        if value in (media, "*/*", f"{kind}/*"):
            return True
    return False


def check_version(headers: dict[str, str]) -> None:
    """Raises: UnsupportedVersion: the header names a version the hub does not speak (with the list)."""
    version = headers.get(VERSION_HEADER)
    if version is not None and version not in SUPPORTED_VERSIONS and version not in MODERN_VERSIONS:
        # -32022 with the versions we speak lets a client pick one it shares.
        raise UnsupportedVersion(
            f"unsupported protocol version: {version}",
            data={"supported": [*SUPPORTED_VERSIONS, *MODERN_VERSIONS], "requested": version},
        )


def wears_envelope(headers: dict[str, str], message: Any) -> bool:
    """A request of a version the hub does not know, in the stateless era's envelope: answered as that era
    answers it (-32022 naming the stateless versions, with the request's id)."""
    version = headers.get(VERSION_HEADER)
    if version is None or version in SUPPORTED_VERSIONS:
        return False
    params = message.get("params") if isinstance(message, dict) else None
    meta = params.get("_meta") if isinstance(params, dict) else None
    return isinstance(meta, dict) and PROTOCOL_KEY in meta


def is_modern(headers: dict[str, str]) -> bool:
    """Whether a request is of the stateless era (its version header says so)."""
    return headers.get(VERSION_HEADER) in MODERN_VERSIONS


def decode_message(body: bytes, max_depth: int) -> Any:
    """The decoded JSON of a request body, one message (not yet known to be JSON-RPC).

    Raises:
        ParseError: the body is not JSON.
        TooDeep: it nests past ``max_depth``.
        InvalidRequest: it is a batch.
    """
    try:
        message: Any = jsonrpc.loads(body)
    except ValueError:
        raise ParseError("Parse error: the body is not valid JSON") from None
    if jsonrpc.too_deep(body, message, max_depth):
        raise TooDeep(f"Invalid Request: JSON nested deeper than {max_depth} levels")
    if isinstance(message, list):
        raise InvalidRequest("Invalid Request: batches are not supported; send one message per POST")
    return message


def request_id_of(message: Any) -> Any:
    """The id to answer a refused message with: its own, when it has a valid one."""
    request_id = message.get("id") if isinstance(message, dict) else None
    return request_id if isinstance(request_id, str | int) and not isinstance(request_id, bool) else None
