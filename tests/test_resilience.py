"""Resilience end to end, on real sockets: list changes, hung, killed and flaky upstreams, timeouts, load, restarts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import statistics
import time
from collections import Counter
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest

from connectors.status import UpstreamState
from hub.cli import main
from tests.polling import POLL, until
from tests.scripted import Script, reply
from tests.servers import asgi_body, asgi_lifespan, reserve_port, run_hub, serve
from tests.upstreams import Probe, http_app
from tests.wire import RawClient, initialize, next_data, rpc, sse_messages

pytestmark = pytest.mark.anyio

WAIT = 10.0
WORK = {"name": "work", "description": "Works once fixed.", "inputSchema": {"type": "object"}}


async def upstream_health(http: httpx.AsyncClient, base: str, name: str) -> dict[str, Any]:
    """One upstream's entry in ``GET /health``."""
    response = await http.get(f"{base}/health")
    assert response.status_code == 200, response.text
    entry: dict[str, Any] = next(u for u in response.json()["upstreams"] if u["name"] == name)
    return entry


def error_of(message: dict[str, Any]) -> dict[str, Any]:
    assert "error" in message, message
    error: dict[str, Any] = message["error"]
    return error


def text_of(message: dict[str, Any]) -> str:
    assert "result" in message, message
    return str(message["result"]["content"][0]["text"])


def messages_in(response: httpx.Response) -> list[dict[str, Any]]:
    """Every JSON-RPC message in a reply to a POST, JSON or SSE."""
    kind = response.headers.get("content-type", "")
    if kind.startswith("application/json"):
        return [response.json()]
    if kind.startswith("text/event-stream"):
        return sse_messages(response.text)
    return []


def rebind(port: int) -> socket.socket:
    """A socket bound again to ``port`` (an upstream restarted on the same address)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


# -- 1. list_changed on a call's own reply stream ------------------------------------------------------


async def test_list_changed_on_a_calls_reply_stream_refreshes_the_catalog_and_reaches_clients() -> None:
    async with (
        serve(http_app("alpha")) as alpha,
        run_hub({"alpha": {"url": f"{alpha}/mcp"}}) as (url, _),
        httpx.AsyncClient(timeout=WAIT, trust_env=False) as http,
    ):
        headers = await initialize(http, url)

        async def tool_names() -> set[str]:
            listed = (await http.post(url, json=rpc(9, "tools/list"), headers=headers)).json()
            return {tool["name"] for tool in listed["result"]["tools"]}

        assert "alpha__grown_here" not in await tool_names()
        async with http.stream("GET", url, headers={**headers, "accept": "text/event-stream"}) as stream:
            assert stream.status_code == 200
            call = rpc(2, "tools/call", {"name": "alpha__grow_here", "arguments": {}})
            answer = messages_in(await http.post(url, json=call, headers=headers))
            assert answer and text_of(answer[-1]) == "grown here"
            lines = stream.aiter_lines()
            heard = []
            async with asyncio.timeout(WAIT):
                for _ in range(20):
                    heard.append(json.loads(await next_data(lines)).get("method"))
                    if heard[-1] == "notifications/tools/list_changed":
                        break
            assert heard[-1] == "notifications/tools/list_changed", heard
        assert "alpha__grown_here" in await tool_names()
        grown = rpc(3, "tools/call", {"name": "alpha__grown_here", "arguments": {}})
        assert text_of((await http.post(url, json=grown, headers=headers)).json()) == "I am new too"


# -- 2. a hung upstream -----------------------------------------------------------------------------


class Hung:
    """An upstream (ASGI) that takes every request and answers none until released; it records each message."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.release = asyncio.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await asgi_lifespan(receive, send)
            return
        body = await asgi_body(receive)
        if body:
            self.received.append(json.loads(body))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.release.wait(), WAIT)  # bounded: it ends with the test at the latest
        await send({"type": "http.response.start", "status": 503, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def methods(self) -> list[str]:
        return [str(message.get("method")) for message in self.received]


async def test_a_hung_upstream_holds_up_neither_the_start_nor_the_others_and_initialize_is_never_cancelled() -> None:
    hung = Hung()
    async with (
        serve(hung) as hung_url,
        serve(http_app("alpha")) as alpha,
        httpx.AsyncClient(timeout=WAIT, trust_env=False) as http,
    ):
        servers: dict[str, dict[str, Any]] = {
            "hung": {"url": f"{hung_url}/mcp", "timeouts": {"connect": 5}},
            "alpha": {"url": f"{alpha}/mcp"},
        }
        try:
            started = time.perf_counter()
            async with run_hub(servers, startupGrace=0.5) as (url, hub):
                took = time.perf_counter() - started
                # Up within about the grace (serving included), far short of the 5 s connect timeout.
                assert took < 2.0, took
                assert hub.pool.status("hung").state is UpstreamState.CONNECTING
                await until(lambda: "initialize" in hung.methods(), "the hub asked the hung upstream to initialize")
                async with RawClient(url) as raw:
                    listed = (await raw.stream("tools/list", {}))[-1]["result"]["tools"]
                    assert "alpha__echo" in {tool["name"] for tool in listed}
                    assert text_of(await raw.call("alpha__echo", {"text": "at once"})) == "alpha: at once"
                base = url.removesuffix("/mcp")

                async def hung_is_down() -> bool:
                    return bool((await upstream_health(http, base, "hung"))["state"] == "down")

                await until(hung_is_down, "the hung upstream reported down", limit=WAIT)
                entry = await upstream_health(http, base, "hung")
                assert "no handshake within 5s" in entry["lastError"]
                assert "notifications/cancelled" not in hung.methods(), hung.received
            # Nor when the hub closed with a handshake still waiting.
            assert "notifications/cancelled" not in hung.methods(), hung.received
        finally:
            hung.release.set()


# -- 3. a killed upstream ---------------------------------------------------------------------------


async def test_a_killed_upstream_answers_every_later_call_with_its_name_and_is_marked_down_at_once() -> None:
    sock = reserve_port()
    running = serve(http_app("alpha"), sock=sock)
    alpha = await running.__aenter__()
    stopped = False
    try:
        async with (
            run_hub({"alpha": {"url": f"{alpha}/mcp"}}, healthInterval=30) as (url, hub),
            RawClient(url) as raw,
        ):
            assert text_of(await raw.call("alpha__echo", {"text": "before"})) == "alpha: before"
            await running.__aexit__(None, None, None)
            stopped = True
            # Nothing has told the hub yet (the next health ping is 30 s away) ...
            assert hub.pool.status("alpha").state is UpstreamState.UP
            first = error_of(await raw.call("alpha__echo", {"text": "after"}))
            assert first["code"] == -32010 and "upstream 'alpha'" in first["message"], first
            # ... the failed call itself makes the hub look.
            took = await until(lambda: hub.pool.status("alpha").state is UpstreamState.DOWN, "alpha down", limit=5)
            assert took < 5
            for attempt in range(5):
                # Its names stay known while it is down: never -32602 (unknown tool).
                error = error_of(await raw.call("alpha__echo", {"text": f"later {attempt}"}))
                assert error["code"] == -32010 and "upstream 'alpha'" in error["message"], error
    finally:
        if not stopped:
            await running.__aexit__(None, None, None)
        sock.close()


# -- 4. the circuit breaker -------------------------------------------------------------------------


class Flaky:
    """A scripted upstream's handler: ``tools/call`` fails with HTTP 500 while ``broken``; pings always answer."""

    def __init__(self) -> None:
        self.broken = True
        self.calls = 0
        self.hold: asyncio.Event | None = None
        """When set, each tools/call waits for it (bounded) before answering."""
        self.arrived = asyncio.Event()

    async def __call__(self, message: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
        if message["method"] == "tools/list":
            return httpx.Response(200, json=reply(message, {"tools": [WORK]}))
        if message["method"] != "tools/call":
            return httpx.Response(200, json=reply(message, {}))
        self.calls += 1
        self.arrived.set()
        if self.hold is not None:
            await asyncio.wait_for(self.hold.wait(), WAIT)
        if self.broken:
            return httpx.Response(500, text="broken")
        return httpx.Response(200, json=reply(message, {"content": [{"type": "text", "text": "worked"}]}))


BREAKER = {"failures": 3, "cooldown": 0.5}
CIRCUIT_OPEN = re.compile(r"^upstream 'flaky': circuit open after 3 failures in a row; next try in \d+\.\ds$")


async def admitted(raw: RawClient) -> dict[str, Any]:
    """The reply to the first call the breaker lets through (polled: refused calls change nothing)."""
    started = time.monotonic()
    for _ in range(int(WAIT / POLL)):
        answer = await raw.call("flaky__work", {})
        if "circuit open" not in answer.get("error", {}).get("message", ""):
            return answer
        if time.monotonic() - started > WAIT:
            break
        await asyncio.sleep(POLL)
    raise AssertionError("the breaker let no call through")


async def test_the_breaker_opens_fails_fast_shows_in_health_and_a_trial_closes_or_reopens_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    flaky = Flaky()
    async with (
        serve(Script(flaky)) as upstream,
        run_hub({"flaky": {"url": f"{upstream}/mcp"}}, healthInterval=30, breaker=BREAKER) as (url, hub),
        RawClient(url) as raw,
        httpx.AsyncClient(timeout=WAIT, trust_env=False) as http,
    ):
        base = url.removesuffix("/mcp")

        async def breaker() -> dict[str, Any]:
            state: dict[str, Any] = (await upstream_health(http, base, "flaky"))["breaker"]
            return state

        async def cooled_down() -> bool:
            state = await breaker()
            return state["state"] != "open" or state.get("retryInS") == 0

        for _ in range(3):
            failed = error_of(await raw.call("flaky__work", {}))
            assert failed["code"] == -32010 and failed["message"] == "upstream 'flaky': HTTP 500", failed
        assert flaky.calls == 3

        # Open: calls fail at once, without reaching the upstream.
        timings = []
        for _ in range(20):
            started = time.perf_counter()
            answer = await raw.call("flaky__work", {})
            timings.append(time.perf_counter() - started)
            refused = error_of(answer)
            assert refused["code"] == -32010 and CIRCUIT_OPEN.match(refused["message"]), refused
        assert flaky.calls == 3
        assert statistics.mean(timings) < 0.010, timings
        state = await breaker()
        assert state["state"] == "open" and state["failures"] == 3 and "retryInS" in state, state
        assert hub.pool.status("flaky").state is UpstreamState.UP  # its pings still answer
        assert await asyncio.to_thread(main, ["health", "--url", base]) == 0
        out = capsys.readouterr().out
        assert re.search(r"^flaky\s+streamable-http\s+up\s+open \(3 failures, retry in [\d.]+s\)", out, re.M), out

        # Half-open: one trial goes through; while it runs, the others are still refused.
        flaky.hold = asyncio.Event()
        flaky.arrived.clear()
        await until(cooled_down, "the cooldown passed")
        trial = asyncio.create_task(admitted(raw))
        try:
            await asyncio.wait_for(flaky.arrived.wait(), WAIT)
            assert (await breaker())["state"] == "half-open"
            other = error_of(await raw.call("flaky__work", {}))
            assert other["code"] == -32010 and "circuit open" in other["message"], other
            flaky.hold.set()
            failed_trial = error_of(await asyncio.wait_for(trial, WAIT))
        finally:
            flaky.hold.set()
            if not trial.done():
                trial.cancel()
                await asyncio.gather(trial, return_exceptions=True)
        assert failed_trial["message"] == "upstream 'flaky': HTTP 500"
        assert flaky.calls == 4
        assert (await breaker())["state"] == "open"  # the failed trial opened it again
        refused = error_of(await raw.call("flaky__work", {}))
        assert "circuit open" in refused["message"]

        # Fixed: the next trial succeeds and closes the breaker.
        flaky.hold = None
        flaky.broken = False
        await until(cooled_down, "the second cooldown passed")
        assert text_of(await admitted(raw)) == "worked"
        assert (await breaker())["state"] == "closed"
        assert text_of(await raw.call("flaky__work", {})) == "worked"
        assert flaky.calls == 6


# -- 5. timeouts that fit long work -----------------------------------------------------------------

SHORT_TIMEOUTS = {"timeouts": {"request": 0.5, "maxTotal": 2.5}, "maxConcurrency": 1}


@pytest.mark.parametrize("token", ["mine", None])
async def test_progress_moves_the_request_deadline(token: str | None) -> None:
    params: dict[str, Any] = {"name": "alpha__tick", "arguments": {"seconds": 1.5, "every": 0.1}}
    if token is not None:
        params["_meta"] = {"progressToken": token}
    async with (
        serve(http_app("alpha")) as alpha,
        run_hub({"alpha": {"url": f"{alpha}/mcp", **SHORT_TIMEOUTS}}) as (url, _),
        RawClient(url) as raw,
    ):
        started = time.perf_counter()
        events = await raw.stream("tools/call", params)
        took = time.perf_counter() - started
    assert text_of(events[-1]) == "ticked 15 times"
    assert took >= 1.5
    progress = [e for e in events if e.get("method") == "notifications/progress"]
    if token is None:
        assert progress == []  # the client asked for none
    else:
        assert [p["params"]["progressToken"] for p in progress] == [token] * 15


async def test_a_call_that_reports_no_progress_times_out_is_cancelled_upstream_and_frees_its_slot() -> None:
    probe = Probe()
    async with (
        serve(http_app("alpha", probe)) as alpha,
        run_hub({"alpha": {"url": f"{alpha}/mcp", **SHORT_TIMEOUTS}}) as (url, hub),
        RawClient(url) as raw,
    ):
        started = time.perf_counter()
        answer = await raw.call("alpha__slow", {"seconds": 30})
        took = time.perf_counter() - started
        error = error_of(answer)
        assert error["code"] == -32001, error
        assert error["message"] == "upstream 'alpha': no answer to tools/call within 0.5s"
        assert 0.5 <= took < 2.5, took
        await asyncio.wait_for(probe.slow_cancelled.wait(), WAIT)
        # maxConcurrency is 1: the next call gets the slot back.
        assert text_of(await asyncio.wait_for(raw.call("alpha__echo", {"text": "next"}), WAIT)) == "alpha: next"
        assert hub.pool.in_flight("alpha") == 0


async def test_max_total_caps_a_call_even_while_it_reports_progress() -> None:
    async with (
        serve(http_app("alpha")) as alpha,
        run_hub({"alpha": {"url": f"{alpha}/mcp", **SHORT_TIMEOUTS}}) as (url, hub),
        RawClient(url) as raw,
    ):
        params = {"name": "alpha__tick", "arguments": {"seconds": 8, "every": 0.1}, "_meta": {"progressToken": 1}}
        started = time.perf_counter()
        events = await raw.stream("tools/call", params)
        took = time.perf_counter() - started
        error = error_of(events[-1])
        assert error["code"] == -32001, error
        assert "2.5s maximum" in error["message"] and "upstream 'alpha'" in error["message"], error
        assert 2.5 <= took < 4.5, took
        assert any(e.get("method") == "notifications/progress" for e in events)
        assert text_of(await asyncio.wait_for(raw.call("alpha__echo", {"text": "next"}), WAIT)) == "alpha: next"
        assert hub.pool.in_flight("alpha") == 0


# -- 6. defaults that do not queue an ordinary workload ---------------------------------------------


async def test_the_default_caps_let_32_calls_be_in_flight_together() -> None:
    probe = Probe(expected_arrivals=32)
    async with (
        serve(http_app("alpha", probe)) as alpha,
        run_hub({"alpha": {"url": f"{alpha}/mcp"}}) as (url, _),
        RawClient(url) as raw,
    ):
        # Each call returns only once all 32 have reached the upstream together.
        answers = await asyncio.wait_for(
            asyncio.gather(*(raw.call("alpha__rendezvous", {"text": str(i)}) for i in range(32))), WAIT + 5
        )
    assert [text_of(answer) for answer in answers] == [f"alpha: {i}" for i in range(32)]
    assert probe.arrivals == 32


# -- 7. every request gets exactly one response -----------------------------------------------------


async def exchange(raw: RawClient, request_id: int) -> tuple[int, int, list[dict[str, Any]]]:
    """POST one echo call; returns (its id, the HTTP status, every JSON-RPC response in the reply)."""
    call = rpc(request_id, "tools/call", {"name": "alpha__echo", "arguments": {"text": str(request_id)}})
    response = await raw.http.post(raw.url, json=call, headers=raw.headers)
    responses = [m for m in messages_in(response) if "id" in m and ("result" in m or "error" in m)]
    return request_id, response.status_code, responses


async def test_every_request_gets_exactly_one_response_while_the_upstream_restarts() -> None:
    sessions, calls = 8, 50
    phases = [range(0, 15), range(15, 25), range(25, 35), range(35, 40), range(40, 50)]
    first = reserve_port()
    port = first.getsockname()[1]
    running = serve(http_app("alpha"), sock=first)
    alpha = await running.__aenter__()
    stopped = False
    try:
        # The restarted upstream joins ``upstreams``, so it stops after the hub: no stream is left open to it.
        async with AsyncExitStack() as upstreams, AsyncExitStack() as stack:
            url, hub = await stack.enter_async_context(run_hub({"alpha": {"url": f"{alpha}/mcp"}}))
            raws = [await stack.enter_async_context(RawClient(url)) for _ in range(sessions)]
            tasks: list[asyncio.Task[tuple[int, int, list[dict[str, Any]]]]] = []

            def fire(phase: range) -> list[asyncio.Task[tuple[int, int, list[dict[str, Any]]]]]:
                fired = [
                    asyncio.create_task(exchange(raw, 1000 * number + k))
                    for number, raw in enumerate(raws)
                    for k in phase
                ]
                tasks.extend(fired)
                return fired

            try:
                fire(phases[0])  # while it serves
                stopping = asyncio.create_task(running.__aexit__(None, None, None))
                fire(phases[1])  # while it stops
                await asyncio.wait_for(stopping, WAIT)
                stopped = True
                fire(phases[2])  # while it is gone
                await until(lambda: hub.pool.status("alpha").state is UpstreamState.DOWN, "alpha down")
                await asyncio.wait_for(asyncio.wait(tasks), WAIT)
                await upstreams.enter_async_context(serve(http_app("alpha"), sock=rebind(port)))
                fire(phases[3])  # while the hub reconnects
                await until(lambda: hub.pool.status("alpha").state is UpstreamState.UP, "alpha up again")
                last = fire(phases[4])  # once it is back
                await asyncio.wait_for(asyncio.wait(tasks), WAIT)
            finally:
                for task in tasks:
                    task.cancel()
                outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        if not stopped:
            await running.__aexit__(None, None, None)
        first.close()

    expected = [1000 * number + k for number in range(sessions) for k in range(calls)]
    problems = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    assert problems == []
    seen: Counter[Any] = Counter()
    for outcome in outcomes:
        assert not isinstance(outcome, BaseException)
        request_id, status, responses = outcome
        assert status == 200, (request_id, status, responses)
        assert [r["id"] for r in responses] == [request_id], (request_id, responses)
        seen.update(r["id"] for r in responses)
    assert sorted(seen) == sorted(expected)  # none missing, none foreign
    assert set(seen.values()) == {1}  # none twice
    for task in last:
        request_id, _, responses = task.result()
        assert text_of(responses[0]) == f"alpha: {request_id}"
