"""The door every request passes before anything else: who is asking, may they, and how fast.

One gate per config (a reload builds a new one): it authenticates the
request (:mod:`hub.identity`), finds the caller's tenant (:mod:`hub.tenants`),
counts the request against the tenant's and the principal's limits
(:mod:`hub.ratelimit`), and records every refusal in the audit trail.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from connectors.jsonrpc import Message
from hub.audit import AuditLog
from hub.context import Caller
from hub.errors import Forbidden, RateLimited, Unauthorized
from hub.identity import Authenticator
from hub.metrics import Metrics
from hub.ratelimit import Limits
from hub.schema import Config
from hub.shared_limits import SharedBuckets
from hub.tenants import Tenant, Tenants

__all__ = ["Gate"]


class Gate:
    """Authentication, tenancy and limits for one config."""

    def __init__(
        self,
        config: Config,
        audit: AuditLog | None,
        authenticator: Authenticator | None = None,
        *,
        metrics: Metrics | None = None,
        shared: SharedBuckets | None = None,
    ) -> None:
        self.authenticator = authenticator or Authenticator(config)
        self.metrics = metrics
        self.tenants = Tenants(config)
        self.limits = Limits({name: tenant.limits for name, tenant in config.tenants.items()}, shared=shared)
        self.audit = audit
        self.enabled = self.authenticator.enabled

    async def caller(self, headers: dict[str, str], method: str = "", params: Message | None = None) -> Caller:
        """Who sent the request.

        Raises:
            Unauthorized: no credential or a bad one (recorded in the audit trail).
            Forbidden: a credential that may not use the hub (recorded too).
        """
        try:
            return await self.authenticator.authenticate(headers)
        except (Unauthorized, Forbidden) as exc:
            if self.audit is not None:
                self.audit.refused(None, method, params or {}, exc.code, exc.message)
            raise

    def tenant(self, caller: Caller) -> Tenant:
        return self.tenants.get(caller.tenant)

    async def admit(
        self, caller: Caller, method: str, params: Message, *, continuing: bool = False
    ) -> Callable[[], None] | None:
        """Count one request; for a tool call or a ``tasks/result``, returns what to call when it ends (its slot).

        A ``continuing`` request goes on with a call that holds its slot already (a 2026-07-28 retry
        that brings the input a parked call asked for): it counts as a request, not as another call.
        A ``tasks/result`` waits for its task's end with an upstream request open, as a call does: it
        takes a slot too (but no tool call's rate token).

        Raises:
            RateLimited: a limit of the caller's tenant or principal (recorded in the audit trail).
        """
        tool_call = method == "tools/call" and not continuing
        holds = tool_call or method == "tasks/result"
        try:
            await self.limits.admit_shared(caller, tool_call)
            if holds and not tool_call:
                self.limits.check_in_flight(caller)
        except RateLimited as exc:
            if self.metrics is not None:
                self.metrics.refused(caller.tenant, "concurrency" if "maxConcurrentCalls" in exc.message else "rate")
            if self.audit is not None:
                self.audit.refused(caller, method, params, exc.code, exc.message)
            raise
        if not holds or not self.limits.caps_calls(caller.tenant):
            return None
        limits, tenant = self.limits, caller.tenant
        limits.call_started(tenant)
        return lambda: limits.call_ended(tenant)

    def refused(self, caller: Caller, method: str, params: dict[str, Any], code: int, detail: str) -> None:
        if self.audit is not None:
            self.audit.refused(caller, method, params, code, detail)
