"""Listeners of subscriptions/listen, one module: who hears what, and the bound on what waits."""

from __future__ import annotations

import asyncio

import pytest

from hub.context import Caller
from hub.errors import RateLimited, SessionLimit
from hub.listen import QUEUE_SIZE, Listener, Listeners
from hub.views import EVERYTHING, Globs, ViewRule

pytestmark = pytest.mark.anyio

ANN, BOB = Caller("key:ann", "acme"), Caller("key:bob", "acme")
NARROW = ViewRule(tools=Globs(allow=("a__*",)))


async def test_list_changes_reach_the_listeners_of_the_view_that_changed_for_what_they_chose() -> None:
    listeners = Listeners()
    tools = Listener(ANN, EVERYTHING, 1, frozenset({"toolsListChanged"}))
    prompts = Listener(ANN, EVERYTHING, 2, frozenset({"promptsListChanged"}))
    narrow = Listener(BOB, NARROW, 3, frozenset({"toolsListChanged", "resourcesListChanged"}))
    for listener in (tools, prompts, narrow):
        listeners.add(listener)
    listeners.lists_changed(EVERYTHING, {"tools", "resourceTemplates"})
    first = await asyncio.wait_for(tools.next(), 1.0)
    assert first is not None and first["method"] == "notifications/tools/list_changed"
    assert first["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == 1
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(prompts.next(), 0.01)  # nothing for it: prompts did not change
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(narrow.next(), 0.01)  # another view: its own change comes from its own rebuild
    listeners.lists_changed(NARROW, {"resourceTemplates"})
    templates = await asyncio.wait_for(narrow.next(), 1.0)
    assert templates is not None and templates["method"] == "notifications/resources/list_changed"


async def test_resource_updates_reach_only_the_caller_or_tenant_subscribed() -> None:
    listeners = Listeners()
    ann, bob = Listener(ANN, EVERYTHING, 1, frozenset()), Listener(BOB, EVERYTHING, 2, frozenset())
    ann.uris.add("manifold://a/x")
    bob.uris.add("manifold://a/x")
    listeners.add(ann)
    listeners.add(bob)
    update = {"method": "notifications/resources/updated", "params": {"uri": "manifold://a/x"}}
    listeners.resource_updated("manifold://a/x", update, caller=ANN)
    assert (await asyncio.wait_for(ann.next(), 1.0)) is not None
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(bob.next(), 0.01)
    listeners.resource_updated("manifold://a/x", update, tenant="acme")  # a shared upstream session: the tenant
    assert (await asyncio.wait_for(ann.next(), 1.0)) is not None and (
        await asyncio.wait_for(bob.next(), 1.0)
    ) is not None
    listeners.resource_updated("manifold://a/other", update, tenant="acme")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ann.next(), 0.01)


async def test_a_listener_that_falls_too_far_behind_is_ended_not_grown() -> None:
    listener = Listener(ANN, EVERYTHING, 1, frozenset({"toolsListChanged"}))
    for _ in range(QUEUE_SIZE + 5):
        listener.put("notifications/tools/list_changed")
    assert listener.overflowed and listener.ended
    assert await asyncio.wait_for(listener.next(), 1.0) is None


def test_listeners_are_bounded_in_all_and_per_caller() -> None:
    listeners = Listeners(max_total=3, max_per_caller=2)
    for n in range(2):
        listeners.admit(ANN)
        listeners.add(Listener(ANN, EVERYTHING, n, frozenset()))
    with pytest.raises(RateLimited):
        listeners.admit(ANN)
    listeners.admit(BOB)
    listeners.add(Listener(BOB, EVERYTHING, 9, frozenset()))
    with pytest.raises(SessionLimit):
        listeners.admit(Caller("key:cy", "zeta"))
