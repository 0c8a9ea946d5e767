"""``GET /metrics``: Prometheus text whose counters and histograms move as calls are made, for admins only."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from prometheus_client.parser import text_string_to_metric_families

from connectors.histogram import BUCKETS, Histogram
from tests.servers import run_config, serve
from tests.upstreams import Probe, http_app
from tests.wire import WAIT

pytestmark = pytest.mark.anyio

ADMIN, USER = "key-admin-0123456789abcdef", "key-user-0123456789abcdef"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value, for every sample of a scrape."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(scraped: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return scraped.get((name, tuple(sorted(labels.items()))), 0.0)


def calls(scraped: dict[tuple[str, tuple[tuple[str, str], ...]], float], outcome: str) -> float:
    labels = {"era": "session", "method": "tools/call", "tenant": "acme", "outcome": outcome}
    return value(scraped, "manifold_requests_total", **labels)


async def scrape(http: httpx.AsyncClient, base: str, key: str | None = None) -> httpx.Response:
    return await http.get(f"{base}/metrics", headers={"authorization": f"Bearer {key}"} if key else {})


def document(upstream: str, **hub: Any) -> dict[str, Any]:
    keys = [
        {"name": "ops", "sha256": hashlib.sha256(ADMIN.encode()).hexdigest(), "tenant": "acme", "admin": True},
        {"name": "ann", "sha256": hashlib.sha256(USER.encode()).hexdigest(), "tenant": "acme"},
    ]
    return {
        "hub": hub,
        "auth": {"apiKeys": keys},
        "tenants": {"acme": {}},
        "mcpServers": {"alpha": {"url": f"{upstream}/mcp"}},
    }


async def test_counters_and_histograms_move_as_calls_are_made(tmp_path: Any) -> None:
    probe = Probe()
    async with (
        serve(http_app("alpha", probe)) as upstream,
        run_config(document(upstream)) as (url, _),
        httpx.AsyncClient(timeout=WAIT, trust_env=False) as http,
    ):
        base = url.removesuffix("/mcp")
        before = samples((await scrape(http, base, ADMIN)).text)
        assert value(before, "manifold_upstream_up", upstream="alpha") == 1
        assert (
            value(before, "manifold_requests_total", era="session", method="tools/call", tenant="acme", outcome="ok")
            == 0
        )

        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {USER}"}, timeout=WAIT) as h2,
            Client(streamable_http_client(url, http_client=h2), mode="legacy") as client,
        ):
            for _ in range(3):
                await client.call_tool("alpha__echo", {"text": "hi"})
            await client.call_tool("alpha__fail", {"reason": "no"})
            # A call in flight shows as such.
            slow = asyncio.create_task(client.call_tool("alpha__slow", {"seconds": 30}))
            await asyncio.wait_for(probe.slow_started.wait(), WAIT)
            during = samples((await scrape(http, base, ADMIN)).text)
            assert value(during, "manifold_upstream_in_flight", upstream="alpha") == 1
            assert value(during, "manifold_sessions", era="session", tenant="acme") == 1
            slow.cancel()
            with pytest.raises(asyncio.CancelledError):
                await slow
        after = samples((await scrape(http, base, ADMIN)).text)
    ok = value(after, "manifold_requests_total", era="session", method="tools/call", tenant="acme", outcome="ok")
    tool_error = value(
        after, "manifold_requests_total", era="session", method="tools/call", tenant="acme", outcome="isError"
    )
    assert (ok, tool_error) == (3, 1)
    whole = value(after, "manifold_request_duration_seconds_count", method="tools/call")
    upstream_part = value(after, "manifold_upstream_request_duration_seconds_count", upstream="alpha")
    assert whole >= 4 and upstream_part >= 4
    # The hub's own part is the difference of the sums: both are there, the whole the larger.
    assert value(after, "manifold_request_duration_seconds_sum", method="tools/call") > 0
    assert value(after, "manifold_upstream_request_duration_seconds_sum", upstream="alpha") > 0
    assert value(after, "manifold_upstream_breaker", upstream="alpha", state="closed") == 1
    assert ("manifold_tool_calls_total", (("outcome", "ok"), ("tool", "alpha__echo"))) not in after  # off by default
    # The process itself: its memory and the collector's passes by generation.
    assert value(after, "process_resident_memory_bytes") > 0
    assert ("python_gc_collections_total", (("generation", "0"),)) in after


async def test_metrics_need_an_admin_credential_when_auth_is_on() -> None:
    async with (
        serve(http_app("alpha")) as upstream,
        run_config(document(upstream)) as (url, _),
        httpx.AsyncClient(timeout=WAIT, trust_env=False) as http,
    ):
        base = url.removesuffix("/mcp")
        anonymous = await scrape(http, base)
        assert anonymous.status_code == 401 and "manifold_" not in anonymous.text
        user = await scrape(http, base, USER)
        assert user.status_code == 403 and "manifold_" not in user.text
        admin = await scrape(http, base, ADMIN)
        assert admin.status_code == 200 and admin.headers["content-type"].startswith("text/plain")


async def test_per_tool_counts_are_there_when_asked_for() -> None:
    async with (
        serve(http_app("alpha")) as upstream,
        run_config(document(upstream, metrics={"perTool": True})) as (url, _),
        httpx.AsyncClient(timeout=WAIT, trust_env=False) as http,
    ):
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {USER}"}, timeout=WAIT) as h2,
            Client(streamable_http_client(url, http_client=h2), mode="legacy") as client,
        ):
            await client.call_tool("alpha__echo", {"text": "hi"})
        scraped = samples((await scrape(http, url.removesuffix("/mcp"), ADMIN)).text)
    assert value(scraped, "manifold_tool_calls_total", tool="alpha__echo", outcome="ok") == 1


def test_the_histogram_counts_each_observation_in_its_bucket() -> None:
    histogram = Histogram()
    for seconds in (0.0001, 0.0005, 0.003, 0.2, 1000.0):
        histogram.observe(seconds)
    cumulative = dict(histogram.cumulative())
    assert cumulative[repr(BUCKETS[0])] == 2  # at or below 0.5 ms
    assert cumulative["0.005"] == 3 and cumulative["0.25"] == 4 and cumulative["+Inf"] == 5
    assert histogram.count == 5 and histogram.total == pytest.approx(1000.2036)
