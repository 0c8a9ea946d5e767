"""A hub as its own process (``python -m hub serve``), its log read line by line, stopped by its pid."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["HubProcess", "hub_serving"]

ROOT = Path(__file__).resolve().parent.parent
WAIT = 10.0
START_DEADLINE = 20.0


@dataclass
class HubProcess:
    """A hub running as its own process, and everything it wrote to stderr, line by line."""

    process: asyncio.subprocess.Process
    url: str
    lines: list[str] = field(default_factory=list)
    ended: bool = False
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def log(self) -> str:
        return "".join(self.lines)

    async def read_stderr(self) -> None:
        assert self.process.stderr is not None
        while True:
            line = await self.process.stderr.readline()
            async with self.changed:
                if line:
                    self.lines.append(line.decode(errors="replace"))
                else:
                    self.ended = True
                self.changed.notify_all()
            if not line:
                return

    async def logged(self, text: str, within: float = WAIT, *, after: int = 0) -> None:
        """Wait until a line of the log (from line ``after`` on) contains ``text``.
        Raises AssertionError if it never does."""

        def found() -> bool:
            return any(text in line for line in self.lines[after:])

        async with self.changed:
            try:
                await asyncio.wait_for(self.changed.wait_for(lambda: self.ended or found()), within)
            except TimeoutError:
                raise AssertionError(f"the hub did not log {text!r} within {within}s:\n{self.log}") from None
        assert found(), f"the hub ended without logging {text!r}:\n{self.log}"

    async def log_complete(self) -> str:
        """The whole log, once the process has closed its stderr."""
        async with self.changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait_for(lambda: self.ended), WAIT)
        return self.log

    def signal(self, signum: int = signal.SIGTERM) -> float:
        """Send ``signum`` to the hub's pid; returns when (monotonic seconds)."""
        os.kill(self.process.pid, signum)
        return time.monotonic()

    async def exit_code(self, within: float) -> int:
        """The process's exit code. Raises AssertionError if it is still running after ``within`` seconds."""
        try:
            return await asyncio.wait_for(self.process.wait(), within)
        except TimeoutError:
            raise AssertionError(f"the hub did not exit within {within}s:\n{self.log}") from None


@asynccontextmanager
async def hub_serving(config: Path, port: int) -> AsyncIterator[HubProcess]:
    """Run ``python -m hub serve --config config`` (listening on ``port``) until it listens; kill it after."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MANIFOLD_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hub",
        "serve",
        "--config",
        str(config),
        "--log-level",
        "info",
        cwd=ROOT,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        limit=1 << 20,
    )
    hub = HubProcess(process, f"http://127.0.0.1:{port}/mcp")
    reader = asyncio.create_task(hub.read_stderr())
    try:
        await hub.logged("Uvicorn running", within=START_DEADLINE)
        yield hub
    finally:
        if process.returncode is None:  # the test ended before the hub did
            with contextlib.suppress(ProcessLookupError):
                process.kill()  # by its pid
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), WAIT)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reader, WAIT)  # cancelled if stderr stays open past WAIT
