"""Views of the catalog: what one caller may see, and who must hear when that changes.

The merged catalog stays one structure. A :class:`ViewRule` says which
upstreams a caller may use and, within them, which public names and URIs
(allow and deny globs per kind); a :class:`CatalogView` applies it to every
list, lookup and completion, and a name outside the view answers exactly like
a name that does not exist. :class:`Views` keeps one view per rule, shared by
every session under that rule, and after a rebuild says which kinds of which
views changed, so only their sessions get ``list_changed``.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from connectors.jsonrpc import Message
from hub.catalog import KINDS, Catalog, Entry, ListKind, paginate
from hub.errors import UnknownName, UnknownResource

__all__ = ["EVERYTHING", "CatalogView", "Globs", "ViewRule", "Views"]


@dataclass(frozen=True)
class Globs:
    """Names admitted: those matching an ``allow`` glob and no ``deny`` glob (case-sensitive)."""

    allow: tuple[str, ...] = ("*",)
    deny: tuple[str, ...] = ()
    # Compiled once (every call asks): one pattern for each list; no test at all for "everything".
    _allow: re.Pattern[str] | None = field(default=None, init=False, compare=False, repr=False)
    _deny: re.Pattern[str] | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.allow != ("*",):
            object.__setattr__(self, "_allow", _compiled(self.allow))
        if self.deny:
            object.__setattr__(self, "_deny", _compiled(self.deny))

    @property
    def everything(self) -> bool:
        return self.allow == ("*",) and not self.deny

    def admits(self, name: str) -> bool:
        allow, deny = self._allow, self._deny
        if allow is not None and allow.match(name) is None:
            return False
        return deny is None or deny.match(name) is None


def _compiled(globs: tuple[str, ...]) -> re.Pattern[str]:
    # fnmatch's own translation, case-sensitive as fnmatchcase; an empty list admits nothing.
    return re.compile("|".join(f"(?:{fnmatch.translate(glob)})" for glob in globs) or r"(?!)")


_ALL: Final = Globs()


@dataclass(frozen=True)
class ViewRule:
    """What one kind of caller may see; ``upstreams=None`` means every upstream."""

    upstreams: frozenset[str] | None = None
    tools: Globs = _ALL
    prompts: Globs = _ALL
    resources: Globs = _ALL
    """Applies to public resource URIs and to public URI templates."""
    # Worked out once: a stateless request looks its view up by its rule, and every lookup asks.
    everything: bool = field(default=False, init=False, compare=False, repr=False)
    _hash: int = field(default=0, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        everything = (
            self.upstreams is None and self.tools.everything and self.prompts.everything and self.resources.everything
        )
        object.__setattr__(self, "everything", everything)
        object.__setattr__(self, "_hash", hash((self.upstreams, self.tools, self.prompts, self.resources)))

    def __hash__(self) -> int:
        return self._hash

    def globs(self, kind: ListKind) -> Globs:
        if kind == "tools":
            return self.tools
        if kind == "prompts":
            return self.prompts
        return self.resources

    def admits(self, kind: ListKind, upstream: str, name: str) -> bool:
        if self.everything:
            return True
        return (self.upstreams is None or upstream in self.upstreams) and self.globs(kind).admits(name)


EVERYTHING: Final = ViewRule()

_KEY: Final[dict[ListKind, str]] = {
    "tools": "name",
    "prompts": "name",
    "resources": "uri",
    "resourceTemplates": "uriTemplate",
}


@dataclass
class CatalogView:
    """The catalog as one rule lets a caller see it."""

    catalog: Catalog
    rule: ViewRule = EVERYTHING
    _items: dict[ListKind, list[Message]] = field(default_factory=dict)
    _version: int = -1

    def items(self, kind: ListKind) -> list[Message]:
        catalog = self.catalog
        if self.rule.everything:
            return catalog.items(kind)
        if self._version != catalog.version:
            self._items = {}
            self._version = catalog.version
        items = self._items.get(kind)
        if items is None:
            key = _KEY[kind]
            rule = self.rule
            items = [
                item
                for item, owner in zip(catalog.items(kind), catalog.owners(kind), strict=True)
                if rule.admits(kind, owner, item[key])
            ]
            self._items[kind] = items
        return items

    def page(self, kind: ListKind, cursor: object = None) -> Message:
        """One page of a list, as the result of ``<kind>/list``.

        Raises:
            InvalidParams: the cursor is not one this hub issued for this list.
        """
        return paginate(self.items(kind), kind, cursor, self.catalog.page_size)

    def tool(self, name: str) -> Entry:
        """Raises: UnknownName: no tool by that name is in the view."""
        entry = self.catalog.tool(name)
        if not self.rule.admits("tools", entry.upstream, name):
            raise UnknownName(f"unknown tool: {name}")
        return entry

    def prompt(self, name: str) -> Entry:
        """Raises: UnknownName: no prompt by that name is in the view."""
        entry = self.catalog.prompt(name)
        if not self.rule.admits("prompts", entry.upstream, name):
            raise UnknownName(f"unknown prompt: {name}")
        return entry

    def resource(self, uri: str) -> Entry:
        """Raises: UnknownResource: no upstream in the view owns that URI."""
        entry = self.catalog.resource(uri, self.rule.upstreams)
        if not self.rule.resources.admits(uri):
            raise UnknownResource(f"unknown resource: {uri}", data={"uri": uri})
        return entry

    def public_uri_of(self, upstream: str, original: str) -> str:
        return self.catalog.public_uri_of(upstream, original)

    def admits_uri(self, upstream: str, uri: str) -> bool:
        """Whether a public URI of ``upstream`` is in the view (resource updates are filtered by it)."""
        return self.rule.admits("resources", upstream, uri)


class Views:
    """One view per rule, shared; after a rebuild, which kinds of which views changed."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._views: dict[ViewRule, CatalogView] = {EVERYTHING: CatalogView(catalog)}
        self._seen: dict[ViewRule, dict[ListKind, list[Message]]] = {}

    def view(self, rule: ViewRule = EVERYTHING) -> CatalogView:
        view = self._views.get(rule)
        if view is None:
            view = CatalogView(self.catalog, rule)
            self._views[rule] = view
            self._seen[rule] = {kind: view.items(kind) for kind in KINDS}
        return view

    def forget(self, rules: Iterable[ViewRule]) -> None:
        """Drop views no caller uses any more (a tenant removed from the config)."""
        for rule in rules:
            if rule is not EVERYTHING:
                self._views.pop(rule, None)
                self._seen.pop(rule, None)

    def changed(self, everything_changed: set[ListKind]) -> dict[ViewRule, set[ListKind]]:
        """After a catalog rebuild: for each view, the kinds whose list a caller of it sees changed."""
        result: dict[ViewRule, set[ListKind]] = {EVERYTHING: set(everything_changed)}
        for rule, view in self._views.items():
            if rule.everything:
                continue
            seen = self._seen.setdefault(rule, {})
            kinds: set[ListKind] = set()
            for kind in KINDS:
                now = view.items(kind)
                if now != seen.get(kind):
                    kinds.add(kind)
                    seen[kind] = now
            result[rule] = kinds
        return result
