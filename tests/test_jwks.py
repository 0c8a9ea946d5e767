"""An issuer's keys: fetched from an https URL (a mock transport here: one module) or a file, refreshed on an
unknown kid at most once per interval, never from a document that is too large, encryption keys skipped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from hub.jwks import Jwks, JwksError

pytestmark = pytest.mark.anyio


def rsa_jwk(kid: str, **extra: Any) -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())), "kid": kid, **extra}


class Issuer:
    def __init__(self, *keys: dict[str, Any]) -> None:
        self.keys = list(keys)
        self.fetches = 0
        self.body: bytes | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.fetches += 1
        return httpx.Response(200, content=self.body or json.dumps({"keys": self.keys}).encode())


async def test_keys_come_from_the_url_and_an_unknown_kid_refreshes_at_most_once_per_interval() -> None:
    issuer = Issuer(rsa_jwk("a"))
    async with httpx.AsyncClient(transport=httpx.MockTransport(issuer)) as http:
        jwks = Jwks("https://id.example.com/jwks", min_refresh=3600, http=http)
        assert (await jwks.key("a", "RS256")).key is not None
        issuer.keys.append(rsa_jwk("b"))
        with pytest.raises(JwksError):
            await jwks.key("b", "RS256")  # the first fetch was just now: no second one yet
        for _ in range(20):  # a flood of made-up kids costs no fetches
            with pytest.raises(JwksError):
                await jwks.key("made-up", "RS256")
        assert issuer.fetches == 1
        fresh = Jwks("https://id.example.com/jwks", min_refresh=0, http=http)
        assert (await fresh.key("b", "RS256")).key is not None


async def test_a_key_serves_only_its_own_kind_and_declared_algorithm(tmp_path: Path) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_jwk = {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key())), "kid": "e", "alg": "ES256"}
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [rsa_jwk("r"), ec_jwk, {"kty": "oct", "k": "c2VjcmV0", "kid": "s"}]}))
    jwks = Jwks(str(path), min_refresh=0)
    await jwks.key("r", "PS256")  # an RSA key serves RS* and PS*
    for kid, algorithm in (("r", "ES256"), ("e", "RS256"), ("e", "ES384"), ("s", "RS256")):
        with pytest.raises(JwksError):
            await jwks.key(kid, algorithm)


async def test_a_document_too_large_or_not_a_jwks_keeps_the_keys_known() -> None:
    issuer = Issuer(rsa_jwk("a"))
    async with httpx.AsyncClient(transport=httpx.MockTransport(issuer)) as http:
        jwks = Jwks("https://id.example.com/jwks", min_refresh=0, http=http)
        await jwks.key("a", "RS256")
        for body in (b"x" * (2 * 1024 * 1024), b'{"no": "keys"}', b"not json"):
            issuer.body = body
            with pytest.raises(JwksError):
                await jwks.key("other", "RS256")
            assert (await jwks.key("a", "RS256")).key is not None
