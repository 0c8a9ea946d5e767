"""Local (stdio) upstreams in tests: the config entry of the SDK test server, and waiting for processes to end."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path
from typing import Any

from connectors.processes import descendants

ROOT = Path(__file__).resolve().parent.parent
WAIT = 30.0


def local_server(name: str = "local", *, sandbox: dict[str, Any] | bool | None = None, **extra: Any) -> dict[str, Any]:
    """The ``mcpServers`` entry of :mod:`tests.stdio_upstream` (the project is readable in its sandbox)."""
    entry: dict[str, Any] = {
        "command": sys.executable,
        "args": ["-m", "tests.stdio_upstream", name],
        "env": {"PYTHONPATH": str(ROOT)},
    }
    if sandbox is not False:
        entry["sandbox"] = {"paths": [str(ROOT)], **(sandbox if isinstance(sandbox, dict) else {})}
    else:
        entry["sandbox"] = False
    return {**entry, **extra}


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def tree(pid: int) -> list[int]:
    return [pid, *descendants(pid)]


def _settle(ended: asyncio.Future[None]) -> None:
    if not ended.done():
        ended.set_result(None)


async def wait_gone(pids: list[int], within: float = WAIT) -> None:
    """Wait until every process of ``pids`` has ended (on pidfds: no polling), or fail naming the rest."""
    loop = asyncio.get_running_loop()
    waits: list[asyncio.Future[None]] = []
    fds: list[int] = []
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        fds.append(fd)
        ended: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, _settle, ended)
        waits.append(ended)
    try:
        if waits:
            await asyncio.wait(waits, timeout=within)
    finally:
        for fd in fds:
            loop.remove_reader(fd)
            with contextlib.suppress(OSError):
                os.close(fd)
    left = [pid for pid in pids if alive(pid)]
    assert not left, f"still running after {within}s: {left}"
