"""The merged, namespaced view of every upstream's tools, prompts and resources.

The catalog is rebuilt from the upstreams' listings whenever one changes and
is otherwise read-only: lookups are dict hits, pages are slices of prebuilt
lists. Public names map back to (upstream, original name) through a table;
nothing ever parses a public name.

An upstream that is down keeps its names (a :class:`Source` that is not
``listed``): they leave the lists, but a call to one still finds its
upstream and gets an error that says it is down, not "unknown tool".

Collisions: upstreams are taken in config order, and within one upstream its
items in the order it listed them. The first claimant of a public name keeps
it; a later one gets the hashed form of its candidate name (see
``hub.names``). Every collision is logged and listed in :attr:`collisions`.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from connectors.jsonrpc import Message
from connectors.status import Listing
from hub.errors import InvalidParams, UnknownName, UnknownResource
from hub.names import NAMESPACE_SCHEME, hashed_name, public_name, public_uri

__all__ = ["KINDS", "Catalog", "Entry", "ListKind", "Source", "paginate"]

logger = logging.getLogger(__name__)

ListKind = Literal["tools", "prompts", "resources", "resourceTemplates"]
KINDS: Final[tuple[ListKind, ...]] = ("tools", "prompts", "resources", "resourceTemplates")


@dataclass(frozen=True)
class Entry:
    """Where a public name or URI leads."""

    upstream: str
    original: str


@dataclass(frozen=True)
class Source:
    """One upstream's contribution to a rebuild."""

    name: str
    prefix: str
    listing: Listing
    listed: bool = True
    """False for an upstream that is down: its names resolve, its items are not listed."""


@dataclass
class _Build:
    items: dict[ListKind, list[Message]] = field(default_factory=lambda: {kind: [] for kind in KINDS})
    owners: dict[ListKind, list[str]] = field(default_factory=lambda: {kind: [] for kind in KINDS})
    """The upstream of each listed item, in the same order."""
    tools: dict[str, Entry] = field(default_factory=dict)
    prompts: dict[str, Entry] = field(default_factory=dict)
    resources: dict[str, Entry] = field(default_factory=dict)
    counts: dict[str, dict[ListKind, int]] = field(default_factory=dict)
    schemas: dict[str, Any] = field(default_factory=dict)
    """The input schema of each tool, by public name."""
    task_support: dict[str, str] = field(default_factory=dict)
    """The ``execution.taskSupport`` of each tool that declared one other than "forbidden"."""
    collisions: list[str] = field(default_factory=list)


class Catalog:
    """The merged catalog; rebuilt whole, read without locks."""

    def __init__(self, *, separator: str = "__", max_name_length: int = 64, page_size: int = 100) -> None:
        self.separator = separator
        self.max_name_length = max_name_length
        self.page_size = page_size
        self.version = 0
        self._build = _Build()
        self._prefixes: dict[str, str] = {}
        self._prefix_of: dict[str, str] = {}
        self._passthrough: list[str] = []

    # -- rebuilding --------------------------------------------------------------------------------

    def rebuild(self, sources: Sequence[Source]) -> set[ListKind]:
        """Replace the catalog with one built from ``sources`` (in config order).

        Returns the kinds whose public lists changed.
        """
        build = _Build()
        for source in sources:
            counts: dict[ListKind, int] = dict.fromkeys(KINDS, 0)
            listing = source.listing
            for tool in listing.tools:
                if self._claim(build, build.tools, "tools", source, tool, "name"):
                    counts["tools"] += 1
            for prompt in listing.prompts:
                if self._claim(build, build.prompts, "prompts", source, prompt, "name"):
                    counts["prompts"] += 1
            for resource in listing.resources:
                if self._claim_uri(build, source, resource, "uri", "resources"):
                    counts["resources"] += 1
            for template in listing.resource_templates:
                if self._claim_uri(build, source, template, "uriTemplate", "resourceTemplates"):
                    counts["resourceTemplates"] += 1
            build.counts[source.name] = counts if source.listed else dict.fromkeys(KINDS, 0)
        changed = {kind for kind in KINDS if build.items[kind] != self._build.items[kind]}
        self._build = build
        self._prefixes = {s.prefix: s.name for s in sources if s.prefix}
        self._prefix_of = {s.name: s.prefix for s in sources}
        self._passthrough = [s.name for s in sources if not s.prefix]
        if changed:
            self.version += 1
        return changed

    def _claim(
        self, build: _Build, table: dict[str, Entry], kind: ListKind, source: Source, item: Message, key: str
    ) -> bool:
        original = item.get(key)
        if not isinstance(original, str) or not original:
            logger.warning("upstream %s listed a %s without a %s; skipped", source.name, kind[:-1], key)
            return False
        name = public_name(source.prefix, original, self.separator, self.max_name_length)
        holder = table.get(name)
        if holder is not None:
            if holder.upstream == source.name and holder.original == original:
                return False  # the upstream listed it twice
            renamed = hashed_name(name, f"{source.name}\0{original}", self.max_name_length)
            note = (
                f"{kind[:-1]} {name!r} of upstream {source.name} collides with {holder.upstream}'s; "
                f"served as {renamed!r}"
            )
            logger.warning(note)
            build.collisions.append(note)
            name = renamed
            if name in table:
                return False
        table[name] = Entry(source.name, original)
        if kind == "tools" and "inputSchema" in item:
            build.schemas[name] = item["inputSchema"]
        execution = item.get("execution") if kind == "tools" else None
        if isinstance(execution, dict) and execution.get("taskSupport") in ("optional", "required"):
            build.task_support[name] = execution["taskSupport"]
        elif (
            kind == "tools"
            and source.listing.task_support != "forbidden"
            and not (isinstance(execution, dict) and "taskSupport" in execution)  # (what a tool says wins)
        ):
            build.task_support[name] = source.listing.task_support
        if source.listed:
            build.items[kind].append({**item, key: name})
            build.owners[kind].append(source.name)
        return True

    def _claim_uri(self, build: _Build, source: Source, item: Message, key: str, kind: ListKind) -> bool:
        original = item.get(key)
        if not isinstance(original, str) or not original:
            return False
        uri = public_uri(source.prefix, original)
        if kind == "resources":
            holder = build.resources.get(uri)
            if holder is not None:
                if holder.upstream != source.name:
                    note = f"resource {uri!r} of upstream {source.name} is also {holder.upstream}'s; theirs is served"
                    logger.warning(note)
                    build.collisions.append(note)
                return False
            build.resources[uri] = Entry(source.name, original)
        if source.listed:
            build.items[kind].append({**item, key: uri})
            build.owners[kind].append(source.name)
        return True

    # -- reading -----------------------------------------------------------------------------------

    @property
    def collisions(self) -> list[str]:
        return list(self._build.collisions)

    def items(self, kind: ListKind) -> list[Message]:
        return self._build.items[kind]

    def owners(self, kind: ListKind) -> list[str]:
        """The upstream of each item of :meth:`items`, in the same order."""
        return self._build.owners[kind]

    def count(self, upstream: str, kind: ListKind = "tools") -> int:
        return self._build.counts.get(upstream, {}).get(kind, 0)

    def tool(self, name: str) -> Entry:
        """Raises: UnknownName: no tool has that public name."""
        entry = self._build.tools.get(name)
        if entry is None:
            raise UnknownName(f"unknown tool: {name}")
        return entry

    def tool_schema(self, name: str) -> Any:
        """The input schema a tool was listed with (None when it had none)."""
        return self._build.schemas.get(name)

    def task_support(self, name: str) -> str:
        """How a tool runs as a task: "forbidden" (the default), "optional" or "required"."""
        return self._build.task_support.get(name, "forbidden")

    def prompt(self, name: str) -> Entry:
        """Raises: UnknownName: no prompt has that public name."""
        entry = self._build.prompts.get(name)
        if entry is None:
            raise UnknownName(f"unknown prompt: {name}")
        return entry

    def resource(self, uri: str, upstreams: frozenset[str] | None = None) -> Entry:
        """The upstream and original URI behind a public URI, listed or expanded from a template.

        ``upstreams``, when given, are the only upstreams the URI may lead to.

        Raises:
            UnknownResource: no upstream (of those) owns that URI.
        """
        entry = self._build.resources.get(uri)
        if entry is not None and (upstreams is None or entry.upstream in upstreams):
            return entry
        namespace = f"{NAMESPACE_SCHEME}://"
        if uri.startswith(namespace):
            prefix, slash, original = uri[len(namespace) :].partition("/")
            upstream = self._prefixes.get(prefix)
            if upstream is not None and slash and original and (upstreams is None or upstream in upstreams):
                return Entry(upstream, original)
        elif entry is None:
            for upstream in self._passthrough:
                if upstreams is None or upstream in upstreams:
                    return Entry(upstream, uri)
        raise UnknownResource(f"unknown resource: {uri}", data={"uri": uri})

    def public_uri_of(self, upstream: str, original: str) -> str:
        return public_uri(self._prefix_of.get(upstream, ""), original)

    def page(self, kind: ListKind, cursor: object = None) -> Message:
        """One page of a list, as the result of ``<kind>/list``.

        Raises:
            InvalidParams: the cursor is not one this hub issued for this list.
        """
        return paginate(self._build.items[kind], kind, cursor, self.page_size)


def paginate(items: list[Message], kind: ListKind, cursor: object, page_size: int) -> Message:
    """One page of ``items`` as the result of ``<kind>/list``.

    Raises:
        InvalidParams: the cursor is not one this hub issued for this list.
    """
    start = 0 if cursor is None else _decode_cursor(kind, cursor)
    end = start + page_size
    result: Message = {kind: items[start:end]}
    if end < len(items):
        result["nextCursor"] = _encode_cursor(kind, end)
    return result


def _encode_cursor(kind: ListKind, offset: int) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{offset}".encode()).decode().rstrip("=")


def _decode_cursor(kind: ListKind, cursor: object) -> int:
    if isinstance(cursor, str):
        try:
            text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
            found, _, offset = text.partition(":")
            if found == kind and offset.isdigit():
                return int(offset)
        except (binascii.Error, UnicodeDecodeError, ValueError):
            pass
    raise InvalidParams(f"invalid cursor for {kind}/list")
