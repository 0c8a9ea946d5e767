"""The benchmark keeps working: a smoke run (a few hundred calls) produces every measurement.

No timing is asserted here; numbers are for bench/README.md, from `make bench`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.run import main


@pytest.mark.timeout(300)  # about a minute and a half on two cores: every part of the bench, in small
def test_a_smoke_run_measures_everything(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    assert main(["--smoke", "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    for level in ("httpx_1", "httpx_8", "sdk_1"):
        for target in ("direct", "hub"):
            assert results["echo"][level][target]["calls"] > 0
            assert results["echo"][level][target]["p50_ms"] > 0
    assert results["echo"]["httpx_1"]["hub_cpu_ms_per_call"] > 0
    assert results["first_call"]["hub_p50_ms"] > 0
    assert results["progress"]["hub_notifications"] == results["progress"]["direct_notifications"] > 0
    catalog = results["catalog"]
    assert catalog["tools_listed"] == catalog["tools_expected"] == catalog["tools_in_catalog_at_start"]
    assert results["idle_sessions"]["rss_mb_100_sessions"] > 0
    assert results["metrics"]["on"]["hub_cpu_ms_per_call"] > 0 and results["metrics"]["scrape_bytes"] > 0
    for store in ("sqlite", "redis", "redis_limited"):
        assert results["store"][store]["calls"] > 0 and results["store"][store]["hub_cpu_ms_per_call"] > 0
    replicas = results["replicas"]
    for target in ("sqlite_direct", "redis_direct", *(f"{k}_{n}" for k in ("roundrobin", "sticky") for n in (1, 2, 3))):
        assert replicas[target]["calls"] > 0 and replicas[target]["hub_cpu_ms_per_call"] > 0
    assert replicas["pubsub_round_trip"]["p50_ms"] > 0
    assert all(entry["p50_ms"] > 0 for entry in replicas["progress"].values())
    assert results["soak"]["waves"] == 2 and len(results["soak"]["samples"]) == 2
    stdio = results["stdio"]
    assert stdio["start_ms_p50"]["sandboxed"] > 0 and stdio["start_ms_p50"]["unsandboxed"] > 0
    for target in ("direct", "sandboxed", "unsandboxed"):
        assert stdio["level_8"][target]["calls"] > 0
    for paired in ("eras_shared", "eras_collector", "eras_lanes"):  # both eras on each of two hubs
        assert len([k for k, v in results[paired].items() if k.endswith("_cpu_ms_per_call") and v > 0]) == 4
    assert (
        results["eras_collector"]["python_default_rss_mb"] > 0 and results["eras_collector"]["hub_default_rss_mb"] > 0
    )
