"""The admin page in a real headless browser (Debian's chromium, which `make test` installs or names).

The page is loaded from the running hub with an admin credential in its address's fragment; the
browser runs its script, which asks the hub's endpoints; the DOM it leaves must show the upstreams,
the session that is open, the catalog and the audit trail. Without the credential it shows nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import tempfile
from pathlib import Path

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.servers import run_config, serve
from tests.upstreams import http_app
from tests.wire import WAIT

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

ADMIN, USER = "key-admin-0123456789abcdef", "key-user-0123456789abcdef"


def browser() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("needs Debian's chromium, which `make test` installs")
    return found


async def rendered(url: str) -> str:
    """The DOM of ``url`` after its script ran (a few seconds of the page's time, at most)."""
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        process = await asyncio.create_subprocess_exec(
            browser(), "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
            f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--dump-dom", url,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            out, _ = await asyncio.wait_for(process.communicate(), 60)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    return out.decode()


async def test_the_admin_page_shows_upstreams_sessions_catalog_and_audit(tmp_path: Path) -> None:
    keys = [
        {"name": "ops", "sha256": hashlib.sha256(ADMIN.encode()).hexdigest(), "tenant": "acme", "admin": True},
        {"name": "ann", "sha256": hashlib.sha256(USER.encode()).hexdigest(), "tenant": "acme"},
    ]
    async with serve(http_app("alpha")) as alpha, serve(http_app("beta")) as beta:
        document = {
            "auth": {"apiKeys": keys},
            "tenants": {"acme": {}},
            "mcpServers": {"alpha": {"url": f"{alpha}/mcp"}, "beta": {"url": f"{beta}/mcp"}},
        }
        async with (
            run_config(document) as (url, _),
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {USER}"}, timeout=WAIT) as http,
            Client(streamable_http_client(url, http_client=http), mode="legacy") as client,
        ):
            await client.call_tool("alpha__echo", {"text": "seen by the audit"})
            base = url.removesuffix("/mcp")
            dom = await rendered(f"{base}/admin#token={ADMIN}")
            assert 'data-loaded="yes"' in dom, dom[-2000:]
            assert "<td>alpha</td>" in dom and "<td>beta</td>" in dom
            assert '<td class="up">up</td>' in dom
            assert "<td>key:ann</td>" in dom  # the open session's principal
            assert "<td>alpha__echo</td>" in dom  # the catalog
            assert "<td>tools/call</td>" in dom  # the audit record of the call above

            refused = await rendered(f"{base}/admin")
            assert 'data-loaded="yes"' not in refused and "<td>key:ann</td>" not in refused
            assert "HTTP 401" in refused

            async with httpx.AsyncClient(timeout=WAIT, trust_env=False) as plain:
                page = await plain.get(f"{base}/admin")
            assert page.status_code == 200
            assert "src=" not in page.text and "<link" not in page.text  # nothing loaded from elsewhere
            assert "default-src 'self'" in page.headers["content-security-policy"]
