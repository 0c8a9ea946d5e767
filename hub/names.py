"""Public names for upstream tools and prompts, and public URIs for their resources.

A public name is ``prefix + separator + original`` (or the original alone
for an empty prefix). Names keep to the spec's alphabet ``[A-Za-z0-9_.-]``
and to a length cap; a name that would break either is shortened, never
truncated into a collision: it keeps as much of its head as fits and ends
in ``_`` plus eight hex digits of a hash of the upstream and original name.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

__all__ = ["NAMESPACE_SCHEME", "hashed_name", "public_name", "public_uri"]

_VALID: Final = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_INVALID_CHAR: Final = re.compile(r"[^A-Za-z0-9_.-]")
_HASH_LENGTH: Final = 8

NAMESPACE_SCHEME: Final = "manifold"


def hashed_name(candidate: str, seed: str, max_length: int) -> str:
    """``candidate`` made valid and at most ``max_length`` long, ending in a hash of ``seed``."""
    digest = hashlib.sha256(seed.encode()).hexdigest()[:_HASH_LENGTH]
    head = _INVALID_CHAR.sub("_", candidate)[: max_length - _HASH_LENGTH - 1]
    return f"{head}_{digest}"


def public_name(prefix: str, original: str, separator: str, max_length: int) -> str:
    """The public name of ``original`` from the upstream with ``prefix``; deterministic."""
    candidate = f"{prefix}{separator}{original}" if prefix else original
    if len(candidate) <= max_length and _VALID.fullmatch(candidate):
        return candidate
    return hashed_name(candidate, f"{prefix}\0{original}", max_length)


def public_uri(prefix: str, original: str) -> str:
    """The public URI (or URI template) of an upstream resource: ``manifold://prefix/original``.

    The original is appended unencoded so that a namespaced template still
    expands to the namespaced form of what the upstream's template expands to.
    """
    return f"{NAMESPACE_SCHEME}://{prefix}/{original}" if prefix else original
