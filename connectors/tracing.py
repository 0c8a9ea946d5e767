"""OpenTelemetry traces, off unless set up: one span per client request, a child per upstream request.

The hub's start (:func:`configure`) turns tracing on when ``OTEL_TRACES_EXPORTER`` names an
exporter (``otlp``, its endpoint and headers from the standard ``OTEL_EXPORTER_OTLP_*``
variables, or ``console``), which needs the ``tracing`` extra installed. Off, the request path
pays one flag test. The W3C trace context comes from the client (its ``traceparent`` header,
which the hub copies into the request's ``_meta``, or ``_meta`` itself in the 2026-07-28 era)
and goes on upstream in each request's ``_meta``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any, Final

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind

__all__ = ["carrier_of", "client_span", "configure", "enable", "enabled", "upstream_span", "with_trace_context"]

logger = logging.getLogger(__name__)

_TRACER: Final = "manifold"
_state = {"on": False}


def enabled() -> bool:
    return _state["on"]


def enable(on: bool = True) -> None:
    """Turn spans on with whatever tracer provider is installed (a test's, or :func:`configure`'s)."""
    _state["on"] = on


def configure() -> bool:
    """Install an SDK tracer provider for ``OTEL_TRACES_EXPORTER``; False when it names none or cannot."""
    exporter_name = os.environ.get("OTEL_TRACES_EXPORTER", "none").strip().lower()
    if exporter_name in ("", "none"):
        return False
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

        exporter: SpanExporter
        if exporter_name == "console":
            exporter = ConsoleSpanExporter()
        elif exporter_name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
        else:
            logger.error("tracing: OTEL_TRACES_EXPORTER=%s is not one of otlp, console, none; off", exporter_name)
            return False
    except ImportError:
        logger.error("tracing: OTEL_TRACES_EXPORTER is set but the tracing extra is not installed; off")
        return False
    provider = TracerProvider(
        resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "manifold")})
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    enable()
    logger.info("tracing: spans go to the %s exporter", exporter_name)
    return True


def carrier_of(params: Any) -> dict[str, str]:
    """The trace context a request carries in ``params._meta`` (``traceparent``, ``tracestate``)."""
    meta = params.get("_meta") if isinstance(params, dict) else None
    if not isinstance(meta, dict):
        return {}
    return {key: meta[key] for key in ("traceparent", "tracestate") if isinstance(meta.get(key), str)}


def client_span(method: str, params: Any, **attributes: str) -> contextlib.AbstractContextManager[Any]:
    """The span of one client request, a child of the client's trace context when it sent one
    (nothing at all when tracing is off)."""
    if not _state["on"]:
        return contextlib.nullcontext()
    context = propagate.extract(carrier_of(params))
    tracer = trace.get_tracer(_TRACER)
    return tracer.start_as_current_span(method, context=context, kind=SpanKind.SERVER, attributes=attributes)


def with_trace_context(message: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
    """``message`` with the trace context of its HTTP headers in ``params._meta`` (its own kept)."""
    params = message.get("params")
    params = params if isinstance(params, dict) else {}
    meta = params.get("_meta")
    meta = meta if isinstance(meta, dict) else {}
    carried = {key: headers[key] for key in ("traceparent", "tracestate") if key in headers and key not in meta}
    if not carried:
        return message
    return {**message, "params": {**params, "_meta": {**meta, **carried}}}


@contextlib.contextmanager
def upstream_span(upstream: str, method: str, params: Any) -> Iterator[Any]:
    """The span of one request to an upstream; yields ``params`` carrying it in ``_meta``."""
    tracer = trace.get_tracer(_TRACER)
    name = f"{method} {upstream}"
    with tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes={"mcp.upstream": upstream}):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        if not isinstance(params, dict):
            yield params
            return
        meta = params.get("_meta")
        yield {**params, "_meta": {**(meta if isinstance(meta, dict) else {}), **carrier}}
