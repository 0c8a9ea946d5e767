"""The audit trail: every call and every refusal, written behind the request, never a secret.

Each ``tools/call``, ``prompts/get`` and ``resources/read`` is recorded with
its time, tenant, principal, session, public name, upstream, duration,
outcome and bytes in and out; so is every authentication failure and every
refused request. Arguments are recorded only when ``audit.arguments`` says
so (``hash``: a SHA-256 of their JSON; ``full``: the JSON). Records are queued
without waiting and written in batches; old ones are pruned by age and count.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from types import TracebackType
from typing import Any, Final, Self

from connectors import jsonrpc
from hub.access import AuditConfig
from hub.context import Caller
from hub.errors import HubError
from hub.store import AuditQuery, AuditRecord, Store
from hub.views import CatalogView
from hub.write_behind import WriteBehind

__all__ = ["AUDITED", "AuditLog"]

AUDITED: Final = frozenset({"tools/call", "prompts/get", "resources/read"})


class AuditLog:
    """Write-behind audit records; an async context manager owning its flusher task."""

    def __init__(self, store: Store, config: AuditConfig) -> None:
        self.config = config
        self._store = store
        self._queue: WriteBehind[AuditRecord] = WriteBehind("audit log", store.append_audit, self._prune)
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Self:
        await self._stack.enter_async_context(self._queue)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    @property
    def backlog(self) -> int:
        return len(self._queue.pending)

    def call(
        self,
        caller: Caller,
        session: str,
        view: CatalogView,
        method: str,
        params: dict[str, Any],
        started: float,
        outcome: str,
        code: int | None = None,
        bytes_in: int = 0,
        bytes_out: int = 0,
    ) -> None:
        """Record one served call (``started`` is its ``time.perf_counter()``; ``view`` names its upstream)."""
        self._queue.add(
            AuditRecord(
                time=time.time(),
                tenant=caller.tenant,
                principal=caller.principal,
                session=session,
                method=method,
                name=_name(method, params),
                upstream=_upstream(view, method, params),
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
                outcome=outcome,
                code=code,
                bytes_in=bytes_in,
                bytes_out=bytes_out,
                arguments=self._arguments(params),
                detail="",
            )
        )

    def refused(self, caller: Caller | None, method: str, params: dict[str, Any], code: int, detail: str) -> None:
        """Record a request the hub refused before serving it (authentication, admin rights, limits).

        A name outside the caller's view is served as one that does not exist, and recorded as a
        call with that error.
        """
        self._queue.add(
            AuditRecord(
                time=time.time(),
                tenant="" if caller is None else caller.tenant,
                principal="" if caller is None else caller.principal,
                session="",
                method=method,
                name=_name(method, params),
                upstream="",
                duration_ms=0.0,
                outcome="refused",
                code=code,
                bytes_in=0,
                bytes_out=0,
                arguments=None,
                detail=detail,
            )
        )

    def _arguments(self, params: dict[str, Any]) -> str | None:
        mode = self.config.arguments
        if mode == "none":
            return None
        arguments = params.get("arguments")
        encoded = jsonrpc.dumps(arguments if arguments is not None else {})
        return hashlib.sha256(encoded).hexdigest() if mode == "hash" else encoded.decode()

    async def query(self, query: AuditQuery) -> list[AuditRecord]:
        await self._queue.flush()
        return await self._store.audit(query)

    async def _prune(self) -> None:
        await self._store.prune_audit(time.time() - self.config.max_age, self.config.max_records)


def _name(method: str, params: dict[str, Any]) -> str:
    value = params.get("uri") if method == "resources/read" else params.get("name")
    return value[:512] if isinstance(value, str) else ""


def _upstream(view: CatalogView, method: str, params: dict[str, Any]) -> str:
    try:
        if method == "resources/read":
            return view.resource(str(params.get("uri", ""))).upstream
        if method == "prompts/get":
            return view.prompt(str(params.get("name", ""))).upstream
        return view.tool(str(params.get("name", ""))).upstream
    except HubError:
        return ""  # a name outside the view: no upstream was asked
