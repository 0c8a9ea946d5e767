"""What a log line is about: the request, session, tenant and upstream being served, as context variables.

Set where each is known (the hub sets request, session and tenant as it serves a request; the
connectors set the upstream around a request to it) and read by the JSON log format.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Final

__all__ = ["FIELDS", "REQUEST", "SESSION", "TENANT", "UPSTREAM"]

REQUEST: Final[ContextVar[str | None]] = ContextVar("manifold_request", default=None)
SESSION: Final[ContextVar[str | None]] = ContextVar("manifold_session", default=None)
TENANT: Final[ContextVar[str | None]] = ContextVar("manifold_tenant", default=None)
UPSTREAM: Final[ContextVar[str | None]] = ContextVar("manifold_upstream", default=None)
FIELDS: Final = (("request", REQUEST), ("session", SESSION), ("tenant", TENANT), ("upstream", UPSTREAM))
