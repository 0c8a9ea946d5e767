"""The session actor on its own: handshake through dispatch, calls as children, cancellation, alarms."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from connectors.engine import CallHooks
from connectors.jsonrpc import Kind, Message
from connectors.pool import ConnectorPool
from connectors.status import Listing
from connectors.upstream_sessions import UpstreamSessions
from hub.catalog import Catalog, Source
from hub.context import ServerFacts
from hub.errors import SessionNotFound
from hub.session import Session
from hub.session_services import EndReason, SessionServices, SessionState
from hub.views import CatalogView
from tests.wire import INIT, WAIT, rpc

pytestmark = pytest.mark.anyio


class SlowUpstreams(UpstreamSessions):
    """Upstream access whose calls wait until released, or are cancelled."""

    def __init__(self, pool: ConnectorPool) -> None:
        super().__init__(pool, {})
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.release = asyncio.Event()
        self.closed = False

    async def request(
        self, upstream: str, method: str, params: Message | None = None, *, hooks: CallHooks | None = None
    ) -> Message:
        self.started.set()
        try:
            await asyncio.wait_for(self.release.wait(), WAIT)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return {"content": [{"type": "text", "text": f"{upstream}:{(params or {}).get('name')}"}]}

    async def aclose(self) -> None:
        self.closed = True


def catalog() -> Catalog:
    built = Catalog()
    built.rebuild([Source("up", "up", Listing(tools=({"name": "t", "inputSchema": {"type": "object"}},)))])
    return built


@asynccontextmanager
async def actor(**timeouts: float) -> AsyncIterator[tuple[Session, SlowUpstreams, asyncio.Event]]:
    async with ConnectorPool([]) as pool:
        upstreams = SlowUpstreams(pool)
        recorded = asyncio.Event()

        def open_upstreams(**_: Any) -> UpstreamSessions:
            return upstreams

        async def record(session: Any) -> None:
            recorded.set()

        services = SessionServices(
            open_upstreams=open_upstreams,
            server=ServerFacts(info={"name": "test"}, capabilities=dict),
            run="r1",
            idle_timeout=timeouts.get("idle", 30.0),
            unused_timeout=timeouts.get("unused", 30.0),
            record=record,
        )
        session = Session("s" * 32, services, CatalogView(catalog()))
        ended = asyncio.Event()

        async def on_end(done: Session) -> None:
            ended.set()

        task = asyncio.create_task(session.run(on_end))
        try:
            yield session, upstreams, ended
        finally:
            session.close(EndReason.SHUTDOWN)
            await asyncio.wait_for(task, WAIT)


async def reply(session: Session, message: Message) -> Message:
    stream = session.submit(Kind.REQUEST, message)
    assert stream is not None
    await asyncio.wait_for(stream.wait_finished(), WAIT)
    events = stream.buffered()
    assert events and events[-1].reply
    result: Message = json.loads(events[-1].data)
    return result


async def initialized(session: Session) -> None:
    result = await reply(session, rpc(1, "initialize", INIT))
    assert result["result"]["protocolVersion"] == "2025-11-25"


async def test_initialize_goes_through_dispatch_and_records_the_session() -> None:
    async with actor() as (session, _, _):
        assert not session.initialized
        refused = await reply(session, rpc(2, "tools/list"))
        assert refused["error"] == {"code": -32600, "message": "initialize first"}
        await initialized(session)
        assert session.protocol_version == "2025-11-25" and session.client_info == {"name": "t", "version": "0"}
        again = await reply(session, rpc(3, "initialize", INIT))
        assert again["error"]["message"] == "this session is initialized already"
        listed = await reply(session, rpc(4, "tools/list"))
        assert [tool["name"] for tool in listed["result"]["tools"]] == ["up__t"]


async def test_a_cancelled_call_gets_no_reply_and_its_upstream_call_is_cancelled() -> None:
    async with actor() as (session, upstreams, _):
        await initialized(session)
        stream = session.submit(Kind.REQUEST, rpc(7, "tools/call", {"name": "up__t"}))
        assert stream is not None
        await asyncio.wait_for(upstreams.started.wait(), WAIT)
        assert session.calls_in_flight == 1
        session.submit(
            Kind.NOTIFICATION, {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 7}}
        )
        await asyncio.wait_for(upstreams.cancelled.wait(), WAIT)
        await asyncio.wait_for(stream.wait_finished(), WAIT)
        assert stream.buffered() == []
        assert session.calls_in_flight == 0


async def test_a_request_id_in_flight_twice_is_refused_and_the_first_goes_on() -> None:
    async with actor() as (session, upstreams, _):
        await initialized(session)
        first = session.submit(Kind.REQUEST, rpc(9, "tools/call", {"name": "up__t"}))
        await asyncio.wait_for(upstreams.started.wait(), WAIT)
        second = await reply(session, rpc(9, "ping"))
        assert second["error"]["message"] == "request id 9 is already in flight"
        upstreams.release.set()
        assert first is not None
        await asyncio.wait_for(first.wait_finished(), WAIT)
        assert json.loads(first.buffered()[-1].data)["result"]["content"][0]["text"] == "up:t"


async def test_a_call_the_drain_cuts_short_still_gets_one_error_reply() -> None:
    async with actor() as (session, upstreams, _):
        await initialized(session)
        stream = session.submit(Kind.REQUEST, rpc(5, "tools/call", {"name": "up__t"}))
        assert stream is not None
        await asyncio.wait_for(upstreams.started.wait(), WAIT)
        session.stop_calls()
        await asyncio.wait_for(stream.wait_finished(), WAIT)
        replies = [json.loads(e.data) for e in stream.buffered()]
        assert [r["error"]["code"] for r in replies] == [-32000]
        assert "shutting down" in replies[0]["error"]["message"]


async def test_an_idle_session_expires_closes_its_upstreams_and_refuses_messages() -> None:
    async with actor(idle=0.1) as (session, upstreams, ended):
        await initialized(session)
        await reply(session, rpc(2, "ping"))
        await asyncio.wait_for(ended.wait(), WAIT)
        assert session.state is SessionState.CLOSED and session.end_reason is EndReason.EXPIRED
        assert upstreams.closed
        with pytest.raises(SessionNotFound):
            session.submit(Kind.REQUEST, rpc(3, "ping"))


async def test_a_session_never_used_expires_sooner_than_an_idle_one() -> None:
    async with actor(idle=30, unused=0.1) as (session, _, ended):
        await initialized(session)
        await asyncio.wait_for(ended.wait(), WAIT)  # within WAIT, far less than the 30 s idle timeout
        assert not session.used


async def test_a_call_in_flight_keeps_the_session_alive_past_its_idle_timeout() -> None:
    async with actor(idle=0.1) as (session, upstreams, ended):
        await initialized(session)
        stream = session.submit(Kind.REQUEST, rpc(4, "tools/call", {"name": "up__t"}))
        await asyncio.wait_for(upstreams.started.wait(), WAIT)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(ended.wait()), 0.5)  # five idle timeouts: still alive
        upstreams.release.set()
        assert stream is not None
        await asyncio.wait_for(stream.wait_finished(), WAIT)
        await asyncio.wait_for(ended.wait(), WAIT)
