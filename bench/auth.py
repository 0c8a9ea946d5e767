"""What identity costs on the hot path, and whether one tenant at its limits slows another.

Hubs with auth off, with an API key, and with a JWT run side by side in front
of the same upstream; their rounds are interleaved (off, key, jwt, off, ...)
and each reports its CPU per call. Then one hub with two tenants: the quiet
tenant's latency alone, and again while the noisy one floods past its limit.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import statistics
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from bench.client import RpcSession
from bench.processes import free_port, hub_command, running
from bench.rounds import Round, call_round, summarize

__all__ = ["auth_costs", "tenant_isolation"]

_KEY = "mfd_bench-key-0123456789abcdef"
_ISSUER = "https://id.bench.invalid"
_AUDIENCE = "https://hub.bench.invalid/mcp"


def _jwt_material(work: Path) -> tuple[str, str]:
    """A JWKS file and a token it verifies."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    path = work / "jwks.json"
    path.write_text(json.dumps({"keys": [{**public, "kid": "b1", "use": "sig"}]}))
    claims = {"iss": _ISSUER, "aud": _AUDIENCE, "sub": "bench", "tenant": "t", "scope": "mcp"}
    token = jwt.encode({**claims, "exp": int(time.time()) + 3600}, private, algorithm="RS256", headers={"kid": "b1"})
    return str(path), token


def _config(port: int, upstream: str, auth: dict[str, Any] | None, tenants: dict[str, Any] | None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "hub": {"host": "127.0.0.1", "port": port, "storage": ":memory:"},
        "mcpServers": {"bench": {"url": upstream}},
    }
    if auth is not None:
        config["auth"] = auth
        config["tenants"] = tenants or {"t": {}}
    return config


def auth_costs(upstream: str, work: Path, *, sessions: int, calls: int, seconds: float, rounds: int) -> dict[str, Any]:
    """Hub CPU per call with auth off, with an API key and with a JWT, measured in the same run."""
    jwks, token = _jwt_material(work)
    digest = hashlib.sha256(_KEY.encode()).hexdigest()
    variants: dict[str, tuple[dict[str, Any] | None, dict[str, str]]] = {
        "off": (None, {}),
        "api_key": (
            {"apiKeys": [{"name": "bench", "sha256": digest, "tenant": "t"}]},
            {"authorization": f"Bearer {_KEY}"},
        ),
        "jwt": (
            {
                "jwt": {
                    "issuer": _ISSUER,
                    "audience": _AUDIENCE,
                    "jwks": jwks,
                    "algorithms": ["RS256"],
                    "scopes": ["mcp"],
                }
            },
            {"authorization": f"Bearer {token}"},
        ),
    }
    out: dict[str, Any] = {}
    with ExitStack() as stack:
        hubs = {}
        for name, (auth, headers) in variants.items():
            port = free_port()
            process = stack.enter_context(
                running(
                    hub_command(_config(port, upstream, auth, None), work, f"auth-{name}"),
                    [port],
                    work / f"auth-{name}.log",
                )
            )
            hubs[name] = (f"http://127.0.0.1:{port}/mcp", process.pid, headers)
        collected: dict[str, tuple[list[Round], float]] = {name: ([], 0.0) for name in hubs}
        for _ in range(rounds):
            for name, (url, pid, headers) in hubs.items():
                round_, (cpu,), _ = asyncio.run(
                    call_round(
                        url,
                        "bench__echo",
                        {"text": "hello"},
                        sessions,
                        calls=calls,
                        seconds=seconds,
                        pids=(pid,),
                        headers=headers,
                    )
                )
                done, spent = collected[name]
                collected[name] = ([*done, round_], spent + cpu)
        for name, (done, spent) in collected.items():
            total = sum(r.calls for r in done)
            out[name] = {**summarize(done), "hub_cpu_ms_per_call": round(spent * 1000 / total, 3)}
    for name in ("api_key", "jwt"):
        out[name]["added_cpu_ms_per_call"] = round(
            out[name]["hub_cpu_ms_per_call"] - out["off"]["hub_cpu_ms_per_call"], 3
        )
    return out


def tenant_isolation(upstream: str, work: Path, *, calls: int, seconds: float) -> dict[str, Any]:
    """The quiet tenant's latency alone, and while the noisy tenant floods past its limit."""
    keys = {"quiet": "mfd_quiet-bench-key", "noisy": "mfd_noisy-bench-key"}
    api_keys = [{"name": n, "sha256": hashlib.sha256(k.encode()).hexdigest(), "tenant": n} for n, k in keys.items()]
    tenants = {"quiet": {}, "noisy": {"limits": {"requestsPerMinute": 600, "burst": 20}}}
    port = free_port()
    config = _config(port, upstream, {"apiKeys": api_keys}, tenants)
    with running(hub_command(config, work, "tenants"), [port], work / "tenants.log"):
        url = f"http://127.0.0.1:{port}/mcp"
        alone = asyncio.run(_quiet(url, keys["quiet"], calls, seconds, None))
        flooded = asyncio.run(_quiet(url, keys["quiet"], calls, seconds, keys["noisy"]))
    return {"quiet_alone": alone, "quiet_while_noisy_floods": flooded}


async def _quiet(url: str, quiet: str, calls: int, seconds: float, noisy: str | None) -> dict[str, Any]:
    stop = asyncio.Event()
    refused = [0]

    async def flood(http: httpx.AsyncClient) -> None:
        assert noisy is not None
        session = await RpcSession(http, url, {"authorization": f"Bearer {noisy}"}).open()
        while not stop.is_set():
            try:
                await session.call("tools/call", {"name": "bench__echo", "arguments": {"text": "x"}})
            except RuntimeError:
                refused[0] += 1

    async with httpx.AsyncClient(timeout=30, trust_env=False) as http:
        floods = [asyncio.create_task(flood(http)) for _ in range(8)] if noisy else []
        try:
            round_, _, _ = await call_round(
                url,
                "bench__echo",
                {"text": "hello"},
                1,
                calls=calls,
                seconds=seconds,
                headers={"authorization": f"Bearer {quiet}"},
            )
        finally:
            stop.set()
            await asyncio.gather(*floods, return_exceptions=True)
    return {
        "calls": round_.calls,
        "p50_ms": round(statistics.median(round_.latencies_ms), 3),
        "noisy_refused": refused[0],
    }
