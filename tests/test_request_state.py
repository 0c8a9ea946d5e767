"""Attacks on the ``requestState`` of stateless calls: forged, tampered, replayed, expired, someone else's.

Each attack runs against a hub serving real sockets, and the victim's call
must still complete afterwards.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from hub.context import Caller
from hub.errors import BadRequestState
from hub.request_state import Claims, StateSeal
from hub.runtime import Hub
from tests.modern_wire import post, request
from tests.servers import run_config, serve
from tests.upstreams import Probe, http_app
from tests.wire import WAIT

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

KEYS = {"ann": "key-ann-0123456789abcdef", "bob": "key-bob-0123456789abcdef", "eve": "key-eve-0123456789abcdef"}
TENANT_OF = {"ann": "acme", "bob": "acme", "eve": "zeta"}
ANN = Caller("key:ann", "acme")


# -- the seal on its own -------------------------------------------------------------------------


def test_a_sealed_state_opens_only_for_its_caller_unchanged_and_in_time() -> None:
    seal = StateSeal()
    claims = Claims("call-1", "round-1", "tools/call", "alpha__ask_user", time.time() + 60)
    state = seal.seal(claims, ANN)
    assert seal.open(state, ANN) == claims
    flipped = state[:10] + ("A" if state[10] != "A" else "B") + state[11:]
    for bad in (flipped, state[:-2], "", "x" * 5000, 42, None, state + "=="):
        with pytest.raises(BadRequestState):
            seal.open(bad, ANN)
    for other in (Caller("key:bob", "acme"), Caller("key:ann", "zeta"), Caller()):
        with pytest.raises(BadRequestState):
            seal.open(state, other)
    with pytest.raises(BadRequestState, match="expired"):
        seal.open(state, ANN, now=time.time() + 61)
    with pytest.raises(BadRequestState):
        StateSeal().open(state, ANN)  # another hub's key


# -- against the running hub ---------------------------------------------------------------------


@asynccontextmanager
async def hub(probe: Probe, **settings: Any) -> AsyncIterator[tuple[str, Hub]]:
    async with serve(http_app("alpha", probe)) as up:
        keys = [
            {"name": n, "sha256": hashlib.sha256(k.encode()).hexdigest(), "tenant": TENANT_OF[n]}
            for n, k in KEYS.items()
        ]
        document = {
            "hub": settings,
            "mcpServers": {"alpha": {"url": f"{up}/mcp"}},
            "auth": {"apiKeys": keys},
            "tenants": {"acme": {}, "zeta": {}},
        }
        async with run_config(document) as served:
            yield served


class Asker:
    """One principal's stateless requests."""

    def __init__(self, http: httpx.AsyncClient, url: str, who: str) -> None:
        self.http, self.url, self.who = http, url, who
        self.ids = iter(range(1, 1000))

    async def send(self, tool: str, arguments: dict[str, Any], **extra: Any) -> tuple[int, dict[str, Any]]:
        message, headers = request(next(self.ids), "tools/call", {"name": tool, "arguments": arguments, **extra})
        response, replies = await post(
            self.http, self.url, message, {**headers, "authorization": f"Bearer {KEYS[self.who]}"}
        )
        return response.status_code, replies[-1]

    async def ask(self) -> dict[str, Any]:
        status, reply = await self.send("alpha__ask_user", {"question": "colour?"})
        assert status == 200 and reply["result"]["resultType"] == "input_required", reply
        return dict(reply["result"])

    async def answer(self, asked: dict[str, Any], colour: str = "red", **overrides: Any) -> tuple[int, dict[str, Any]]:
        tool = overrides.pop("tool", "alpha__ask_user")
        responses = {key: {"action": "accept", "content": {"colour": colour}} for key in asked["inputRequests"]}
        extra = {"inputResponses": responses, "requestState": asked["requestState"], **overrides}
        return await self.send(tool, {"question": "colour?"}, **extra)


def refused(outcome: tuple[int, dict[str, Any]]) -> bool:
    status, reply = outcome
    return status == 400 and reply.get("error", {}).get("code") == -32602


async def test_tampered_foreign_and_misdirected_states_are_refused_and_the_owner_still_finishes() -> None:
    probe = Probe()
    async with hub(probe) as (url, served), httpx.AsyncClient(timeout=WAIT, trust_env=False) as http:
        ann, bob, eve = Asker(http, url, "ann"), Asker(http, url, "bob"), Asker(http, url, "eve")
        asked = await ann.ask()
        (key,) = asked["inputRequests"]
        assert asked["inputRequests"][key]["method"] == "elicitation/create"
        state = asked["requestState"]
        tampered = state[:-3] + ("A" if state[-3] != "A" else "B") + state[-2:]
        assert refused(await ann.answer({**asked, "requestState": tampered}))
        assert refused(await bob.answer(asked))  # the same tenant, another principal
        assert refused(await eve.answer(asked))  # another tenant
        assert refused(await ann.answer(asked, tool="alpha__ask_model"))  # the state of another request
        assert served.modern.calls.parked == 1  # none of that disturbed the parked call
        status, reply = await ann.answer(asked, "green")
        assert status == 200 and reply["result"]["content"][0]["text"] == "alpha: the user chose green"
        assert not probe.refused


async def test_a_used_state_is_refused_when_replayed() -> None:
    probe = Probe()
    async with hub(probe) as (url, _), httpx.AsyncClient(timeout=WAIT, trust_env=False) as http:
        ann = Asker(http, url, "ann")
        asked = await ann.ask()
        status, reply = await ann.answer(asked, "blue")
        assert status == 200 and reply["result"]["content"][0]["text"] == "alpha: the user chose blue"
        assert refused(await ann.answer(asked, "black"))


async def test_a_retry_that_never_comes_gets_the_upstream_an_error_and_its_state_expires() -> None:
    probe = Probe()
    async with hub(probe, inputTimeout=0.5) as (url, served), httpx.AsyncClient(timeout=WAIT, trust_env=False) as http:
        ann = Asker(http, url, "ann")
        asked = await ann.ask()
        await asyncio.wait_for(probe.elicit_refused.wait(), WAIT)
        assert "did not retry" in probe.refused[0]
        assert refused(await ann.answer(asked))
        assert served.modern.calls.parked == 0


async def test_parked_calls_are_bounded_per_principal_and_the_upstream_hears_it() -> None:
    probe = Probe()
    async with hub(probe, maxWaitingCalls=16) as (url, _), httpx.AsyncClient(timeout=WAIT, trust_env=False) as http:
        ann, bob = Asker(http, url, "ann"), Asker(http, url, "bob")
        first = await ann.ask()  # a principal may park a sixteenth of the hub's bound: one
        status, reply = await ann.send("alpha__ask_user", {"question": "again?"})
        assert status == 200 and reply["result"]["content"][0]["text"].startswith("refused: too many calls")
        assert (await bob.ask())["resultType"] == "input_required"  # another principal is not held up
        status, reply = await ann.answer(first)
        assert reply["result"]["content"][0]["text"] == "alpha: the user chose red"
