"""Every local server process the hub starts: capped, accounted for, and stopped with its whole tree.

Each process starts in a session (and process group) of its own, inside its
sandbox (:mod:`connectors.sandbox`). The table caps processes per upstream
(``maxProcesses``) and overall (``hub.maxProcesses``), delays a start after
quick deaths of the same (upstream, tenant) with a backoff, and stops a
process by its tree: SIGTERM to every descendant and the group, then SIGKILL
after a grace period to whatever is left, then waits for it, so nothing is
left running and no zombie behind. A sandboxed tree also dies with the hub,
however the hub dies (``--die-with-parent`` and the PID namespace).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Final

from connectors.errors import UpstreamBusy, UpstreamUnavailable
from connectors.sandbox import DISCOVERY, SandboxError, launch, loosened
from connectors.spec import UpstreamSpec

__all__ = ["LocalProcess", "Processes", "descendants"]

logger = logging.getLogger(__name__)

_QUICK: Final = 10.0
"""A process that dies within this many seconds of its start makes the next start wait."""
_BACKOFF_FIRST: Final = 0.25
_BACKOFF_MAX: Final = 30.0


@dataclass
class LocalProcess:
    """One running local server process."""

    upstream: str
    key: str
    process: asyncio.subprocess.Process
    restarts: int
    started: float = field(default_factory=time.monotonic)
    started_at: float = field(default_factory=time.time)
    stopping: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid


@dataclass
class _History:
    starts: int = 0
    quick_deaths: int = 0


class Processes:
    """The hub's local processes; one per pool, closed with it."""

    def __init__(self, max_total: int = 64, grace: float = 2.0) -> None:
        self.max_total = max_total
        self.grace = grace
        self._running: dict[int, LocalProcess] = {}
        self._history: dict[tuple[str, str], _History] = {}
        self._stopping: dict[int, asyncio.Task[None]] = {}
        """Stops under way, owned here: one whose caller is cancelled still runs to its end."""

    def __len__(self) -> int:
        return len(self._running)

    def of(self, upstream: str) -> list[LocalProcess]:
        return [p for p in self._running.values() if p.upstream == upstream]

    async def start(self, spec: UpstreamSpec, key: str) -> LocalProcess:
        """Start ``spec``'s program for tenant ``key``, with stdin, stdout and stderr piped.

        Raises:
            UpstreamBusy: a cap on processes is reached.
            UpstreamUnavailable: the sandbox cannot be set up, or the program cannot be started.
        """
        stdio = spec.stdio
        assert stdio is not None
        if len(self.of(spec.name)) >= stdio.max_processes:
            raise UpstreamBusy(spec.name, f"{stdio.max_processes} processes are running (maxProcesses)")
        if len(self._running) >= self.max_total:
            raise UpstreamBusy(spec.name, f"the hub runs {self.max_total} local processes (hub.maxProcesses)")
        history = self._history.setdefault((spec.name, key), _History())
        if history.quick_deaths:
            delay = min(_BACKOFF_FIRST * 2 ** (history.quick_deaths - 1), _BACKOFF_MAX)
            deaths = history.quick_deaths
            logger.info("upstream %s: starting again in %.2fs (%d quick deaths)", spec.name, delay, deaths)
            await asyncio.sleep(delay)
        try:
            how = launch(stdio, spec.name, key)
        except SandboxError as exc:
            raise UpstreamUnavailable(spec.name, f"not started: {exc}") from exc
        try:
            process = await asyncio.create_subprocess_exec(
                *how.argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=how.env,
                cwd=how.cwd,
                preexec_fn=how.preexec,
                start_new_session=True,
                limit=spec.max_message_bytes + 1,
            )
        except OSError as exc:
            raise UpstreamUnavailable(spec.name, f"could not start {stdio.command!r}: {exc.strerror}") from exc
        running = LocalProcess(spec.name, key, process, restarts=history.starts)
        history.starts += 1
        self._running[process.pid] = running
        if (loose := loosened(stdio)) and history.starts == 1:
            logger.warning("upstream %s runs with a loosened sandbox: %s", spec.name, ", ".join(loose))
        return running

    def exited(self, running: LocalProcess) -> None:
        """A process ended by itself (its stdout closed): a quick death makes the next start wait."""
        history = self._history.get((running.upstream, running.key))
        if history is None or running.stopping:
            return
        if time.monotonic() - running.started < _QUICK:
            history.quick_deaths += 1
        else:
            history.quick_deaths = 0

    async def stop(self, running: LocalProcess) -> None:
        """Stop a process and everything it started; returns once the process is reaped.

        The stop runs in a task of the table: cancelling the caller does not cut it short.
        """
        await asyncio.shield(self._stop_task(running))

    def _stop_task(self, running: LocalProcess) -> asyncio.Task[None]:
        pid = running.pid
        task = self._stopping.get(pid)
        if task is None:
            task = self._stopping[pid] = asyncio.get_running_loop().create_task(self._stop(running))
            task.add_done_callback(lambda _: self._stopping.pop(pid, None))
        return task

    async def _stop(self, running: LocalProcess) -> None:
        running.stopping = True
        process = running.process
        try:
            if process.returncode is None:
                _signal_tree(process.pid, signal.SIGTERM)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.grace):
                        await process.wait()
            if process.returncode is None:
                _signal_tree(process.pid, signal.SIGKILL)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.grace):
                        await process.wait()
            # Reaped, its pid may be another's now: only its group is signalled (what it started and
            # left behind; a group id is not reused while the group has members).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            # Its pipes are read to their end and closed (their last bytes go nowhere).
            with contextlib.suppress(TimeoutError, OSError, ValueError):
                async with asyncio.timeout(self.grace):
                    await process.communicate()
        finally:
            self._running.pop(process.pid, None)
            _close_pipes(process)

    def snapshot(self, upstream: str) -> list[dict[str, Any]]:
        """The processes of one upstream, for ``/health``: pid, tenant, age, restarts, memory of the tree."""
        now = time.monotonic()
        return [
            {
                "pid": p.pid,
                "role": "discovery" if p.key == DISCOVERY else "tenant",
                "tenant": None if p.key == DISCOVERY else p.key,
                "ageSeconds": round(now - p.started, 1),
                "restarts": p.restarts,
                "rssBytes": _tree_rss(p.pid),
            }
            for p in self.of(upstream)
        ]

    async def aclose(self) -> None:
        """Stop every process still running (its connector normally stops it first)."""
        for running in list(self._running.values()):
            self._stop_task(running)
        if self._stopping:
            await asyncio.gather(*self._stopping.values(), return_exceptions=True)


def _close_pipes(process: asyncio.subprocess.Process) -> None:
    """Close a process's pipes whatever state they are in (asyncio has no public call for its read pipes)."""
    transport = getattr(process, "_transport", None)
    if transport is not None:
        transport.close()


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process, from /proc."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
    return parents


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, children first found first."""
    children: dict[int, list[int]] = {}
    for child, parent in _parents().items():
        children.setdefault(parent, []).append(child)
    found, queue = [], list(children.get(pid, []))
    while queue:
        current = queue.pop()
        found.append(current)
        queue.extend(children.get(current, []))
    return found


def _signal_tree(pid: int, signum: int) -> None:
    for target in [pid, *descendants(pid)]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(target, signum)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)  # its group: what it started and did not put elsewhere


def _tree_rss(pid: int) -> int:
    total = 0
    for target in [pid, *descendants(pid)]:
        try:
            with open(f"/proc/{target}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            continue
    return total
