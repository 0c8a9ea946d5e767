"""Speaking the 2026-07-28 era to an upstream: the envelope, its headers, and input it asks for.

A 2026-07-28 upstream has no session: every request carries the protocol
version, the client's capabilities and the client's info in ``params._meta``,
and repeats its method (and name) in headers. Instead of asking the client
anything mid-call, it answers ``input_required`` with the questions and a
``requestState``; :func:`resolve_input` asks them through the call's hooks
(the hub relays them to its own client, in whatever era that client speaks)
and retries the request with the answers, round after round.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Final

from connectors.calls import CallHooks
from connectors.errors import UpstreamError, UpstreamProtocolError, UpstreamRpcError
from connectors.jsonrpc import Message
from connectors.spec import CLIENT_INFO, MODERN_VERSIONS, TASKS_EXTENSION

__all__ = [
    "INPUT_KEY",
    "LOG_LEVEL_KEY",
    "MAX_ROUNDS",
    "MODERN",
    "TASK_METHODS",
    "annotated_arguments",
    "argument_at",
    "ask_all",
    "envelope",
    "modern_only",
    "param_headers_for",
    "rendered_argument",
    "resolve_input",
    "routing_headers",
    "without_log_level",
]

MODERN: Final = MODERN_VERSIONS[-1]
MAX_ROUNDS: Final = 10
LOG_LEVEL_KEY: Final = "io.modelcontextprotocol/logLevel"
INPUT_KEY: Final = "inputKey"
"""Where a question relayed from an upstream's ``inputRequests`` carries its key (never sent on)."""
TASK_METHODS: Final = frozenset({"tasks/get", "tasks/update", "tasks/cancel"})
"""The requests of the 2026-07-28 tasks extension (``tasks/result`` and ``tasks/list`` are gone)."""
_NAME_OF: Final[Mapping[str, str]] = {
    "tools/call": "name",
    "prompts/get": "name",
    "resources/read": "uri",
    **dict.fromkeys(TASK_METHODS, "taskId"),
}
_HTTP_4XX: Final = re.compile(r"\bHTTP 4\d\d\b")  # how the transport words a refusal without a JSON-RPC body
_INPUT_METHODS: Final = frozenset({"sampling/createMessage", "elicitation/create", "roots/list"})


def envelope(params: Message | None, capabilities: Message, log_level: str | None = None, method: str = "") -> Message:
    """``params`` with the 2026-07-28 envelope in ``_meta`` (the client's capabilities are the hub's
    client's, so capability-gated behaviour follows the one who asks). A log level the request
    names already wins over ``log_level`` (the client's session-wide one).

    A call the hub wants run as a task (the session era's ``params.task``) declares the tasks
    extension for this request instead (SEP-2575's per-request capabilities), as do the extension's
    own requests: the upstream then decides whether it makes a task."""
    out = dict(params or {})
    meta = out.get("_meta")
    meta = meta if isinstance(meta, dict) else {}
    if out.pop("task", None) is not None or method in TASK_METHODS:
        extensions = capabilities.get("extensions")
        extensions = {**(extensions if isinstance(extensions, dict) else {}), TASKS_EXTENSION: {}}
        capabilities = {**capabilities, "extensions": extensions}
    out["_meta"] = {
        **meta,
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": capabilities,
        "io.modelcontextprotocol/clientInfo": CLIENT_INFO,
    }
    if log_level is not None and LOG_LEVEL_KEY not in meta:
        out["_meta"][LOG_LEVEL_KEY] = log_level
    return out


def without_log_level(params: Message | None) -> Message | None:
    """``params`` for a session-era upstream: no per-request log level (that era sets it per session)
    and no answers given ahead (``inputResponses``: that era asks mid-call)."""
    if params is not None and "inputResponses" in params:
        params = {k: v for k, v in params.items() if k != "inputResponses"}
    meta = params.get("_meta") if params is not None else None
    if not isinstance(meta, dict) or LOG_LEVEL_KEY not in meta:
        return params
    rest = {k: v for k, v in meta.items() if k != LOG_LEVEL_KEY}
    out = {k: v for k, v in (params or {}).items() if k != "_meta"}
    if rest:
        out["_meta"] = rest
    return out


def routing_headers(message: Message) -> dict[str, str]:
    """The headers a 2026-07-28 request repeats its routing in."""
    method = message.get("method")
    headers = {"mcp-protocol-version": MODERN}
    if isinstance(method, str):
        headers["mcp-method"] = method
        key = _NAME_OF.get(method)
        params = message.get("params")
        name = params.get(key) if key is not None and isinstance(params, dict) else None
        if isinstance(name, str):
            headers["mcp-name"] = name if _header_safe(name) else _base64(name)
    return headers


def _base64(value: str) -> str:
    return f"=?base64?{base64.b64encode(value.encode()).decode('ascii')}?="


def rendered_argument(value: Any) -> str | None:
    """How an argument is written in its ``Mcp-Param-*`` header; None for what no header can carry."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return json.dumps(value)
    return None


def annotated_arguments(schema: Any, path: tuple[str, ...] = ()) -> Iterable[tuple[tuple[str, ...], str]]:
    """(argument path, header name) for every property of an input schema marked ``x-mcp-header``."""
    if not isinstance(schema, dict):
        return
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return
    for key, prop in properties.items():
        if not isinstance(prop, dict):
            continue
        header = prop.get("x-mcp-header")
        if isinstance(header, str) and header:
            yield (*path, key), header
        yield from annotated_arguments(prop, (*path, key))


def argument_at(arguments: Any, path: tuple[str, ...]) -> Any:
    node = arguments
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def param_headers_for(input_schema: Any, arguments: Any) -> dict[str, str]:
    """The ``Mcp-Param-*`` headers of a ``tools/call``: each argument its schema marks ``x-mcp-header``."""
    headers: dict[str, str] = {}
    for path, name in annotated_arguments(input_schema):
        value = argument_at(arguments, path)
        text = None if value is None else rendered_argument(value)
        if text is not None:
            headers[f"mcp-param-{name.lower()}"] = text if _header_safe(text) else _base64(text)
    return headers


def _header_safe(value: str) -> bool:
    return value.isascii() and value.isprintable() and value == value.strip() and not value.startswith("=?")


def modern_only(exc: UpstreamError) -> bool:
    """Whether a refused ``initialize`` says the upstream speaks only the stateless era."""
    if isinstance(exc, UpstreamRpcError) and exc.code == -32022:
        data = exc.data if isinstance(exc.data, dict) else {}
        supported = data.get("supported")
        return isinstance(supported, list) and any(v in MODERN_VERSIONS for v in supported)
    return isinstance(exc, UpstreamProtocolError) and _HTTP_4XX.search(exc.message) is not None


async def resolve_input(
    upstream: str,
    params: Message | None,
    result: Message,
    hooks: CallHooks | None,
    retry: Callable[[Message], Awaitable[Message]],
) -> Message:
    """Answer an upstream's ``input_required`` results until it gives a complete one.

    Raises:
        UpstreamProtocolError: more than ``MAX_ROUNDS`` rounds, or a question that is not one.
        UpstreamRpcError: the upstream asked and nobody can answer (no hook).
        ManifoldError: what asking the client raised (its refusal, its timeout).
    """
    rounds = 0
    while result.get("resultType") == "input_required":
        rounds += 1
        if rounds > MAX_ROUNDS:
            raise UpstreamProtocolError(upstream, f"asked for input more than {MAX_ROUNDS} times in one call")
        answers = await ask_all(upstream, result.get("inputRequests") or {}, hooks)
        again: Message = {**(params or {}), "inputResponses": answers}
        state = result.get("requestState")
        if isinstance(state, str):
            again["requestState"] = state
        result = await retry(again)
    return result


async def ask_all(upstream: str, asked: Any, hooks: CallHooks | None) -> Message:
    """The answers to an upstream's ``inputRequests``, by its keys, asked through ``hooks`` at once.

    Raises:
        UpstreamProtocolError: ``asked`` is not an object of sampling, elicitation or roots requests.
        UpstreamRpcError: the upstream asked and nobody can answer (no hook).
        ManifoldError: what asking the client raised (its refusal, its timeout).
    """
    if not isinstance(asked, dict):
        raise UpstreamProtocolError(upstream, "inputRequests is not an object")
    if not asked:
        return {}
    if hooks is None or hooks.request is None:
        error = {"code": -32601, "message": "the upstream asked for input no client can give here"}
        raise UpstreamRpcError(upstream, error)
    ask = hooks.request
    for key, question in asked.items():
        if not isinstance(question, dict) or question.get("method") not in _INPUT_METHODS:
            raise UpstreamProtocolError(
                upstream, f"inputRequests.{key} is not a sampling, elicitation or roots request"
            )

    # The key goes along: a client of the same era may be asked under the upstream's own keys. A task
    # group: a question that fails takes the others with it.
    async def one(key: str, question: Message) -> Message:
        return await ask({"method": question["method"], "params": question.get("params") or {}, INPUT_KEY: key})

    try:
        async with asyncio.TaskGroup() as group:
            replies = [group.create_task(one(key, question)) for key, question in asked.items()]
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return {key: reply.result() for key, reply in zip(asked, replies, strict=True)}
