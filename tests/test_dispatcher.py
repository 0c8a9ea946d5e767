"""The dispatcher: each method to its handler, names mapped through the caller's view."""

from __future__ import annotations

from typing import Any

import pytest

from connectors.engine import CallHooks
from connectors.jsonrpc import Message
from connectors.status import Listing
from hub.catalog import Catalog, Source
from hub.context import ANONYMOUS, RequestContext, ServerFacts
from hub.dispatcher import HANDLERS, dispatch, negotiate
from hub.errors import InvalidParams, InvalidRequest, MethodNotFound, UnknownName
from hub.tasks import TaskTable
from hub.views import CatalogView, Globs, ViewRule

pytestmark = pytest.mark.anyio


class Recorder:
    """Upstream access that records what handlers ask of it."""

    def __init__(self, result: Message | None = None) -> None:
        self.calls: list[tuple[str, str, Message | None]] = []
        self.result = result or {}
        self.level: str | None = None

    async def request(
        self, upstream: str, method: str, params: Message | None = None, *, hooks: CallHooks | None = None
    ) -> Message:
        self.calls.append((upstream, method, params))
        return dict(self.result)

    def is_shared(self, upstream: str) -> bool:
        return False

    async def notify_all(self, method: str, params: Message | None = None) -> None:
        return None

    async def set_log_level(self, level: str) -> None:
        self.level = level


def context(upstreams: Recorder, rule: ViewRule | None = None, **extra: Any) -> RequestContext:
    catalog = Catalog()
    catalog.rebuild(
        [
            Source(
                "notes",
                "notes",
                Listing(
                    tools=({"name": "add", "inputSchema": {}}, {"name": "drop", "inputSchema": {}}),
                    prompts=({"name": "greet"},),
                    resource_templates=({"uriTemplate": "note://{id}", "name": "n"},),
                ),
            )
        ]
    )
    return RequestContext(
        caller=ANONYMOUS,
        era="session",
        protocol_version="2025-11-25",
        client_capabilities={},
        view=CatalogView(catalog, rule) if rule is not None else CatalogView(catalog),
        upstreams=upstreams,
        emit=lambda message: None,
        hooks=lambda upstream, params: CallHooks(),
        subscriptions=set(),
        still_held=lambda uri, tenant: False,
        tasks=TaskTable(),
        server=ServerFacts(info={"name": "manifold"}, capabilities=lambda: {"tools": {}}),
        **extra,
    )


async def test_a_tool_call_goes_to_its_upstream_under_the_original_name() -> None:
    upstreams = Recorder({"content": []})
    await dispatch(context(upstreams), "tools/call", {"name": "notes__add", "arguments": {"x": 1}})
    assert upstreams.calls == [("notes", "tools/call", {"name": "add", "arguments": {"x": 1}})]


async def test_names_outside_the_callers_view_never_reach_an_upstream() -> None:
    upstreams = Recorder()
    rule = ViewRule(tools=Globs(deny=("*drop",)), prompts=Globs(allow=()))
    ctx = context(upstreams, rule)
    with pytest.raises(UnknownName, match="unknown tool: notes__drop"):
        await dispatch(ctx, "tools/call", {"name": "notes__drop"})
    with pytest.raises(UnknownName):
        await dispatch(ctx, "completion/complete", {"ref": {"type": "ref/prompt", "name": "notes__greet"}})
    assert upstreams.calls == []
    listed = await dispatch(ctx, "tools/list", {})
    assert [tool["name"] for tool in listed["tools"]] == ["notes__add"]


async def test_completion_maps_its_reference_back() -> None:
    upstreams = Recorder({"completion": {"values": []}})
    ctx = context(upstreams)
    await dispatch(ctx, "completion/complete", {"ref": {"type": "ref/resource", "uri": "manifold://notes/note://{id}"}})
    assert upstreams.calls[0][2] == {"ref": {"type": "ref/resource", "uri": "note://{id}"}}


async def test_initialize_needs_a_provider_that_holds_a_handshake() -> None:
    with pytest.raises(InvalidRequest, match="not part of this protocol era"):
        await dispatch(context(Recorder()), "initialize", {"protocolVersion": "2025-11-25"})


async def test_initialize_negotiates_through_the_handshake() -> None:
    class Handshake:
        initialized = False
        seen: tuple[str, Message, Message] | None = None

        async def negotiated(self, version: str, client_info: Message, capabilities: Message) -> None:
            self.seen = (version, client_info, capabilities)

    handshake = Handshake()
    ctx = context(Recorder(), handshake=handshake)
    result = await dispatch(ctx, "initialize", {"protocolVersion": "2099-01-01", "capabilities": {"roots": {}}})
    assert result == {
        "protocolVersion": "2025-11-25",
        "capabilities": {"tools": {}},
        "serverInfo": {"name": "manifold"},
    }
    assert handshake.seen == ("2025-11-25", {}, {"roots": {}})
    with pytest.raises(InvalidParams):
        await dispatch(ctx, "initialize", {})


def test_known_versions_are_kept_and_others_get_the_latest() -> None:
    assert negotiate("2025-03-26") == "2025-03-26"
    assert negotiate("1999-01-01") == "2025-11-25"


async def test_unknown_methods_bad_params_and_log_levels() -> None:
    upstreams = Recorder()
    ctx = context(upstreams)
    with pytest.raises(MethodNotFound, match="method not found: tools/frobnicate"):
        await dispatch(ctx, "tools/frobnicate", {})
    with pytest.raises(InvalidParams, match=r"params\.name"):
        await dispatch(ctx, "tools/call", {})
    with pytest.raises(InvalidParams, match=r"params\.level"):
        await dispatch(ctx, "logging/setLevel", {"level": "loud"})
    await dispatch(ctx, "logging/setLevel", {"level": "error"})
    assert upstreams.level == "error"


def test_every_method_the_hub_declares_has_a_handler() -> None:
    for method in ("initialize", "ping", "tools/list", "tools/call", "prompts/get", "resources/read", "tasks/get"):
        assert method in HANDLERS
