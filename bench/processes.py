"""Child processes on 127.0.0.1 for the benchmark and the conformance run: start, wait, measure, stop."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "cpu_seconds",
    "fast_upstream",
    "free_port",
    "free_ports",
    "hub_command",
    "resident_mb",
    "running",
    "wait_listening",
]

START_DEADLINE = 60.0


def fast_upstream(port: int) -> list[str]:
    """The command that serves the bench's fast upstream (``bench/upstream.py``) on ``port``."""
    return [sys.executable, "-m", "bench.upstream", "fast", "--port", str(port)]


def hub_command(config: dict[str, Any], work: Path, name: str) -> list[str]:
    """The command that serves a hub on ``config`` (written to ``work/<name>.json``)."""
    path = work / f"{name}.json"
    path.write_text(json.dumps(config))
    return [sys.executable, "-m", "hub", "serve", "--config", str(path), "--log-level", "warning"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive ports that are free now."""
    for base in range(20000, 60000, count + 7):
        if all(_free(base + offset) for offset in range(count)):
            return base
    raise RuntimeError(f"no {count} consecutive free ports")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def wait_listening(ports: Sequence[int], process: subprocess.Popen[bytes], deadline: float = START_DEADLINE) -> None:
    """Wait (polling, at most ``deadline`` seconds) until every port accepts connections."""
    end = time.monotonic() + deadline
    pending = list(ports)
    while pending:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        if time.monotonic() > end:
            raise RuntimeError(f"ports {pending} not listening within {deadline:g}s")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", pending[0])) == 0:
                pending.pop(0)
                continue
        time.sleep(0.05)


@contextmanager
def running(
    command: Sequence[str], ports: Sequence[int], log: Path, *, env: Mapping[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` (with ``env`` added to this environment) until the block ends; it must listen
    on ``ports`` first."""
    environment = {**os.environ, **env} if env else None
    with log.open("wb") as out:
        process = subprocess.Popen(list(command), stdout=out, stderr=subprocess.STDOUT, env=environment)
        try:
            wait_listening(ports, process)
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")
