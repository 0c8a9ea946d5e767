"""The 2026-07-28 era on ``/mcp``: one self-contained POST per request, no session.

A POST whose ``MCP-Protocol-Version`` names a stateless version comes here
(after the common checks of :mod:`hub.transport`). Its envelope is checked
(:mod:`hub.envelope`), it is admitted by the caller's limits, and it is served
with a :class:`~hub.context.RequestContext` of its own: the caller's upstream
sessions (:mod:`hub.stateless`), its view of the catalog, its capabilities
and log level. The reply is one JSON body when nothing comes before it, an SSE
stream otherwise (progress, logs the request asked for). Closing that stream
cancels the call upstream. A call that needs the client's input answers
``input_required`` and waits for the retry (:mod:`hub.stateless_calls`).
``subscriptions/listen`` keeps its stream open for the notifications it chose.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from connectors import jsonrpc, log_context, tracing
from connectors.jsonrpc import Kind, Message
from connectors.spec import MODERN_VERSIONS
from hub import modern_tasks
from hub.asgi import Receive, Send, respond
from hub.audit import AUDITED, AuditLog
from hub.catalog import ListKind
from hub.context import Caller
from hub.dispatcher import dispatch
from hub.envelope import (
    NAME_BEARING,
    SERVER_INFO_KEY,
    Envelope,
    ParamHeaderCache,
    check_param_headers,
    open_envelope,
    upstream_meta,
)
from hub.errors import HubError, InvalidParams, InvalidRequest, MethodNotFound, ShuttingDown
from hub.gate import Gate
from hub.listen import Listeners
from hub.listen_stream import serve_listen
from hub.metrics import Metrics
from hub.modern_errors import reply_error, stateless_error
from hub.session_services import CallCount
from hub.stateless import PrincipalUpstreams, StatelessContexts, level_rank
from hub.stateless_call import StatelessCall
from hub.stateless_calls import CallSlot, StatelessCalls
from hub.stateless_reply import Reply
from hub.tenants import Tenant
from hub.views import CatalogView, Views

__all__ = ["ModernEndpoint", "ModernServices"]

logger = logging.getLogger(__name__)

_LISTS: Final[dict[str, ListKind]] = {
    "tools/list": "tools",
    "prompts/list": "prompts",
    "resources/list": "resources",
    "resources/templates/list": "resourceTemplates",
}
_FORWARDED: Final = frozenset({"completion/complete"})
METHODS: Final = frozenset(
    {"server/discover", "subscriptions/listen", *_LISTS, *NAME_BEARING, *_FORWARDED, *modern_tasks.METHODS}
)
"""What a stateless client may call; ``ping``, ``logging/setLevel`` and ``resources/(un)subscribe`` left the era."""


@dataclass
class ModernServices:
    """What the stateless endpoint shares with the rest of the hub."""

    views: Views
    upstreams: PrincipalUpstreams
    calls: StatelessCalls
    listeners: Listeners
    contexts: StatelessContexts
    in_flight: CallCount
    list_ttl_ms: Callable[[CatalogView, ListKind], int]
    """How long a list of a view may be cached: 0 unless every upstream in it announces its changes."""
    public: Callable[[CatalogView], bool]
    """Whether what a view shows is the same for anyone (no auth, no per-tenant filtering)."""
    spreads: Callable[[str], bool]
    """Whether a principal's concurrent calls to an upstream may go over several of its upstream sessions."""
    audit: AuditLog | None = None
    metrics: Metrics | None = None


class ModernEndpoint:
    """Serves the POSTs of stateless clients."""

    def __init__(self, services: ModernServices, gate: Callable[[], Gate], accepting: Callable[[], bool]) -> None:
        self.services = services
        self.gate = gate
        self.accepting = accepting
        self._param_headers = ParamHeaderCache()

    async def post(
        self,
        headers: dict[str, str],
        caller: Caller,
        kind: Kind,
        message: Message,
        size: int,
        receive: Receive,
        send: Send,
    ) -> None:
        request_id = message.get("id") if kind is Kind.REQUEST else None
        try:
            if kind is Kind.RESPONSE:
                raise InvalidRequest("Invalid Request: a 2026-07-28 client sends no responses")
            envelope = open_envelope(message, headers)
            if kind is Kind.NOTIFICATION:
                await respond(send, 202, b"")  # nothing in this era acts on a client's notification
                return
            method = message["method"]
            if method not in METHODS:
                raise MethodNotFound(f"method not found: {method}")
            if not self.accepting():
                raise ShuttingDown()
            gate = self.gate()
            params = message.get("params") or {}
            release = await gate.admit(
                caller, method, params, continuing=isinstance(params, dict) and "requestState" in params
            )
        except HubError as exc:
            await reply_error(send, request_id, exc)
            return
        # A listen stream is no call in flight: a drain must not wait for it (it ends them itself).
        counter = None if method == "subscriptions/listen" else self.services.in_flight
        if counter is not None:
            counter.up()
        slot = CallSlot(release)
        # This task serves the connection's next request too: the log ids are taken back when this one ends.
        noted = (log_context.REQUEST.set(str(request_id)), log_context.TENANT.set(caller.tenant))
        try:
            if tracing.enabled():
                traced = message if "traceparent" not in headers else tracing.with_trace_context(message, headers)
                with tracing.client_span(method, traced.get("params"), **{"mcp.tenant": caller.tenant}):
                    await self._serve(headers, caller, gate, envelope, message, size, receive, send, slot)
            else:
                await self._serve(headers, caller, gate, envelope, message, size, receive, send, slot)
        finally:
            log_context.REQUEST.reset(noted[0])
            log_context.TENANT.reset(noted[1])
            if counter is not None:
                counter.down()
            slot.release()

    async def _serve(
        self,
        headers: dict[str, str],
        caller: Caller,
        gate: Gate,
        envelope: Envelope,
        message: Message,
        size: int,
        receive: Receive,
        send: Send,
        slot: CallSlot,
    ) -> None:
        method = message["method"]
        request_id = message["id"]
        params: Message = message.get("params") or {}
        tenant = gate.tenant(caller)
        view = self.services.views.view(tenant.rule)
        started = time.perf_counter()
        try:
            if method in NAME_BEARING:  # (the calls come first: they are most of the traffic)
                sent = await self._interactive(headers, caller, tenant, envelope, view, message, receive, send, slot)
                self._audit(caller, view, method, params, started, sent, size)
                return
            if method == "server/discover":
                result = self._discover(view, gate)
            elif method in _LISTS:
                result = self._list(view, _LISTS[method], params)
            elif method == "subscriptions/listen":
                await self._listen(caller, tenant, envelope, view, request_id, params, receive, send)
                return
            elif method in modern_tasks.METHODS:
                task_id = params.get("taskId")
                with self.services.upstreams.use_task(
                    caller, tenant, envelope.capabilities, task_id if isinstance(task_id, str) else ""
                ) as principal:
                    result = self._complete(
                        await modern_tasks.serve(principal.bridges, envelope.capabilities, method, params)
                    )
            else:
                with self.services.upstreams.use(caller, tenant, envelope.capabilities) as principal:
                    ctx = self.services.contexts.context(
                        caller, envelope.version, envelope.capabilities, view, principal, None, envelope.log_level
                    )
                    result = self._complete(await dispatch(ctx, method, upstream_meta(params)))
        except Exception as exc:
            await reply_error(send, request_id, exc)
            # Refused before it reached an upstream (or it failed there): recorded all the same.
            error, _, _ = stateless_error(exc)
            code = error.get("code")
            self._audit(
                caller, view, method, params, started, ("error", code if isinstance(code, int) else None, 0), size
            )
            return
        data = jsonrpc.dumps(jsonrpc.response(request_id, result))
        await respond(send, 200, data, _JSON)
        self._audit(caller, view, method, params, started, ("ok", None, len(data)), size)

    # -- results -----------------------------------------------------------------------------------

    def _complete(self, result: Message, cache: tuple[int, bool] | None = None) -> Message:
        out = {**result, "resultType": result.get("resultType", "complete")}
        meta = out.get("_meta")
        out["_meta"] = {**(meta if isinstance(meta, dict) else {}), SERVER_INFO_KEY: self.services.contexts.server.info}
        if cache is not None:
            out["ttlMs"], public = cache
            out["cacheScope"] = "public" if public else "private"
        return out

    def _read_cache(self, view: CatalogView, result: Message) -> tuple[int, bool]:
        """The caching fields of a ``resources/read`` result: the upstream's own, never more public than the
        view (a session-era upstream gives none: not cacheable, private)."""
        ttl = result.get("ttlMs")
        ttl = ttl if isinstance(ttl, int) and not isinstance(ttl, bool) and ttl >= 0 else 0
        return ttl, result.get("cacheScope") == "public" and self.services.public(view)

    def _discover(self, view: CatalogView, gate: Gate) -> Message:
        server = self.services.contexts.server
        capabilities = modern_tasks.discovered(server.capabilities())
        result: Message = {"supportedVersions": list(MODERN_VERSIONS), "capabilities": capabilities}
        if server.instructions:
            result["instructions"] = server.instructions
        ttl = min(self.services.list_ttl_ms(view, kind) for kind in ("tools", "prompts", "resources"))
        return self._complete(result, (ttl, self.services.public(view)))

    def _list(self, view: CatalogView, kind: ListKind, params: Message) -> Message:
        page = view.page(kind, params.get("cursor"))
        return self._complete(page, (self.services.list_ttl_ms(view, kind), self.services.public(view)))

    def _audit(
        self,
        caller: Caller,
        view: CatalogView,
        method: str,
        params: Message,
        started: float,
        sent: tuple[str, int | None, int],
        size: int,
    ) -> None:
        outcome, code, out = sent
        metrics = self.services.metrics
        if metrics is not None:
            tool = params.get("name") if method == "tools/call" else None
            metrics.request("stateless", method, caller.tenant, outcome, time.perf_counter() - started, str(tool or ""))
        audit = self.services.audit
        if audit is not None and method in AUDITED:
            audit.call(caller, "", view, method, params, started, outcome, code, size, out)

    # -- calls that may need the client's input ----------------------------------------------------

    async def _interactive(
        self,
        headers: dict[str, str],
        caller: Caller,
        tenant: Tenant,
        envelope: Envelope,
        view: CatalogView,
        message: Message,
        receive: Receive,
        send: Send,
        slot: CallSlot,
    ) -> tuple[str, int | None, int]:
        """Serve tools/call, prompts/get or resources/read; returns (outcome, code, bytes sent) for the audit."""
        method = message["method"]
        request_id = message["id"]
        params: Message = message.get("params") or {}
        name = params.get(NAME_BEARING[method])
        if not isinstance(name, str) or not name:
            raise InvalidParams(f"params.{NAME_BEARING[method]} must be a non-empty string")
        calls = self.services.calls
        if "requestState" in params:
            call = calls.resume(params["requestState"], caller, method, name, params.get("inputResponses"))
        else:
            upstream: str | None = None
            if method == "tools/call":
                upstream = view.tool(name).upstream  # an unknown tool is refused before its headers are looked at
                annotated = self._param_headers.of(view.catalog, name)
                if annotated:
                    check_param_headers(annotated, params.get("arguments"), headers)
            forwarded = upstream_meta(params)
            forwarded.pop("task", None)  # (the session era's way to ask for a task: this era's servers decide)
            if isinstance(params.get("inputResponses"), dict):
                # Answers given ahead, with no round of ours: the upstream's own keys, for a 2026-07-28
                # upstream to use (a session-era one is sent none).
                forwarded["inputResponses"] = params["inputResponses"]
            support = view.catalog.task_support(name) if method == "tools/call" else "forbidden"
            task = modern_tasks.task_request(support, envelope.capabilities)
            if task is not None:
                forwarded["task"] = task  # the upstream runs it as a task: the hub bridges it to this era
            # Progress is always asked for upstream: a later round's request may want it even if this one does not.
            meta = forwarded.get("_meta")
            forwarded["_meta"] = {"progressToken": "", **(meta if isinstance(meta, dict) else {})}

            # A task lives in the upstream session that made it: those calls stay on the caller's first lane.
            spread = task is None and self._spreads(view, method, name, upstream)
            run = functools.partial(self._run, caller, tenant, envelope, view, method, forwarded, task, spread)
            call = calls.start(caller, method, name, envelope.capabilities, run)
            assert call.task is not None
            slot.hand_to(call.task)  # the tenant's call slot is the call's, parked or not, until it ends
        meta = params.get("_meta")
        reply = Reply(calls, call, request_id, send, self._complete, self._finish, view)
        call.attach(
            meta.get("progressToken") if isinstance(meta, dict) else None, level_rank(envelope.log_level), reply
        )
        return await reply.wait(receive)

    async def _run(
        self,
        caller: Caller,
        tenant: Tenant,
        envelope: Envelope,
        view: CatalogView,
        method: str,
        forwarded: Message,
        task: Message | None,
        spread: bool,
        call: StatelessCall,
    ) -> Message:
        # The call holds its caller's upstream sessions for as long as it lives, parked or not.
        with self.services.upstreams.use(caller, tenant, envelope.capabilities, spread=spread) as principal:
            ctx = self.services.contexts.context(
                caller, envelope.version, envelope.capabilities, view, principal, call, envelope.log_level
            )
            result = await dispatch(ctx, method, forwarded)
            if task is None:
                return result
            return modern_tasks.settle_call(principal.bridges, result, envelope.capabilities)

    def _spreads(self, view: CatalogView, method: str, name: str, upstream: str | None) -> bool:
        if upstream is None:
            try:
                upstream = (view.prompt(name) if method == "prompts/get" else view.resource(name)).upstream
            except HubError:
                return False  # (unknown here: refused by the dispatch, as it always is)
        return self.services.spreads(upstream)

    def _finish(self, call: StatelessCall, view: CatalogView, result: Message) -> Message:
        return self._complete(result, self._read_cache(view, result) if call.method == "resources/read" else None)

    # -- subscriptions/listen ----------------------------------------------------------------------

    async def _listen(
        self,
        caller: Caller,
        tenant: Tenant,
        envelope: Envelope,
        view: CatalogView,
        request_id: Any,
        params: Message,
        receive: Receive,
        send: Send,
    ) -> None:
        with self.services.upstreams.use(caller, tenant, envelope.capabilities) as principal:
            await serve_listen(
                self.services.listeners, principal, caller, view, request_id, params, self._complete, receive, send
            )


_JSON: Final = [(b"content-type", b"application/json")]
