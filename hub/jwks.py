"""An issuer's signing keys (a JWKS), from a file or an https URL, cached and refreshed on an unknown ``kid``.

Refreshes are rate-limited: a flood of tokens naming made-up key ids costs
at most one fetch per ``min_refresh`` seconds. Every fetch has a deadline
and a size limit; a failed one keeps the keys already known.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any, Final

import httpx
import jwt

__all__ = ["Jwks", "JwksError"]

logger = logging.getLogger(__name__)

_FETCH_SECONDS: Final = 5.0
_MAX_BYTES: Final = 1024 * 1024


class JwksError(Exception):
    """No key can verify the token (unknown ``kid``, or none that fits its algorithm)."""


class Jwks:
    """The keys of one issuer."""

    def __init__(self, source: str, *, min_refresh: float = 30.0, http: httpx.AsyncClient | None = None) -> None:
        self.source = source
        self.min_refresh = min_refresh
        self._http = http
        self._keys: dict[str | None, _Key] = {}
        self._fetched_at = -float("inf")
        self._lock = asyncio.Lock()

    async def key(self, kid: str | None, algorithm: str) -> jwt.PyJWK:
        """The key for a token's ``kid`` and ``alg``.

        Raises:
            JwksError: no such key, even after a refresh (rate-limited).
        """
        found = self._pick(kid, algorithm)
        if found is None:
            await self._refresh()
            found = self._pick(kid, algorithm)
        if found is None:
            raise JwksError("no key of the issuer matches the token")
        return found

    def _pick(self, kid: str | None, algorithm: str) -> jwt.PyJWK | None:
        if kid is not None:
            key = self._keys.get(kid)
        elif len(self._keys) == 1:
            key = next(iter(self._keys.values()))  # an issuer with one key may leave kid out
        else:
            key = None
        if key is None or not algorithm.startswith(_FAMILIES.get(key.kty, ("\0",))):
            return None  # a key of another kind: an RSA key never verifies an EC signature
        if key.declared is not None and key.declared != algorithm:
            return None  # the key says which algorithm it is for, and it is not this one
        return key.jwk

    async def _refresh(self) -> None:
        async with self._lock:
            now = time.monotonic()
            if now - self._fetched_at < self.min_refresh:
                return
            self._fetched_at = now
            try:
                document = await self._read()
                self._keys = _parse(document)
            except (OSError, ValueError, httpx.HTTPError) as exc:
                logger.warning("cannot read the JWKS at %s: %s", self.source, type(exc).__name__)

    async def _read(self) -> Any:
        if not self.source.startswith("https://"):
            data = await asyncio.to_thread(Path(self.source).read_bytes)
            return json.loads(data) if len(data) <= _MAX_BYTES else _too_large()
        http = self._http or httpx.AsyncClient(timeout=_FETCH_SECONDS, trust_env=False)
        try:
            async with asyncio.timeout(_FETCH_SECONDS), http.stream("GET", self.source) as response:
                response.raise_for_status()
                body = b""
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > _MAX_BYTES:
                        _too_large()
                return json.loads(body)
        finally:
            if self._http is None:
                await http.aclose()


_FAMILIES: Final[dict[str, tuple[str, ...]]] = {"RSA": ("RS", "PS"), "EC": ("ES",), "OKP": ("EdDSA",)}


class _Key:
    __slots__ = ("declared", "jwk", "kty")

    def __init__(self, jwk: jwt.PyJWK, kty: str, declared: str | None) -> None:
        self.jwk = jwk
        self.kty = kty
        self.declared = declared


def _too_large() -> Any:
    raise ValueError(f"a JWKS larger than {_MAX_BYTES} bytes")


def _parse(document: Any) -> dict[str | None, _Key]:
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list):
        raise ValueError("not a JWKS: no keys")
    parsed: dict[str | None, _Key] = {}
    for entry in keys:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig" or entry.get("kty") == "oct":
            continue  # encryption keys and shared secrets never verify a signature here
        try:
            key = jwt.PyJWK(entry)
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
            continue
        kid = entry.get("kid")
        declared = entry.get("alg")
        parsed[kid if isinstance(kid, str) else None] = _Key(
            key, str(entry.get("kty")), declared if isinstance(declared, str) else None
        )
    return parsed
