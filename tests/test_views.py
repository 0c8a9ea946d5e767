"""Catalog views: what a rule lets a caller see, answered exactly like what does not exist."""

from __future__ import annotations

import fnmatch

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.status import Listing
from hub.catalog import Catalog, Entry, Source
from hub.errors import UnknownName, UnknownResource
from hub.views import EVERYTHING, CatalogView, Globs, ViewRule, Views


def tools(*names: str) -> tuple[dict[str, object], ...]:
    return tuple({"name": name, "inputSchema": {"type": "object"}} for name in names)


def build() -> Catalog:
    catalog = Catalog(page_size=2)
    catalog.rebuild(
        [
            Source(
                "notes",
                "notes",
                Listing(
                    tools=tools("add", "delete_all", "list"),
                    prompts=({"name": "summary"},),
                    resources=({"uri": "file:///n.txt", "name": "n"},),
                    resource_templates=({"uriTemplate": "note://{id}", "name": "t"},),
                ),
            ),
            Source(
                "clock", "time", Listing(tools=tools("now", "zone"), resources=({"uri": "file:///c", "name": "c"},))
            ),
        ]
    )
    return catalog


ACME = ViewRule(
    upstreams=frozenset({"notes"}),
    tools=Globs(allow=("notes__*",), deny=("*delete*",)),
    resources=Globs(allow=("manifold://notes/file:*",)),
)


def names(view: CatalogView, kind: str = "tools") -> list[str]:
    key = "name" if kind in ("tools", "prompts") else ("uri" if kind == "resources" else "uriTemplate")
    return [str(item[key]) for item in view.items(kind)]  # type: ignore[arg-type]


def test_everything_sees_the_whole_catalog_and_costs_no_copy() -> None:
    catalog = build()
    view = CatalogView(catalog)
    assert view.items("tools") is catalog.items("tools")
    assert names(view) == ["notes__add", "notes__delete_all", "notes__list", "time__now", "time__zone"]


def test_a_filtered_view_hides_other_upstreams_and_denied_names_in_every_list() -> None:
    view = CatalogView(build(), ACME)
    assert names(view) == ["notes__add", "notes__list"]
    assert names(view, "prompts") == ["notes__summary"]
    assert names(view, "resources") == ["manifold://notes/file:///n.txt"]
    assert names(view, "resourceTemplates") == []  # the allow glob admits file: URIs only


def test_names_outside_the_view_answer_exactly_like_names_that_do_not_exist() -> None:
    catalog = build()
    view = CatalogView(catalog, ACME)
    assert view.tool("notes__add") == Entry("notes", "add")
    for hidden in ("time__now", "notes__delete_all"):
        with pytest.raises(UnknownName) as outside:
            view.tool(hidden)
        with pytest.raises(UnknownName) as missing:
            view.tool("nothing__here")
        assert str(outside.value) == f"unknown tool: {hidden}"
        assert type(outside.value) is type(missing.value)
    with pytest.raises(UnknownResource):
        view.resource("manifold://time/file:///c")
    with pytest.raises(UnknownResource):
        view.resource("manifold://notes/note://7")  # a template URI the resource globs do not admit
    assert view.resource("manifold://notes/file:///other") == Entry("notes", "file:///other")


def test_pages_of_a_view_hold_only_what_it_admits() -> None:
    view = CatalogView(build(), ACME)
    first = view.page("tools")
    assert [t["name"] for t in first["tools"]] == ["notes__add", "notes__list"]
    assert "nextCursor" not in first
    everything = CatalogView(build())
    assert "nextCursor" in everything.page("tools")


def test_after_a_rebuild_only_the_views_whose_lists_changed_are_named() -> None:
    catalog = build()
    views = Views(catalog)
    views.view(ACME)
    changed = catalog.rebuild(
        [
            Source("notes", "notes", Listing(tools=tools("add", "delete_all", "list"), prompts=({"name": "summary"},))),
            Source("clock", "time", Listing(tools=tools("now", "zone", "alarm"))),
        ]
    )
    by_rule = views.changed(changed)
    assert by_rule[EVERYTHING] == {"tools", "resources", "resourceTemplates"}
    assert by_rule[ACME] == {"resources"}  # its tools did not change: clock's are not in its view
    assert views.changed(catalog.rebuild([]))[ACME] == {"tools", "prompts"}


def test_an_unrestricted_rule_shares_the_view_of_everything() -> None:
    views = Views(build())
    assert views.view(ViewRule()) is views.view(EVERYTHING)


@pytest.mark.parametrize(
    "rule",
    [
        ViewRule(upstreams=frozenset({"acme"})),
        ViewRule(tools=Globs(allow=("acme__*",))),
        ViewRule(prompts=Globs(deny=("*",))),
        ViewRule(resources=Globs(deny=("file:*",))),
    ],
)
def test_a_rule_restricting_any_one_kind_is_not_everything_and_equal_rules_share_a_view(rule: ViewRule) -> None:
    assert not rule.everything  # (the shortcut that skips the globs for an unrestricted view)
    twin = ViewRule(rule.upstreams, Globs(*_fields(rule.tools)), Globs(*_fields(rule.prompts)), rule.resources)
    assert twin == rule and hash(twin) == hash(rule) and twin is not rule
    views = Views(build())
    assert views.view(twin) is views.view(rule) is not views.view(EVERYTHING)


def _fields(globs: Globs) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return globs.allow, globs.deny


@given(
    st.lists(st.text(alphabet="ab*?[]!_", min_size=0, max_size=6), max_size=3),
    st.lists(st.text(alphabet="ab*?[]!_", min_size=0, max_size=6), max_size=3),
    st.text(alphabet="abAB_*?[", max_size=8),
)
def test_compiled_globs_admit_exactly_what_fnmatchcase_admits(allow: list[str], deny: list[str], name: str) -> None:
    expected = any(fnmatch.fnmatchcase(name, g) for g in allow) and not any(fnmatch.fnmatchcase(name, g) for g in deny)
    assert Globs(tuple(allow), tuple(deny)).admits(name) == expected
