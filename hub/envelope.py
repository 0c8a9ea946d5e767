"""The 2026-07-28 request envelope: what a stateless request must say about itself, checked.

A stateless request carries its protocol version, the client's capabilities
and (optionally) its info and log level in ``params._meta``, and repeats its
routing in HTTP headers: ``MCP-Protocol-Version``, ``Mcp-Method``, ``Mcp-Name``
(for the methods that name something) and, for tool arguments whose schema
marks them ``x-mcp-header``, ``Mcp-Param-<Name>``. Headers that disagree with
the body are refused (``-32020``), so that whatever routed the request on the
headers alone (a load balancer, a firewall) saw what the hub serves.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from connectors.eras import TASK_METHODS, annotated_arguments, argument_at, rendered_argument
from connectors.jsonrpc import Message
from connectors.spec import MODERN_VERSIONS
from hub.catalog import Catalog
from hub.errors import HeaderMismatch, InvalidParams, UnsupportedVersion

__all__ = [
    "CAPABILITIES_KEY",
    "CLIENT_INFO_KEY",
    "LOG_LEVEL_KEY",
    "NAME_BEARING",
    "PROTOCOL_KEY",
    "SERVER_INFO_KEY",
    "SUBSCRIPTION_KEY",
    "Envelope",
    "ParamHeaderCache",
    "ParamHeaders",
    "check_param_headers",
    "duplicated_routing_header",
    "open_envelope",
    "param_headers",
    "upstream_meta",
]

PROTOCOL_KEY: Final = "io.modelcontextprotocol/protocolVersion"
CAPABILITIES_KEY: Final = "io.modelcontextprotocol/clientCapabilities"
CLIENT_INFO_KEY: Final = "io.modelcontextprotocol/clientInfo"
LOG_LEVEL_KEY: Final = "io.modelcontextprotocol/logLevel"
SERVER_INFO_KEY: Final = "io.modelcontextprotocol/serverInfo"
SUBSCRIPTION_KEY: Final = "io.modelcontextprotocol/subscriptionId"
# The log level stays: a 2026-07-28 upstream gets it with the request, a session-era one has it removed.
_ENVELOPE_KEYS: Final = frozenset({PROTOCOL_KEY, CAPABILITIES_KEY, CLIENT_INFO_KEY})

NAME_BEARING: Final[Mapping[str, str]] = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
"""Methods whose ``Mcp-Name`` header repeats a parameter, and which one."""

_ROUTING: Final = frozenset({b"mcp-protocol-version", b"mcp-method", b"mcp-name"})
_BASE64: Final = re.compile(r"^=\?base64\?(?P<payload>.*)\?=$")
_HEADER_PREFIX: Final = "mcp-param-"
_DECIMAL: Final = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?")


@dataclass(frozen=True, slots=True)
class Envelope:
    """What one stateless request says about its client."""

    version: str
    capabilities: Message
    client_info: Message
    log_level: str | None


def duplicated_routing_header(raw: Iterable[tuple[bytes, bytes]]) -> str | None:
    """A routing or ``Mcp-Param-*`` header sent twice (two readers could disagree on which counts), or None."""
    seen: set[bytes] = set()
    for name, _ in raw:
        if name in _ROUTING or name.startswith(b"mcp-param-"):
            if name in seen:
                return name.decode("latin-1")
            seen.add(name)
    return None


def _decoded(value: str | None) -> str | None:
    """A header value with the ``=?base64?…?=`` wrapping undone; None when the wrapping is broken."""
    if value is None:
        return None
    match = _BASE64.match(value)
    if match is None:
        return value
    payload = match.group("payload")
    try:
        raw = base64.b64decode(payload, validate=True)
        if base64.b64encode(raw).decode("ascii") != payload:
            return None
        return raw.decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None


def open_envelope(message: Message, headers: Mapping[str, str]) -> Envelope:
    """Check a stateless request's envelope against its headers and return it.

    Raises:
        InvalidParams: ``params._meta`` lacks the version or the client capabilities.
        HeaderMismatch: a routing header is missing or disagrees with the body.
        UnsupportedVersion: the version is not one the hub serves statelessly (with the list).
    """
    params = message.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    if not isinstance(meta, dict):
        raise InvalidParams(f"params._meta must be an object carrying {PROTOCOL_KEY} and {CAPABILITIES_KEY}")
    if PROTOCOL_KEY not in meta or CAPABILITIES_KEY not in meta:
        missing = [key for key in (PROTOCOL_KEY, CAPABILITIES_KEY) if key not in meta]
        raise InvalidParams(f"params._meta is missing {', '.join(missing)}")
    version = meta[PROTOCOL_KEY]
    if headers.get("mcp-protocol-version") != version:
        raise HeaderMismatch("the MCP-Protocol-Version header does not match params._meta")
    method = message.get("method")
    if headers.get("mcp-method") != method:
        raise HeaderMismatch("the Mcp-Method header does not match the method of the body")
    name_key = NAME_BEARING.get(str(method))
    if name_key is not None and isinstance(params, dict):
        named = params.get(name_key)
        header = headers.get("mcp-name")
        # (The same text as the name is the name, unless it reads as base64 wrapping: that is undone.)
        if named is not None and (header != named or named.startswith("=?")) and _decoded(header) != named:
            raise HeaderMismatch(f"the Mcp-Name header does not match params.{name_key}")
    elif (
        method in TASK_METHODS
        and isinstance(params, dict)
        and "mcp-name" in headers  # (optional on a tasks request; when sent, its task's id)
        and _decoded(headers["mcp-name"]) != params.get("taskId")
    ):
        raise HeaderMismatch("the Mcp-Name header does not match params.taskId")
    if not isinstance(version, str):
        raise InvalidParams(f"params._meta.{PROTOCOL_KEY} must be a string")
    if version not in MODERN_VERSIONS:
        raise UnsupportedVersion(
            f"unsupported protocol version: {version}",
            data={"supported": list(MODERN_VERSIONS), "requested": version},
        )
    capabilities = meta[CAPABILITIES_KEY]
    if not isinstance(capabilities, dict):
        raise InvalidParams(f"params._meta.{CAPABILITIES_KEY} must be an object")
    info = meta.get(CLIENT_INFO_KEY)
    level = meta.get(LOG_LEVEL_KEY)
    return Envelope(
        version, capabilities, info if isinstance(info, dict) else {}, level if isinstance(level, str) else None
    )


def _same(value: Any, rendered: str, header: str) -> bool:
    """Whether a header names exactly the argument: text as it is, numbers in plain decimal only."""
    if rendered == header:
        return True
    if isinstance(value, bool) or not isinstance(value, int | float) or not _DECIMAL.fullmatch(header):
        return False
    if isinstance(value, int) and "." not in header:
        return int(header) == value  # exact, however large
    try:
        return Decimal(header) == Decimal(repr(value))  # 5 and 5.0 name the same number; no float rounding
    except InvalidOperation:
        return False


ParamHeaders = tuple[tuple[tuple[str, ...], str], ...]


def param_headers(input_schema: Any) -> ParamHeaders:
    """(argument path, header name) of every argument a tool's schema marks ``x-mcp-header``."""
    return tuple(annotated_arguments(input_schema))


class ParamHeaderCache:
    """Each tool's ``x-mcp-header`` arguments, worked out once per catalog version."""

    def __init__(self) -> None:
        self._of: dict[str, ParamHeaders] = {}
        self._version = -1

    def of(self, catalog: Catalog, name: str) -> ParamHeaders:
        if self._version != catalog.version:
            self._of = {}
            self._version = catalog.version
        annotated = self._of.get(name)
        if annotated is None:
            annotated = self._of[name] = param_headers(catalog.tool_schema(name))
        return annotated


def check_param_headers(annotated: ParamHeaders, arguments: Any, headers: Mapping[str, str]) -> None:
    """Every argument marked ``x-mcp-header`` (see :func:`param_headers`) is mirrored, exactly, in its header.

    Raises: HeaderMismatch: one is missing, extra, malformed or different.
    """
    for path, name in annotated:
        header_name = f"{_HEADER_PREFIX}{name.lower()}"
        present = headers.get(header_name)
        value = argument_at(arguments, path)
        rendered = None if value is None else rendered_argument(value)
        if rendered is None:
            if present is not None:
                raise HeaderMismatch(f"the Mcp-Param-{name} header is sent for an argument that is absent")
            continue
        if present is None:
            raise HeaderMismatch(f"the Mcp-Param-{name} header is missing")
        decoded = _decoded(present)
        if decoded is None:
            raise HeaderMismatch(f"the Mcp-Param-{name} header carries a malformed base64 value")
        if not _same(value, rendered, decoded):
            raise HeaderMismatch(f"the Mcp-Param-{name} header does not match the argument {'.'.join(path)}")


def upstream_meta(params: Message) -> Message:
    """A stateless request's params as a session-era upstream gets them: no envelope keys, no retry fields."""
    if "inputResponses" in params or "requestState" in params:
        out = {k: v for k, v in params.items() if k not in ("inputResponses", "requestState")}
    else:
        out = dict(params)
    meta = out.get("_meta")
    if isinstance(meta, dict):
        rest = {k: v for k, v in meta.items() if k not in _ENVELOPE_KEYS}
        if rest:
            out["_meta"] = rest
        else:
            del out["_meta"]
    return out
