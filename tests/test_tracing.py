"""OpenTelemetry traces of calls through the hub: a client span under the client's trace, and a child span
per upstream request, whose context travels to the upstream in ``_meta``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from connectors import tracing
from tests.modern_wire import headers_for, request
from tests.servers import run_hub, serve
from tests.upstreams import http_app
from tests.wire import WAIT, RawClient, rpc

pytestmark = pytest.mark.anyio

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
TRACEPARENT = f"00-{TRACE_ID:032x}-00f067aa0ba902b7-01"
EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    # The global provider can be set once per process: this module's exporter is it.
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
        trace.set_tracer_provider(provider)
    EXPORTER.clear()
    tracing.enable()
    try:
        yield EXPORTER
    finally:
        tracing.enable(False)


def ours(finished: tuple[ReadableSpan, ...]) -> list[ReadableSpan]:
    """The hub's spans (the SDK upstream, in this process, makes its own with the same provider)."""
    return [s for s in finished if s.instrumentation_scope is not None and s.instrumentation_scope.name == "manifold"]


def by_name(finished: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    [span] = [s for s in ours(finished) if s.name == name]
    return span


def check_family(finished: tuple[ReadableSpan, ...], client: str) -> None:
    call = by_name(finished, client)
    upstream = by_name(finished, "tools/call alpha")
    assert call.context is not None and upstream.context is not None and upstream.parent is not None
    assert call.context.trace_id == upstream.context.trace_id == TRACE_ID  # the client's own trace
    assert call.parent is not None and call.parent.span_id == 0x00F067AA0BA902B7  # under the client's span
    assert upstream.parent.span_id == call.context.span_id  # the upstream request is the call's child
    assert upstream.kind is trace.SpanKind.CLIENT and call.kind is trace.SpanKind.SERVER
    # The upstream (the SDK traces too) got the context in _meta: its span is in the same trace, under ours.
    theirs = [s for s in finished if s not in ours(finished) and s.parent is not None]
    assert any(s.parent.span_id == upstream.context.span_id for s in theirs if s.parent is not None)


async def test_a_traced_session_call_has_an_upstream_child_under_the_clients_trace(
    spans: InMemorySpanExporter,
) -> None:
    async with serve(http_app("alpha")) as alpha, run_hub({"alpha": {"url": f"{alpha}/mcp"}}) as (url, _):
        async with RawClient(url) as raw:
            raw.headers["traceparent"] = TRACEPARENT
            replies = await raw.stream("tools/call", {"name": "alpha__echo", "arguments": {"text": "traced"}})
        assert replies[-1]["result"]["content"][0]["text"] == "alpha: traced"
    check_family(spans.get_finished_spans(), "tools/call")


async def test_a_traced_stateless_call_takes_its_context_from_meta(spans: InMemorySpanExporter) -> None:
    async with serve(http_app("alpha")) as alpha, run_hub({"alpha": {"url": f"{alpha}/mcp"}}) as (url, _):
        message, headers = request(
            1, "tools/call", {"name": "alpha__echo", "arguments": {"text": "x"}}, meta={"traceparent": TRACEPARENT}
        )
        async with httpx.AsyncClient(timeout=WAIT, trust_env=False) as http:
            response = await http.post(url, json=message, headers=headers)
        assert response.status_code == 200
    check_family(spans.get_finished_spans(), "tools/call")


async def test_without_tracing_no_span_is_made(spans: InMemorySpanExporter) -> None:
    tracing.enable(False)
    async with (
        serve(http_app("alpha")) as alpha,
        run_hub({"alpha": {"url": f"{alpha}/mcp"}}) as (url, _),
        RawClient(url) as raw,
    ):
        await raw.stream("tools/call", {"name": "alpha__echo", "arguments": {"text": "untraced"}})
    assert ours(spans.get_finished_spans()) == []


def test_the_trace_context_of_headers_goes_into_meta_and_meta_wins() -> None:
    message: dict[str, Any] = rpc(1, "tools/call", {"name": "x", "_meta": {"progressToken": 1}})
    carried = tracing.with_trace_context(message, {"traceparent": TRACEPARENT, "tracestate": "a=1"})
    assert carried["params"]["_meta"] == {"progressToken": 1, "traceparent": TRACEPARENT, "tracestate": "a=1"}
    own = rpc(1, "tools/call", {"_meta": {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}})
    assert tracing.with_trace_context(own, {"traceparent": TRACEPARENT}) == own
    assert json.dumps(headers_for(message))  # the helpers stay usable
