"""The stdio transport under the JSON-RPC engine: one local process is one upstream session.

Messages are newline-delimited JSON-RPC on the process's stdin and stdout. A
line longer than the upstream's message limit loses the session (the process
is stopped; the next use starts another); a line that is not JSON is logged,
named by upstream, and skipped. stderr goes to the hub's log, line by line,
each line cut at 2,000 characters, at most 100 lines a minute per process, and
with the values of the config's ``env`` masked. When stdout closes, the
process has ended: the session is lost with its exit code, and the process
table hears of it (its next start may wait, see :mod:`connectors.processes`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Final

from connectors import jsonrpc
from connectors.errors import UpstreamTooLarge, UpstreamUnavailable
from connectors.jsonrpc import Message
from connectors.processes import LocalProcess, Processes
from connectors.sandbox import redactor
from connectors.spec import UpstreamSpec
from connectors.transport import Link

__all__ = ["StdioTransport"]

logger = logging.getLogger(__name__)

_LINE_CUT: Final = 2000
_LINES_PER_MINUTE: Final = 100
_CHUNK: Final = 64 * 1024
_EXIT_WAIT: Final = 2.0
"""How long the exit code of a process whose stdout closed is waited for."""


class StdioTransport:
    """One upstream session over one local process's stdin and stdout."""

    def __init__(self, spec: UpstreamSpec, processes: Processes, key: str) -> None:
        assert spec.stdio is not None
        self.spec = spec
        self._processes = processes
        self._key = key
        self._running: LocalProcess | None = None
        self._link: Link | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._redact = redactor(spec.stdio.env)
        self._outstanding: set[int] = set()
        """Ids of our requests not yet answered: a question of the server goes with the only one."""

    @property
    def pid(self) -> int | None:
        return self._running.pid if self._running is not None else None

    async def open(self, link: Link) -> None:
        self._running = running = await self._processes.start(self.spec, self._key)
        self._link = link
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._read(link, running), name=f"stdio-out-{self.spec.name}"),
            loop.create_task(self._log_stderr(running), name=f"stdio-err-{self.spec.name}"),
        ]

    def reset(self) -> None:
        pass  # the process is the session: a fresh handshake goes to the same process

    async def opened(self) -> None:
        pass

    async def send(self, message: Message) -> None:
        running = self._running
        assert running is not None
        stdin = running.process.stdin
        assert stdin is not None
        if running.process.returncode is not None or stdin.is_closing():
            raise self._gone(f"the process exited ({running.process.returncode})")
        if "method" in message and "id" in message:
            self._outstanding.add(message["id"])
        try:
            stdin.write(jsonrpc.dumps(message) + b"\n")
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise self._gone("the process closed its stdin") from exc

    def _gone(self, reason: str) -> UpstreamUnavailable:
        """The process cannot be written to: the session is lost now, not once its stdout is seen to close,
        so the next call starts another process instead of meeting this one (and its breaker counting that)."""
        if self._link is not None:
            self._link.lost(reason)
        return UpstreamUnavailable(self.spec.name, reason)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._running is not None:
            await self._processes.stop(self._running)
            self._running = None

    async def _read(self, link: Link, running: LocalProcess) -> None:
        stdout = running.process.stdout
        assert stdout is not None
        name = self.spec.name
        reason = "the process closed its stdout"
        try:
            while True:
                try:
                    line = await stdout.readline()
                except ValueError:  # asyncio's LimitOverrunError: a line past the limit
                    reason = UpstreamTooLarge(name, "a message", self.spec.max_message_bytes).reason
                    logger.error("upstream %s: %s; the process is stopped", name, reason)
                    break
                if not line:
                    reason = await self._ended(running)
                    self._processes.exited(running)
                    if not running.stopping:
                        logger.warning("upstream %s (pid %d): %s", name, running.pid, reason)
                    break
                if not line.strip():
                    continue
                try:
                    message = jsonrpc.loads(line)
                except ValueError:
                    logger.warning("upstream %s: a line on stdout is not JSON (%d bytes); skipped", name, len(line))
                    continue
                link.deliver(message, self._related(link, message))
        finally:
            link.lost(reason)

    @staticmethod
    async def _ended(running: LocalProcess) -> str:
        """Why stdout closed: the exit code, once known. Our end of stdin is closed first (nobody reads it
        now, and asyncio's wait for the exit waits for every pipe to close); the wait is bounded, since
        a process may close its stdout and go on (the stop that follows ends it)."""
        stdin = running.process.stdin
        if stdin is not None:
            stdin.close()
        try:
            async with asyncio.timeout(_EXIT_WAIT):
                return f"the process exited with code {await running.process.wait()}"
        except TimeoutError:
            return "the process closed its stdout"

    def _related(self, link: Link, message: object) -> int | None:
        """The request of ours a message belongs to, as far as one pipe tells: a question the server
        asks while exactly one of our requests is open belongs to that one."""
        if not isinstance(message, dict) or "id" not in message:
            return None
        if "method" not in message:
            self._outstanding.discard(message["id"])
            return None
        self._outstanding = {i for i in self._outstanding if link.awaiting(i)}
        return next(iter(self._outstanding)) if len(self._outstanding) == 1 else None

    async def _log_stderr(self, running: LocalProcess) -> None:
        stderr = running.process.stderr
        assert stderr is not None
        name, pid = self.spec.name, running.pid
        partial = b""
        window, logged, dropped = time.monotonic(), 0, 0
        while chunk := await stderr.read(_CHUNK):
            *lines, partial = (partial + chunk).split(b"\n")
            partial = partial[-_LINE_CUT:]
            for raw in lines:
                now = time.monotonic()
                if now - window >= 60.0:
                    if dropped:
                        logger.warning("upstream %s (pid %d): %d lines of stderr not logged", name, pid, dropped)
                    window, logged, dropped = now, 0, 0
                if logged >= _LINES_PER_MINUTE:
                    dropped += 1
                    continue
                logged += 1
                text = self._redact(raw.decode("utf-8", errors="replace").rstrip("\r"))
                logger.info("upstream %s (pid %d) stderr: %s", name, pid, text[:_LINE_CUT])
