"""Real npm-packaged peers in tests: where `make test` installed them, and server-everything on loopback."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.servers import reserve_port

WAIT = 30.0
LOOPBACK = Path(__file__).parent / "npm" / "loopback.cjs"


def node_modules_path() -> Path:
    location = os.environ.get("MANIFOLD_NODE_MODULES")
    if not location:
        pytest.skip("needs the npm peers that `make test` installs (MANIFOLD_NODE_MODULES)")
    path = Path(location)
    assert (path / "node" / "bin" / "node").exists(), f"no Node 22 under {path}"
    return path


def node_env(modules: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{modules / 'node' / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(modules.parent),
    }


async def wait_listening(port: int, process: asyncio.subprocess.Process) -> None:
    async with asyncio.timeout(WAIT):
        while True:
            if process.returncode is not None:
                raise RuntimeError(f"the server exited with {process.returncode}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.1)  # polling a port another process opens: bounded by the timeout above
                continue
            writer.close()
            await writer.wait_closed()
            return


@asynccontextmanager
async def everything(modules: Path) -> AsyncIterator[str]:
    """server-everything over Streamable HTTP, forced onto 127.0.0.1; yields its /mcp URL."""
    sock = reserve_port()
    port = sock.getsockname()[1]
    sock.close()
    entry = modules / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
    process = await asyncio.create_subprocess_exec(
        str(modules / "node" / "bin" / "node"),
        "-r",
        str(LOOPBACK),
        str(entry),
        "streamableHttp",
        env={**node_env(modules), "PORT": str(port)},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await wait_listening(port, process)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        if process.returncode is None:
            process.terminate()
        await asyncio.wait_for(process.wait(), WAIT)
