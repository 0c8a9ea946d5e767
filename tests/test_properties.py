"""Property tests of the door: arbitrary headers and bodies never get a 500 or an unbounded wait.

A hub with auth on (and a real SDK upstream behind it) runs in a thread of
its own for the whole module; Hypothesis throws requests at it over a real
socket with a blocking client whose every request has a deadline.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.servers import run_config, serve
from tests.upstreams import http_app

KEY = "mfd_property-key"
DEADLINE = 10.0  # no single request may take longer: that would be an unbounded wait


@pytest.fixture(scope="module")
def hub_url() -> Iterator[str]:
    ready: list[str] = []
    started = threading.Event()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def run() -> None:
        entry = {"name": "prop", "sha256": hashlib.sha256(KEY.encode()).hexdigest(), "tenant": "t"}
        async with serve(http_app("alpha")) as alpha:
            document = {
                "hub": {"maxBodyBytes": 65536, "requestReadTimeout": 2},
                "mcpServers": {"alpha": {"url": f"{alpha}/mcp"}},
                "auth": {"apiKeys": [entry]},
                "tenants": {"t": {"limits": {"requestsPerMinute": 100000, "burst": 10000}}},
            }
            async with run_config(document) as (url, _):
                ready.append(url)
                started.set()
                await stop.wait()

    def main() -> None:
        loop.run_until_complete(run())
        leftover = asyncio.all_tasks(loop)  # e.g. the SDK upstream's server-sent-events watcher
        for task in leftover:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*leftover, return_exceptions=True))

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    assert started.wait(30), "the hub did not start"
    try:
        yield ready[0]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()


@pytest.fixture(scope="module")
def session(hub_url: str) -> Iterator[tuple[httpx.Client, dict[str, str], str]]:
    with httpx.Client(timeout=DEADLINE, trust_env=False) as http:
        headers = {
            "accept": "application/json, text/event-stream",
            "content-type": "application/json",
            "authorization": f"Bearer {KEY}",
        }
        init = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "p", "version": "0"}}
        first = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": init}
        reply = http.post(hub_url, json=first, headers=headers)
        assert reply.status_code == 200
        session_id = reply.headers["mcp-session-id"]
        yield http, {**headers, "mcp-session-id": session_id, "mcp-protocol-version": "2025-11-25"}, hub_url


HEADER_NAME = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-0123456789", min_size=1, max_size=24)
HEADER_VALUE = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=200)
INTERESTING = st.sampled_from(
    [
        "authorization",
        "x-api-key",
        "mcp-session-id",
        "mcp-protocol-version",
        "last-event-id",
        "content-type",
        "accept",
        "origin",
        "host",
    ]
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30,
)
METHOD = st.sampled_from(
    [
        "initialize",
        "ping",
        "tools/list",
        "tools/call",
        "resources/read",
        "prompts/get",
        "completion/complete",
        "x/y",
        "",
    ]
)
RPC = st.fixed_dictionaries(
    {"jsonrpc": st.sampled_from(["2.0", "1.0", 2]), "method": METHOD | JSON},
    optional={"id": st.integers() | st.text(max_size=10) | st.none() | JSON, "params": JSON},
)


def raw_request(url: str, method: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
    """Send exactly these bytes (no client tidies the headers up); the status and body that come back."""
    parts = httpx.URL(url)
    lines = [f"{method} {parts.path} HTTP/1.1", f"host: {parts.host}:{parts.port}", "connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items() if name not in ("host", "connection")]
    lines.append(f"content-length: {len(body)}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    with socket.create_connection((parts.host, parts.port or 80), timeout=DEADLINE) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):  # the socket's timeout bounds every wait
            received += chunk
    head, _, rest = received.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, rest


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    headers=st.dictionaries(INTERESTING | HEADER_NAME, HEADER_VALUE, max_size=8),
    body=st.binary(max_size=2048) | RPC.map(lambda m: json.dumps(m).encode()),
    method=st.sampled_from(["POST", "GET", "DELETE", "PUT"]),
)
def test_arbitrary_requests_without_a_good_credential_never_get_a_500(
    hub_url: str, headers: dict[str, str], body: bytes, method: str
) -> None:
    status, _ = raw_request(hub_url, method, headers, body)
    assert status != 500 and 200 <= status < 600


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(message=RPC, extra=st.dictionaries(INTERESTING, HEADER_VALUE, max_size=3))
def test_arbitrary_json_rpc_from_an_authenticated_session_never_gets_a_500(
    session: tuple[httpx.Client, dict[str, str], str], message: dict[str, Any], extra: dict[str, str]
) -> None:
    _, headers, url = session
    merged = {**headers, **{k: v for k, v in extra.items() if k not in ("authorization", "mcp-session-id")}}
    status, body = raw_request(url, "POST", merged, json.dumps(message).encode())
    assert status != 500 and 200 <= status < 600, body
    if body.startswith(b"{"):
        json.loads(body)  # a refusal or a reply is well-formed JSON
