"""A real ``redis-server`` on a loopback port for the tests: started, stopped and started again by pid."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.servers import reserve_port

__all__ = ["RedisServer", "redis_server"]

START_DEADLINE = 10.0


class RedisServer:
    """One redis-server; :meth:`stop` and :meth:`start` keep its port (and lose its data: no persistence)."""

    def __init__(self, directory: Path) -> None:
        sock = reserve_port()
        self.port = sock.getsockname()[1]
        sock.close()  # redis-server binds it next
        self.directory = directory
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed (make test installs the Debian package redis-server)")
        self.process = await asyncio.create_subprocess_exec(
            binary,
            "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(self.directory), "--loglevel", "notice",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        assert self.process.stdout is not None
        async with asyncio.timeout(START_DEADLINE):
            while b"Ready to accept connections" not in (line := await self.process.stdout.readline()):
                if not line:
                    raise AssertionError("redis-server exited before it was ready")
        self._drain = asyncio.create_task(self._read_rest())

    async def _read_rest(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        while await self.process.stdout.readline():
            pass

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()  # by its pid
        await asyncio.wait_for(process.wait(), START_DEADLINE)
        await asyncio.wait_for(self._drain, START_DEADLINE)


@contextlib.asynccontextmanager
async def redis_server(directory: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer(directory)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
