"""The merged catalog: public names and URIs map back to their upstream, collisions resolve in config order."""

from __future__ import annotations

import re
from typing import Any

import pytest

from connectors.status import Listing
from hub.catalog import Catalog, Entry, Source
from hub.errors import InvalidParams, UnknownName, UnknownResource

Item = dict[str, Any]


def tool(name: str, **fields: Any) -> Item:
    return {"name": name, "inputSchema": {"type": "object"}, **fields}


def source(
    name: str,
    prefix: str,
    *,
    tools: tuple[Item, ...] = (),
    prompts: tuple[Item, ...] = (),
    resources: tuple[Item, ...] = (),
    templates: tuple[Item, ...] = (),
) -> Source:
    listing = Listing(tools=tools, prompts=prompts, resources=resources, resource_templates=templates)
    return Source(name, prefix, listing)


def names(catalog: Catalog) -> list[str]:
    return [item["name"] for item in catalog.items("tools")]


# -- names ---------------------------------------------------------------------------------------


def test_namespaced_tools_and_prompts_map_back_to_their_upstream() -> None:
    catalog = Catalog()
    catalog.rebuild(
        [
            source("alpha", "a", tools=(tool("search"),), prompts=({"name": "greet"},)),
            source("beta", "b", tools=(tool("search"),)),
        ]
    )

    assert names(catalog) == ["a__search", "b__search"]
    assert catalog.tool("a__search") == Entry("alpha", "search")
    assert catalog.tool("b__search") == Entry("beta", "search")
    assert catalog.prompt("a__greet") == Entry("alpha", "greet")
    assert [item["name"] for item in catalog.items("prompts")] == ["a__greet"]


def test_the_configured_separator_joins_prefix_and_name() -> None:
    catalog = Catalog(separator=".")
    catalog.rebuild([source("alpha", "a", tools=(tool("search"),))])

    assert catalog.tool("a.search") == Entry("alpha", "search")


def test_an_unknown_tool_or_prompt_name_is_refused() -> None:
    catalog = Catalog()
    catalog.rebuild([source("alpha", "a", tools=(tool("search"),), prompts=({"name": "greet"},))])

    with pytest.raises(UnknownName):
        catalog.tool("search")
    with pytest.raises(UnknownName):
        catalog.tool("a__greet")
    with pytest.raises(UnknownName):
        catalog.prompt("a__search")


def test_a_pass_through_collision_keeps_the_name_for_the_first_upstream() -> None:
    catalog = Catalog()
    catalog.rebuild([source("alpha", "", tools=(tool("search"),)), source("beta", "", tools=(tool("search"),))])

    first, second = names(catalog)
    assert first == "search"
    assert catalog.tool("search") == Entry("alpha", "search")
    assert re.fullmatch(r"search_[0-9a-f]{8}", second)
    assert catalog.tool(second) == Entry("beta", "search")
    [note] = catalog.collisions
    assert "beta" in note
    assert second in note


def test_the_collision_winner_follows_the_upstream_order() -> None:
    catalog = Catalog()
    catalog.rebuild([source("beta", "", tools=(tool("search"),)), source("alpha", "", tools=(tool("search"),))])

    assert catalog.tool("search") == Entry("beta", "search")


def test_a_tool_listed_twice_by_one_upstream_is_served_once() -> None:
    catalog = Catalog()
    catalog.rebuild([source("alpha", "a", tools=(tool("search"), tool("search")))])

    assert names(catalog) == ["a__search"]
    assert catalog.collisions == []
    assert catalog.count("alpha") == 1


def test_a_tool_without_a_name_is_skipped() -> None:
    catalog = Catalog()
    catalog.rebuild([source("alpha", "a", tools=({"inputSchema": {}}, tool(""), tool("search")))])

    assert names(catalog) == ["a__search"]


def test_other_fields_of_a_tool_are_kept_unchanged() -> None:
    original = tool(
        "search",
        description="Find things",
        inputSchema={"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
        annotations={"readOnlyHint": True},
        _meta={"vendor/x": [1, 2]},
    )
    catalog = Catalog()
    catalog.rebuild([source("alpha", "a", tools=(original,))])

    [served] = catalog.items("tools")
    assert served == {**original, "name": "a__search"}
    assert original["name"] == "search"


# -- resources -----------------------------------------------------------------------------------


def test_the_same_resource_uri_on_two_prefixed_upstreams_maps_back_to_each() -> None:
    resource = {"uri": "file:///notes.txt", "name": "notes"}
    catalog = Catalog()
    catalog.rebuild([source("alpha", "a", resources=(resource,)), source("beta", "b", resources=(resource,))])

    uris = [item["uri"] for item in catalog.items("resources")]
    assert uris == ["manifold://a/file:///notes.txt", "manifold://b/file:///notes.txt"]
    assert catalog.resource(uris[0]) == Entry("alpha", "file:///notes.txt")
    assert catalog.resource(uris[1]) == Entry("beta", "file:///notes.txt")
    assert catalog.collisions == []


def test_a_uri_expanded_from_a_template_goes_to_the_upstream_of_its_prefix() -> None:
    template = {"uriTemplate": "file:///{path}", "name": "file"}
    catalog = Catalog()
    catalog.rebuild([source("alpha", "a", templates=(template,)), source("beta", "b", templates=(template,))])

    assert [item["uriTemplate"] for item in catalog.items("resourceTemplates")] == [
        "manifold://a/file:///{path}",
        "manifold://b/file:///{path}",
    ]
    assert catalog.resource("manifold://b/file:///docs/readme.md") == Entry("beta", "file:///docs/readme.md")
    assert catalog.resource("manifold://a/file:///x") == Entry("alpha", "file:///x")


def test_a_pass_through_resource_listed_by_two_upstreams_goes_to_the_first() -> None:
    resource = {"uri": "file:///notes.txt", "name": "notes"}
    catalog = Catalog()
    catalog.rebuild([source("alpha", "", resources=(resource,)), source("beta", "", resources=(resource,))])

    assert [item["uri"] for item in catalog.items("resources")] == ["file:///notes.txt"]
    assert catalog.resource("file:///notes.txt") == Entry("alpha", "file:///notes.txt")
    assert len(catalog.collisions) == 1


@pytest.mark.parametrize(
    "uri",
    ["manifold://c/file:///x", "manifold://a/", "manifold://a", "file:///notes.txt"],
    ids=["unknown-prefix", "empty-original", "no-slash", "not-namespaced"],
)
def test_a_uri_no_upstream_owns_is_refused(uri: str) -> None:
    catalog = Catalog()
    catalog.rebuild([source("alpha", "a", resources=({"uri": "file:///notes.txt", "name": "notes"},))])

    with pytest.raises(UnknownResource):
        catalog.resource(uri)


# -- rebuilding ----------------------------------------------------------------------------------


def test_a_rebuild_returns_the_kinds_that_changed() -> None:
    catalog = Catalog()
    first = catalog.rebuild([source("alpha", "a", tools=(tool("search"),))])
    second = catalog.rebuild([source("alpha", "a", tools=(tool("search"),), prompts=({"name": "greet"},))])
    third = catalog.rebuild([source("alpha", "a", tools=(tool("search", description="new"),))])

    assert first == {"tools"}
    assert second == {"prompts"}
    assert third == {"tools", "prompts"}


def test_an_identical_rebuild_changes_nothing() -> None:
    sources = [source("alpha", "a", tools=(tool("search"),), resources=({"uri": "file:///n", "name": "n"},))]
    catalog = Catalog()
    catalog.rebuild(sources)
    version = catalog.version

    assert catalog.rebuild(sources) == set()
    assert catalog.version == version


def test_a_rebuild_replaces_the_old_names() -> None:
    catalog = Catalog()
    catalog.rebuild([source("alpha", "a", tools=(tool("search"),))])
    catalog.rebuild([source("alpha", "a", tools=(tool("fetch"),))])

    assert catalog.tool("a__fetch") == Entry("alpha", "fetch")
    with pytest.raises(UnknownName):
        catalog.tool("a__search")


def test_count_gives_what_each_upstream_contributes() -> None:
    catalog = Catalog()
    catalog.rebuild(
        [
            source("alpha", "", tools=(tool("search"), tool("fetch")), prompts=({"name": "greet"},)),
            source("beta", "", tools=(tool("search"),)),
        ]
    )

    assert catalog.count("alpha") == 2
    assert catalog.count("alpha", "prompts") == 1
    assert catalog.count("beta", "tools") == 1
    assert catalog.count("beta", "prompts") == 0
    assert catalog.count("gamma") == 0


# -- pages ---------------------------------------------------------------------------------------


def test_pages_follow_next_cursor_to_the_end() -> None:
    catalog = Catalog(page_size=2)
    catalog.rebuild([source("alpha", "a", tools=tuple(tool(f"t{i}") for i in range(5)))])

    seen: list[list[str]] = []
    cursor: object = None
    for _ in range(10):  # bounded: a cursor that never ends fails the test instead of hanging it
        page = catalog.page("tools", cursor)
        seen.append([item["name"] for item in page["tools"]])
        cursor = page.get("nextCursor")
        if cursor is None:
            break

    assert seen == [["a__t0", "a__t1"], ["a__t2", "a__t3"], ["a__t4"]]


def test_a_list_that_fits_one_page_has_no_next_cursor() -> None:
    catalog = Catalog(page_size=2)
    catalog.rebuild([source("alpha", "a", tools=(tool("one"), tool("two")))])

    assert catalog.page("tools") == {"tools": catalog.items("tools")}


@pytest.mark.parametrize("cursor", ["!!!", "", "tools:1", 2, ["x"]], ids=["garbage", "empty", "plain", "int", "list"])
def test_a_cursor_the_hub_did_not_issue_is_refused(cursor: object) -> None:
    catalog = Catalog(page_size=1)
    catalog.rebuild([source("alpha", "a", tools=(tool("one"), tool("two")))])

    with pytest.raises(InvalidParams):
        catalog.page("tools", cursor)


def test_a_cursor_for_another_list_is_refused() -> None:
    catalog = Catalog(page_size=1)
    catalog.rebuild([source("alpha", "a", tools=(tool("one"), tool("two")), prompts=({"name": "p1"}, {"name": "p2"}))])
    prompts_cursor = catalog.page("prompts")["nextCursor"]

    with pytest.raises(InvalidParams):
        catalog.page("tools", prompts_cursor)
