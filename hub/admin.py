"""The operator's endpoints: ``/metrics``, ``/admin`` (the page), ``/admin/sessions`` and ``/admin/reload``.

Each needs an admin credential when auth is on (401 without a credential, 403 with one
that is not an admin's); without auth, the hub listens on loopback only, and they are open.
"""

from __future__ import annotations

import time
from importlib import resources
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from connectors import jsonrpc
from hub.errors import Forbidden, HubError, to_wire
from hub.metrics_export import CONTENT_TYPE, render
from hub.runtime import Hub

if TYPE_CHECKING:
    from hub.reload import Reloader

__all__ = ["install"]


def install(api: FastAPI, hub: Hub, reloader: Reloader) -> None:
    async def refusal(request: Request, what: str) -> Response | None:
        """None for an admin; otherwise the 401 or 403 to answer."""
        if not hub.gate.enabled:
            return None
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            caller = await hub.gate.caller(headers, what)
            if not caller.admin:
                refused = Forbidden(f"Forbidden: {what} needs an admin credential")
                hub.gate.refused(caller, what, {}, refused.code, refused.message)
                raise refused
        except HubError as exc:
            wire = to_wire(exc)
            body = jsonrpc.dumps(jsonrpc.error_response(None, wire.error))
            return Response(body, status_code=wire.status, headers=wire.headers, media_type="application/json")
        return None

    @api.get("/metrics")
    async def metrics(request: Request) -> Response:
        if hub.counting is None:
            return Response(b"metrics are off (hub.metrics.enabled)\n", status_code=404, media_type="text/plain")
        refused = await refusal(request, "GET /metrics")
        return refused or Response(render(hub), media_type=CONTENT_TYPE)

    @api.get("/admin/sessions")
    async def sessions(request: Request) -> Response:
        refused = await refusal(request, "GET /admin/sessions")
        return refused or Response(jsonrpc.dumps(session_report(hub)), media_type="application/json")

    @api.post("/admin/reload")
    async def reload(request: Request) -> Response:
        refused = await refusal(request, "POST /admin/reload")
        if refused is not None:
            return refused
        outcome = await reloader.reload("api")
        status = 200 if outcome.ok else 422
        return Response(jsonrpc.dumps(outcome.report()), status_code=status, media_type="application/json")

    @api.get("/admin")
    async def page() -> Response:
        # The page itself holds nothing: it asks the endpoints above with the credential it is given.
        html = resources.files("hub").joinpath("admin.html").read_bytes()
        return Response(html, media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)


_PAGE_HEADERS = {
    "content-security-policy": "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}


def session_report(hub: Hub) -> dict[str, Any]:
    """Open sessions (both eras) by tenant, with their age, idle time and calls in flight."""
    now = time.time()
    rows = [
        {
            "id": session.id[:8],
            "era": "session",
            "tenant": session.caller.tenant,
            "principal": session.caller.principal,
            "protocol": session.protocol_version,
            "client": session.client_info.get("name"),
            "ageSeconds": round(now - session.created, 1),
            "callsInFlight": session.calls_in_flight,
        }
        for session in hub.sessions
    ]
    stateless = [
        {"era": "stateless", "tenant": tenant, "principal": principal, "callsInFlight": calls}
        for tenant, principal, calls in hub.modern.upstreams.callers()
    ]
    return {"sessions": rows, "stateless": stateless}
