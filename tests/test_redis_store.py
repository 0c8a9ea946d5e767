"""The Redis store against a real redis-server: the same contract as SQLite's, and Redis failures."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

import httpx
import pytest

from hub.access import LimitsConfig
from hub.context import Caller
from hub.errors import RateLimited
from hub.metrics_export import render
from hub.ratelimit import Limits
from hub.redis_store import RedisStore, redacted
from hub.runtime import Hub
from hub.shared_limits import SharedBuckets
from hub.store import AuditQuery, AuditRecord, EventRow, SessionRecord, StoreError
from tests.redis_server import RedisServer, redis_server
from tests.servers import run_config, run_hub, serve
from tests.upstreams import http_app
from tests.wire import initialize

pytestmark = pytest.mark.anyio


def hub_metrics(hub: Hub) -> str:
    return render(hub).decode()


WAIT = 10.0


def record(session_id: str = "a" * 32, last_seen: float = 100.0) -> SessionRecord:
    return SessionRecord(
        session_id, "2025-11-25", {"name": "c", "version": "1"}, {"roots": {}}, 50.0, last_seen, "key:alice", "acme"
    )


def audit_record(when: float, tenant: str = "acme", name: str = "alpha__echo") -> AuditRecord:
    return AuditRecord(when, tenant, "key:alice", "s", "tools/call", name, "alpha", 1.5, "ok", None, 10, 20, None, "")


async def test_session_records_round_trip_touch_prune_and_delete(tmp_path: Path) -> None:
    async with redis_server(tmp_path) as redis, RedisStore(redis.url) as store:
        await store.save(record("a" * 32, last_seen=100.0))
        await store.save(record("b" * 32, last_seen=100.0))
        assert await store.load("a" * 32) == record("a" * 32)
        assert await store.load("c" * 32) is None
        await store.touch(["a" * 32], when=500.0)
        loaded = await store.load("a" * 32)
        assert loaded is not None and loaded.last_seen == 500.0
        assert await store.prune(seen_before=200.0) == 1
        assert await store.load("b" * 32) is None
        await store.delete("a" * 32)
        await store.touch(["a" * 32], when=900.0)  # a deleted session does not come back as half a record
        assert await store.load("a" * 32) is None


async def test_a_second_store_on_the_same_redis_sees_the_records_of_the_first(tmp_path: Path) -> None:
    async with (
        redis_server(tmp_path) as redis,
        RedisStore(redis.url) as one,
        RedisStore(redis.url) as two,
        RedisStore(redis.url, prefix="other") as alien,
    ):
        await one.save(record())
        assert await two.load("a" * 32) == record()
        assert await alien.load("a" * 32) is None  # another deployment's prefix shares nothing


async def test_events_replay_in_order_are_trimmed_and_forgotten(tmp_path: Path) -> None:
    async with redis_server(tmp_path) as redis, RedisStore(redis.url, events_kept=3) as store:
        rows = [EventRow("s" * 32, "run1", 1, seq, time.time(), f'{{"n":{seq}}}'.encode()) for seq in range(1, 6)]
        await store.append_events(rows[:2])
        await store.append_events(rows[2:])
        await store.append_events([EventRow("s" * 32, "run1", 2, 1, time.time(), b"other stream")])
        assert await store.events_after("s" * 32, "run1", 1, 0) == [(3, b'{"n":3}'), (4, b'{"n":4}'), (5, b'{"n":5}')]
        assert await store.events_after("s" * 32, "run1", 1, 4) == [(5, b'{"n":5}')]
        assert await store.events_after("s" * 32, "run2", 1, 0) == []
        await store.delete_events("s" * 32)
        assert await store.events_after("s" * 32, "run1", 1, 0) == []
        assert await store.events_after("s" * 32, "run1", 2, 0) == []


async def test_audit_records_query_filter_and_prune(tmp_path: Path) -> None:
    async with redis_server(tmp_path) as redis, RedisStore(redis.url) as store:
        now = time.time()
        await store.append_audit([audit_record(now - 30, name="alpha__old")])
        await store.append_audit([audit_record(now - 1), audit_record(now, tenant="globex", name="beta__x")])
        newest = await store.audit(AuditQuery())
        assert [r.name for r in newest] == ["beta__x", "alpha__echo", "alpha__old"]
        assert newest[1] == audit_record(now - 1)
        assert [r.tenant for r in await store.audit(AuditQuery(tenant="globex"))] == ["globex"]
        assert [r.name for r in await store.audit(AuditQuery(name_glob="alpha__*"))] == ["alpha__echo", "alpha__old"]
        assert len(await store.audit(AuditQuery(limit=1))) == 1
        assert await store.prune_audit(before=now + 60, keep=1000) == 3
        assert await store.audit(AuditQuery()) == []


async def test_an_unreachable_redis_fails_every_call_within_the_deadline_and_is_noticed(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path)  # never started: its port refuses
    async with RedisStore(redis.url.replace("redis://", "redis://:s3cret@"), timeout=0.5) as store:
        assert not store.reachable
        started = time.monotonic()
        with pytest.raises(StoreError, match="unreachable") as caught:
            await store.load("a" * 32)
        assert time.monotonic() - started < 2.0
        assert "s3cret" not in str(caught.value)
    assert redacted("redis://:s3cret@10.0.0.1:6379/0") == "redis://:***@10.0.0.1:6379/0"


async def test_a_hub_on_redis_refuses_new_sessions_while_redis_is_down_keeps_its_own_and_recovers(
    tmp_path: Path,
) -> None:
    async with redis_server(tmp_path) as redis, serve(http_app("alpha")) as alpha:
        servers = {"alpha": {"url": f"{alpha}/mcp"}}
        async with run_hub(servers, storage=redis.url) as (url, hub), httpx.AsyncClient(timeout=WAIT) as http:
            headers = await initialize(http, url)
            health = hub.health()
            assert health["store"] == {"kind": "redis", "url": redis.url, "reachable": True, "lastError": None}
            await redis.stop()
            assert isinstance(hub.store, RedisStore)
            await asyncio.wait_for(hub.store.wait_reachable(False), WAIT)
            assert hub.health()["status"] == "degraded"
            assert 'manifold_store_reachable{kind="redis"} 0.0' in hub_metrics(hub)
            refused = await http.post(
                url,
                json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                    "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "c", "version": "1"}
                }},
                headers={"accept": "application/json, text/event-stream"},
            )  # fmt: skip
            assert refused.status_code == 503
            assert "Redis" in refused.json()["error"]["message"]
            call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
                "name": "alpha__echo", "arguments": {"text": "still here"}
            }}  # fmt: skip
            kept = await http.post(url, json=call, headers=headers)
            assert kept.status_code == 200 and "still here" in kept.text  # the session it owns goes on
            await redis.start()
            await asyncio.wait_for(hub.store.wait_reachable(True), WAIT)
            assert hub.health()["status"] == "ok"
            assert 'manifold_store_reachable{kind="redis"} 1.0' in hub_metrics(hub)
            assert "mcp-session-id" in await initialize(http, url)


async def test_a_session_on_redis_survives_a_hub_restart(tmp_path: Path) -> None:
    async with redis_server(tmp_path) as redis, serve(http_app("alpha")) as alpha:
        servers = {"alpha": {"url": f"{alpha}/mcp"}}
        async with httpx.AsyncClient(timeout=WAIT) as http:
            async with run_hub(servers, storage=redis.url) as (url, _):
                headers = await initialize(http, url)
            async with run_hub(servers, storage=redis.url) as (url, hub):
                call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
                    "name": "alpha__echo", "arguments": {"text": "after"}
                }}  # fmt: skip
                answer = await http.post(url, json=call, headers=headers)
                assert answer.status_code == 200 and "after" in answer.text
                assert hub.sessions.get(headers["mcp-session-id"]) is not None


async def test_a_tenants_rate_limit_is_its_total_over_two_hubs_on_one_redis_and_spares_other_tenants(
    tmp_path: Path,
) -> None:
    acme_key, zeta_key = "acme-secret-key-1", "zeta-secret-key-1"
    keys = [
        {"name": "ann", "sha256": hashlib.sha256(acme_key.encode()).hexdigest(), "tenant": "acme"},
        {"name": "zed", "sha256": hashlib.sha256(zeta_key.encode()).hexdigest(), "tenant": "zeta"},
    ]
    async with redis_server(tmp_path) as redis, serve(http_app("alpha")) as alpha:
        document = {
            "hub": {"storage": redis.url},
            "auth": {"apiKeys": keys},
            "tenants": {"acme": {"limits": {"requestsPerMinute": 1, "burst": 4}}, "zeta": {}},
            "mcpServers": {"alpha": {"url": f"{alpha}/mcp"}},
        }
        async with (
            run_config(document) as (one, _),
            run_config(document) as (two, _),
            httpx.AsyncClient(timeout=WAIT, headers={"authorization": f"Bearer {acme_key}"}) as acme,
            httpx.AsyncClient(timeout=WAIT, headers={"authorization": f"Bearer {zeta_key}"}) as zeta,
        ):
            on_one = await initialize(acme, one)  # a token each
            on_two = await initialize(acme, two)
            ping = {"jsonrpc": "2.0", "id": 7, "method": "ping"}
            assert (await acme.post(one, json=ping, headers=on_one)).status_code == 200
            assert (await acme.post(two, json=ping, headers=on_two)).status_code == 200
            for url, headers in ((one, on_one), (two, on_two)):  # four spent over both: each hub refuses
                refused = await acme.post(url, json=ping, headers=headers)
                assert refused.status_code == 429, refused.text
                assert "tenant 'acme'" in refused.json()["error"]["message"]
                assert int(refused.headers["retry-after"]) >= 1
            for url in (one, two):  # another tenant's requests are not counted against acme, nor refused
                headers = await initialize(zeta, url)
                for _ in range(5):
                    assert (await zeta.post(url, json=ping, headers=headers)).status_code == 200


async def test_with_redis_unreachable_limits_are_counted_in_the_process_without_waiting_for_redis(
    tmp_path: Path,
) -> None:
    redis = RedisServer(tmp_path)  # never started: its port refuses
    async with RedisStore(redis.url, timeout=0.5) as store:
        assert not store.reachable
        limits = Limits({"acme": LimitsConfig(requests_per_minute=1, burst=2)}, shared=SharedBuckets(store))
        alice = Caller("key:alice", "acme")
        failures = store.failures
        await limits.admit_shared(alice, tool_call=False)
        await limits.admit_shared(alice, tool_call=False)
        with pytest.raises(RateLimited, match="tenant 'acme'"):
            await limits.admit_shared(alice, tool_call=False)
        # Asking Redis would have failed three times; at most the store's own probe (every second) did.
        assert store.failures - failures <= 1
