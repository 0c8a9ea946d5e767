"""Public names and URIs: prefix + separator + original, always valid, shortened without collisions."""

from __future__ import annotations

import re

import pytest

from hub.names import public_name, public_uri

VALID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
HASHED_TAIL = re.compile(r"_[0-9a-f]{8}$")
CAP = 32


def test_a_public_name_is_prefix_separator_and_original() -> None:
    assert public_name("files", "read", "__", CAP) == "files__read"
    assert public_name("files", "read", ".", CAP) == "files.read"


def test_an_empty_prefix_leaves_the_name_as_it_is() -> None:
    assert public_name("", "read_file", "__", CAP) == "read_file"


def test_a_name_exactly_at_the_cap_is_kept() -> None:
    original = "t" * (CAP - len("p__"))

    assert public_name("p", original, "__", CAP) == f"p__{original}"


def test_an_over_long_name_is_cut_to_exactly_the_cap_and_ends_in_a_hash() -> None:
    original = "t" * (CAP - len("p__") + 1)

    name = public_name("p", original, "__", CAP)

    assert len(name) == CAP
    assert HASHED_TAIL.search(name)
    assert name.startswith("p__ttt")
    assert VALID.fullmatch(name)


def test_shortening_is_deterministic() -> None:
    original = "summarize_the_quarterly_report_for_the_board"

    assert public_name("docs", original, "__", CAP) == public_name("docs", original, "__", CAP)


def test_long_names_sharing_a_long_head_get_different_public_names() -> None:
    head = "x" * 100

    first = public_name("p", f"{head}_one", "__", CAP)
    second = public_name("p", f"{head}_two", "__", CAP)

    assert first != second
    assert len(first) == len(second) == CAP


def test_the_same_long_name_from_two_prefixes_gets_different_public_names() -> None:
    original = "y" * 100

    assert public_name("a", original, "__", CAP) != public_name("b", original, "__", CAP)


@pytest.mark.parametrize(
    "original",
    ["read file", "dir/read", "héllo", "工具", "a:b", "x" * 200 + " y"],
    ids=["space", "slash", "accent", "cjk", "colon", "long-and-invalid"],
)
def test_invalid_characters_give_a_valid_name(original: str) -> None:
    name = public_name("p", original, "__", CAP)

    assert VALID.fullmatch(name), name
    assert len(name) <= CAP
    assert HASHED_TAIL.search(name)


def test_an_invalid_name_without_a_prefix_is_made_valid() -> None:
    assert VALID.fullmatch(public_name("", "read file", "__", CAP))


def test_a_name_ending_in_a_newline_is_made_valid() -> None:
    name = public_name("p", "read\n", "__", CAP)

    assert "\n" not in name
    assert VALID.fullmatch(name)


def test_names_differing_only_in_invalid_characters_stay_distinct() -> None:
    spaced = public_name("p", "read file", "__", CAP)
    slashed = public_name("p", "read/file", "__", CAP)

    assert spaced != slashed


def test_a_public_uri_puts_the_original_under_the_prefix_unencoded() -> None:
    assert public_uri("files", "file:///etc/hosts") == "manifold://files/file:///etc/hosts"
    assert public_uri("files", "file:///{path}") == "manifold://files/file:///{path}"


def test_a_public_uri_without_a_prefix_is_the_original() -> None:
    assert public_uri("", "file:///etc/hosts") == "file:///etc/hosts"
