"""Local (stdio) servers: the same fast server on stdio, directly and through the hub, sandboxed and not.

Direct: a lean client writes newline-delimited JSON-RPC to the server's stdin
(``workers`` requests in flight) and reads the replies from its stdout.
Through the hub: the usual lean HTTP sessions call a hub that runs the server
as a local upstream, one hub with the sandbox on and one with it off, in the
same run, rounds interleaved. Also: the time from starting a process to its
answer to ``initialize``, with and without the sandbox. Every loop is bounded
in calls and seconds.

Run on its own: ``python -m bench.stdio`` (``--smoke`` for a quick check); ``make bench`` includes it.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench.processes import cpu_seconds, free_port, hub_command, running
from bench.rounds import Round, call_round, summarize
from connectors.sandbox import launch
from connectors.spec import SandboxSpec, StdioSpec

__all__ = ["stdio_costs"]

ROOT = Path(__file__).resolve().parent.parent
SERVER = (sys.executable, "-m", "bench.upstream", "stdio")
INIT = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}}


def _spec(sandboxed: bool, work: Path) -> StdioSpec:
    sandbox = SandboxSpec(paths=(str(ROOT),)) if sandboxed else None
    return StdioSpec(SERVER[0], SERVER[1:], {"PYTHONPATH": str(ROOT)}, None, sandbox, str(work / "ws"))


class Pipe:
    """A lean JSON-RPC client over one process's stdin and stdout."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.ids = itertools.count(1)
        self.waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def start(cls, sandboxed: bool, work: Path) -> tuple[Pipe, float]:
        how = launch(_spec(sandboxed, work), "bench", "")
        started = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            *how.argv, env=how.env, cwd=how.cwd, preexec_fn=how.preexec, start_new_session=True,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        pipe = cls(process)
        await pipe.request("initialize", INIT)
        elapsed = time.perf_counter() - started
        assert process.stdin is not None
        process.stdin.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
        return pipe, elapsed

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            message = orjson.loads(line)
            waiter = self.waiting.pop(message.get("id"), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(message)

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None
        request_id = next(self.ids)
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[request_id] = waiter
        self.process.stdin.write(orjson.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}))
        self.process.stdin.write(b"\n")
        async with asyncio.timeout(30):
            return await waiter

    async def close(self) -> None:
        self.reader.cancel()
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()


async def direct_round(pipe: Pipe, workers: int, *, calls: int, seconds: float) -> tuple[Round, float]:
    latencies: list[float] = []
    budget = [calls]
    deadline = time.monotonic() + seconds
    params = {"name": "echo", "arguments": {"text": "hello"}}

    async def work() -> None:
        while budget[0] > 0 and time.monotonic() < deadline:
            budget[0] -= 1
            started = time.perf_counter()
            await pipe.request("tools/call", params)
            latencies.append((time.perf_counter() - started) * 1000)

    before = cpu_seconds(pipe.process.pid)
    started = time.perf_counter()
    await asyncio.gather(*(work() for _ in range(workers)))
    return Round(len(latencies), time.perf_counter() - started, latencies), cpu_seconds(pipe.process.pid) - before


def hub_config(port: int, work: Path, sandboxed: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"command": SERVER[0], "args": list(SERVER[1:]), "env": {"PYTHONPATH": str(ROOT)}}
    entry["sandbox"] = {"paths": [str(ROOT)]} if sandboxed else False
    return {
        "hub": {"port": port, "storage": ":memory:", "workspaces": str(work / "ws")},
        "mcpServers": {"bench": entry},
    }


async def _startup(work: Path, sandboxed: bool, times: int) -> float:
    took = []
    for _ in range(times):
        pipe, elapsed = await Pipe.start(sandboxed, work)
        took.append(elapsed * 1000)
        await pipe.close()
    return round(statistics.median(took), 1)


async def _measure(
    hubs: dict[str, tuple[str, int]], work: Path, levels: tuple[int, ...], calls: int, seconds: float, rounds: int
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "start_ms_p50": {"unsandboxed": await _startup(work, False, 5), "sandboxed": await _startup(work, True, 5)}
    }
    pipe, _ = await Pipe.start(True, work)
    try:
        for level in levels:
            direct: list[Round] = []
            through: dict[str, list[Round]] = {name: [] for name in hubs}
            cpu: dict[str, float] = dict.fromkeys(hubs, 0.0)
            for _ in range(rounds):
                direct.append((await direct_round(pipe, level, calls=calls, seconds=seconds))[0])
                for name, (url, pid) in hubs.items():
                    round_, (spent,), _ = await call_round(
                        url, "bench__echo", {"text": "hello"}, level, calls=calls, seconds=seconds, pids=(pid,)
                    )
                    through[name].append(round_)
                    cpu[name] += spent
            entry: dict[str, Any] = {"direct": summarize(direct)}
            for name, done in through.items():
                entry[name] = summarize(done)
                entry[f"{name}_hub_cpu_ms_per_call"] = round(cpu[name] * 1000 / max(1, sum(r.calls for r in done)), 3)
            out[f"level_{level}"] = entry
    finally:
        await pipe.close()
    return out


def stdio_costs(work: Path, *, levels: tuple[int, ...], calls: int, seconds: float, rounds: int) -> dict[str, Any]:
    """Calls/s and hub CPU per call with a local server, sandboxed and not; process start times."""
    ports = {"sandboxed": free_port(), "unsandboxed": free_port()}
    with (
        running(hub_command(hub_config(ports["sandboxed"], work, True), work, "hub-stdio-sandboxed"),
                [ports["sandboxed"]], work / "hub-stdio-sandboxed.log") as sandboxed,
        running(hub_command(hub_config(ports["unsandboxed"], work, False), work, "hub-stdio-bare"),
                [ports["unsandboxed"]], work / "hub-stdio-bare.log") as bare,
    ):  # fmt: skip
        hubs = {
            "sandboxed": (f"http://127.0.0.1:{ports['sandboxed']}/mcp", sandboxed.pid),
            "unsandboxed": (f"http://127.0.0.1:{ports['unsandboxed']}/mcp", bare.pid),
        }
        return asyncio.run(_measure(hubs, work, levels, calls, seconds, rounds))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    calls, seconds, rounds = (150, 3.0, 1) if args.smoke else (3000, 8.0, 2)
    work = Path(tempfile.mkdtemp(prefix="bench-stdio-"))
    print(json.dumps(stdio_costs(work, levels=(1, 8), calls=calls, seconds=seconds, rounds=rounds), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
