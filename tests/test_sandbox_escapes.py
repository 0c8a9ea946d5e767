"""Escapes from the sandbox, tried from inside a local server through the running hub: each must fail.

The server (:mod:`tests.stdio_upstream`) attempts what the test names and says what happened; after
each attempt the test checks the refusal, that nothing changed outside, and that the server (the
victim of its own attempt, and the tenant it serves) still answers.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import mcp_types as types
import pytest
from mcp import Client

from tests.servers import run_config
from tests.stdio_helpers import ROOT, local_server

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

LIMITS = {"memoryMb": 512, "processes": 16}


def text(result: types.CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, types.TextContent))


@asynccontextmanager
async def contained(tmp_path: Path) -> AsyncIterator[Client]:
    document = {"hub": {"workspaces": str(tmp_path / "ws")}, "mcpServers": {"local": local_server(sandbox=LIMITS)}}
    async with run_config(document) as (url, _), Client(url, mode="legacy") as client:
        yield client


async def attempt(client: Client, tool: str, **arguments: object) -> str:
    said = text(await client.call_tool(f"local__{tool}", arguments))
    # The victim is unharmed: the server still answers after its attempt.
    assert text(await client.call_tool("local__echo", {"text": "alive"})) == "local: alive"
    return said


async def test_files_outside_the_workspace_can_be_neither_read_nor_written(tmp_path: Path) -> None:
    config = tmp_path / "hub.json"
    config.write_text('{"auth": {"apiKeys": [{"sha256": "the hub\'s secrets"}]}}')
    marker = f"escape-{uuid.uuid4().hex}"
    async with contained(tmp_path) as client:
        assert (await attempt(client, "attempt_read", path="/etc/shadow")).startswith("refused")
        assert (await attempt(client, "attempt_read", path=str(config))).startswith("refused")
        assert (await attempt(client, "attempt_read", path="/proc/1/environ")).startswith("refused")
        for target in (ROOT / f"{marker}.txt", Path("/usr") / marker, Path("/etc") / marker, tmp_path / marker):
            assert (await attempt(client, "attempt_write", path=str(target))).startswith("refused"), target
            assert not target.exists()
        # Its /tmp is its own: what it writes there is nowhere on the host.
        assert await attempt(client, "attempt_write", path=f"/tmp/{marker}") == "wrote"
        assert not await asyncio.to_thread(os.path.exists, f"/tmp/{marker}")
        assert await attempt(client, "attempt_write", path="/workspace/mine.txt") == "wrote"
    assert (tmp_path / "ws" / "_default" / "local" / "mine.txt").exists()


async def test_no_connection_reaches_a_server_on_the_hosts_loopback(tmp_path: Path) -> None:
    reached = asyncio.Event()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        reached.set()
        writer.close()

    listener = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    async with listener, contained(tmp_path) as client:
        said = await attempt(client, "attempt_connect", port=port)
        assert said.startswith("refused"), said
    assert not reached.is_set()


async def test_the_hubs_environment_is_not_the_servers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MANIFOLD_ADMIN_SECRET", "hub-only-secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "hub-only-cloud-key")
    async with contained(tmp_path) as client:
        seen = json.loads(await attempt(client, "environment"))
    assert set(seen) == {"PATH", "HOME", "LANG", "PWD", "PYTHONPATH"}, sorted(seen)
    assert seen["HOME"] == "/workspace" and "hub-only" not in json.dumps(seen)


async def test_memory_and_processes_are_limited(tmp_path: Path) -> None:
    async with contained(tmp_path) as client:
        assert await attempt(client, "attempt_allocate", megabytes=64) == "allocated 64 MiB"
        assert await attempt(client, "attempt_allocate", megabytes=1024) == "refused: out of memory"
        # Its /tmp is memory too, and bounded by the same limit.
        assert await attempt(client, "attempt_fill", path="/tmp/fill", megabytes=64) == "wrote 64 MiB"
        filled = await attempt(client, "attempt_fill", path="/tmp/fill", megabytes=LIMITS["memoryMb"] + 64)
        assert filled == "refused: No space left on device"
        forked = await attempt(client, "attempt_fork", count=200)
        assert forked.startswith("refused after "), forked
        assert int(forked.split()[2].rstrip(":")) < LIMITS["processes"]


async def test_it_has_no_privileges_and_its_own_namespaces(tmp_path: Path) -> None:
    async with contained(tmp_path) as client:
        status = await attempt(client, "attempt_read", path="/proc/self/status")
        assert status.startswith("read: ")
        who = json.loads(await attempt(client, "whoami"))
    assert who["host"] == "sandbox" and who["uid"] != 0
    assert who["pid"] < 10  # a PID namespace of its own: it sees only its own few processes
    assert os.getpid() > 0  # (the host's pids are not its)
