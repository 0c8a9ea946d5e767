"""DNS-rebinding protection: disallowed Origins get 403, non-loopback Hosts 421 when on loopback."""

from __future__ import annotations

import httpx
import pytest

from hub.app import create_app
from hub.config import parse_config
from hub.guard import default_allowed_hosts
from tests.servers import run_hub, serve
from tests.upstreams import http_app
from tests.wire import HEADERS, INIT, rpc

pytestmark = pytest.mark.anyio


async def post_initialize(http: httpx.AsyncClient, url: str, **headers: str) -> httpx.Response:
    return await http.post(url, json=rpc(1, "initialize", INIT), headers={**HEADERS, **headers})


async def test_a_disallowed_origin_is_refused_with_403_everywhere() -> None:
    async with (
        serve(http_app("alpha")) as alpha,
        run_hub({"alpha": {"url": f"{alpha}/mcp"}}) as (url, hub),
        httpx.AsyncClient(timeout=10, trust_env=False) as http,
    ):
        refused = await post_initialize(http, url, origin="https://evil.example")
        assert refused.status_code == 403
        assert "evil.example" in refused.json()["error"]["message"]
        legacy = await http.get(url.replace("/mcp", "/sse"), headers={"origin": "https://evil.example"})
        assert legacy.status_code == 403
        assert len(hub.sessions) == 0
        for allowed in ("http://localhost:5173", "http://127.0.0.1:6274", "https://localhost"):
            assert (await post_initialize(http, url, origin=allowed)).status_code == 200
        assert (await post_initialize(http, url)).status_code == 200  # no Origin: not a browser


async def test_a_foreign_host_is_refused_when_listening_on_loopback() -> None:
    async with (
        serve(http_app("alpha")) as alpha,
        run_hub({"alpha": {"url": f"{alpha}/mcp"}}) as (url, _),
        httpx.AsyncClient(timeout=10, trust_env=False) as http,
    ):
        rebound = await post_initialize(http, url, host="attacker.example:8765")
        assert rebound.status_code == 421
        assert (await post_initialize(http, url, host="localhost:8765")).status_code == 200


async def test_allowed_lists_come_from_the_config() -> None:
    async with (
        serve(http_app("alpha")) as alpha,
        run_hub(
            {"alpha": {"url": f"{alpha}/mcp"}},
            allowedOrigins=["https://app.example.com"],
            allowedHosts=["hub.internal:*", "127.0.0.1:*"],
        ) as (url, _),
        httpx.AsyncClient(timeout=10, trust_env=False) as http,
    ):
        assert (await post_initialize(http, url, origin="https://app.example.com")).status_code == 200
        assert (await post_initialize(http, url, origin="http://localhost:3000")).status_code == 403
        assert (await post_initialize(http, url, host="hub.internal:443")).status_code == 200
        assert (await post_initialize(http, url, host="localhost:8765")).status_code == 421


@pytest.mark.parametrize(
    ("configured", "served", "status"), [("0.0.0.0", "127.0.0.1", 421), ("127.0.0.1", "0.0.0.0", 200)]
)
async def test_the_host_check_follows_the_address_served_over_the_configs(
    configured: str, served: str, status: int
) -> None:
    # As `manifold serve --host` serves it: a loopback hub is guarded whatever its file says, and one
    # served beyond loopback answers the names it is reached by.
    async with serve(http_app("alpha")) as alpha, httpx.AsyncClient(timeout=10, trust_env=False) as http:
        document = {
            "hub": {"host": configured, "storage": ":memory:"},
            "mcpServers": {"alpha": {"url": f"{alpha}/mcp"}},
        }
        async with serve(create_app(parse_config(document), host=served)) as base:
            assert (await post_initialize(http, f"{base}/mcp", host="hub.example:8765")).status_code == status


def test_no_host_check_by_default_when_listening_beyond_loopback() -> None:
    assert default_allowed_hosts("0.0.0.0") is None
    assert default_allowed_hosts("127.0.0.1") == [
        "127.0.0.1",
        "127.0.0.1:*",
        "localhost",
        "localhost:*",
        "[::1]",
        "[::1]:*",
    ]
