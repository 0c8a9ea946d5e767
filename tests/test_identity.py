"""Credentials to callers: API keys and JWTs, each refusal with its challenge, nothing secret in errors."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from hub.config import parse_config
from hub.errors import ConfigError, Forbidden, HubError, Unauthorized
from hub.identity import Authenticator, credential
from hub.jwks import Jwks

pytestmark = pytest.mark.anyio

ISSUER = "https://id.example.com"
AUDIENCE = "https://hub.example.com/mcp"
KEY = "mfd_the-real-key"


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Any]:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    jwks = {
        "keys": [
            {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key())), "kid": "r1", "use": "sig"},
            {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key())), "kid": "e1", "alg": "ES256"},
        ]
    }
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks))
    return {"rsa": rsa_key, "ec": ec_key, "path": str(path)}


def authenticator(keys: dict[str, Any], **jwt_settings: Any) -> Authenticator:
    config = parse_config(
        {
            "hub": {"publicUrl": "https://hub.example.com"},
            "auth": {
                "apiKeys": [
                    {"name": "ci", "sha256": digest(KEY), "tenant": "acme"},
                    {"name": "old", "sha256": digest("mfd_old"), "tenant": "acme", "expires": "2020-01-01T00:00:00Z"},
                    {"name": "ops", "sha256": digest("mfd_ops"), "tenant": "acme", "admin": True},
                ],
                "jwt": {
                    "issuer": ISSUER,
                    "audience": AUDIENCE,
                    "jwks": keys["path"],
                    "scopes": ["mcp"],
                    "leeway": 5,
                    **jwt_settings,
                },
            },
            "tenants": {"acme": {}, "zeta": {}},
        },
        env={},
    )
    return Authenticator(config, Jwks(keys["path"], min_refresh=0))


def token(keys: dict[str, Any], *, kid: str = "r1", algorithm: str = "RS256", **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "u1", "exp": now + 300, "iat": now, "scope": "mcp", "tenant": "acme"}
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    private = keys["ec"] if algorithm.startswith("ES") else keys["rsa"]
    return jwt.encode(body, private, algorithm=algorithm, headers={"kid": kid})


def bearer(value: str) -> dict[str, str]:
    return {"authorization": f"Bearer {value}"}


async def refused(auth: Authenticator, headers: dict[str, str], kind: type[HubError] = Unauthorized) -> HubError:
    with pytest.raises(kind) as caught:
        await auth.authenticate(headers)
    return caught.value


def test_the_credential_comes_from_a_bearer_header_or_x_api_key() -> None:
    assert credential({"authorization": "Bearer abc"}) == "abc"
    assert credential({"x-api-key": " k "}) == "k"
    assert credential({"authorization": "Basic abc"}) == ""  # present, and not a kind the hub accepts
    assert credential({}) is None


async def test_an_api_key_names_its_principal_tenant_and_role(keys: dict[str, Any]) -> None:
    auth = authenticator(keys)
    caller = await auth.authenticate(bearer(KEY))
    assert (caller.principal, caller.tenant, caller.admin) == ("key:ci", "acme", False)
    assert (await auth.authenticate({"x-api-key": "mfd_ops"})).admin


async def test_no_credential_gets_the_challenge_with_the_metadata_url(keys: dict[str, Any]) -> None:
    error = await refused(authenticator(keys), {})
    assert error.headers == {
        "www-authenticate": 'Bearer resource_metadata="https://hub.example.com/.well-known/oauth-protected-resource/mcp"'
    }


@pytest.mark.parametrize("key", ["mfd_nope", "mfd_old", KEY + "x"])
async def test_unknown_and_expired_keys_are_invalid_tokens_and_never_echoed(keys: dict[str, Any], key: str) -> None:
    error = await refused(authenticator(keys), bearer(key))
    assert 'error="invalid_token"' in error.headers["www-authenticate"]
    assert key not in str(error) and key not in error.headers["www-authenticate"]


async def test_a_valid_token_is_a_principal_of_issuer_and_subject(keys: dict[str, Any]) -> None:
    auth = authenticator(keys)
    first = await auth.authenticate(bearer(token(keys)))
    again = await auth.authenticate(bearer(token(keys, iat=int(time.time()) - 1)))  # a refreshed token
    assert first == again
    assert (first.principal, first.tenant) == (f"jwt:{ISSUER}#u1", "acme")
    assert (await auth.authenticate(bearer(token(keys, kid="e1", algorithm="ES256")))).principal == first.principal


@pytest.mark.parametrize(
    ("claims", "problem"),
    [
        ({"exp": int(time.time()) - 60}, "expired"),
        ({"nbf": int(time.time()) + 600}, "not valid yet"),
        ({"aud": "https://other.example.com/mcp"}, "not issued for this hub"),
        ({"iss": "https://evil.example.com"}, "issuer"),
        ({"sub": None}, "not valid"),
    ],
)
async def test_bad_claims_are_refused(keys: dict[str, Any], claims: dict[str, Any], problem: str) -> None:
    error = await refused(authenticator(keys), bearer(token(keys, **claims)))
    assert problem in error.headers["www-authenticate"]


async def test_an_audience_list_that_names_the_hub_is_accepted(keys: dict[str, Any]) -> None:
    caller = await authenticator(keys).authenticate(bearer(token(keys, aud=["https://x", AUDIENCE])))
    assert caller.tenant == "acme"


async def test_tampered_unknown_key_none_and_hmac_tokens_are_refused(keys: dict[str, Any]) -> None:
    auth = authenticator(keys)
    good = token(keys)
    head, payload, signature = good.split(".")
    claims = json.loads(jwt.utils.base64url_decode(payload))
    forged = jwt.utils.base64url_encode(json.dumps({**claims, "tenant": "zeta"}).encode()).decode()
    for bad in (
        f"{head}.{forged}.{signature}",
        token(keys, kid="nobody"),
        jwt.encode({**claims}, key="", algorithm="none"),
    ):
        await refused(auth, bearer(bad))
    public_pem = keys["rsa"].public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    hmac_token = _hs256({"alg": "HS256", "typ": "JWT", "kid": "r1"}, claims, public_pem)
    error = await refused(auth, bearer(hmac_token))
    assert "algorithm" in error.headers["www-authenticate"]


def _hs256(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    def part(value: dict[str, Any]) -> str:
        return jwt.utils.base64url_encode(json.dumps(value).encode()).decode()

    signing = f"{part(header)}.{part(claims)}"
    signature = hmac.new(secret, signing.encode(), hashlib.sha256).digest()
    return f"{signing}.{jwt.utils.base64url_encode(signature).decode()}"


async def test_a_token_without_the_scope_is_forbidden_with_insufficient_scope(keys: dict[str, Any]) -> None:
    error = await refused(authenticator(keys), bearer(token(keys, scope="other")), Forbidden)
    assert 'error="insufficient_scope"' in error.headers["www-authenticate"]
    assert 'scope="mcp"' in error.headers["www-authenticate"]


async def test_a_token_naming_no_known_tenant_is_forbidden(keys: dict[str, Any]) -> None:
    for tenant in ("nowhere", None, 7):
        await refused(authenticator(keys), bearer(token(keys, tenant=tenant)), Forbidden)


async def test_the_admin_scope_makes_an_admin(keys: dict[str, Any]) -> None:
    auth = authenticator(keys, adminScope="hub:admin")
    assert not (await auth.authenticate(bearer(token(keys)))).admin
    assert (await auth.authenticate(bearer(token(keys, scope="mcp hub:admin")))).admin


async def test_an_accepted_credential_is_cached_but_never_past_its_expiry(keys: dict[str, Any]) -> None:
    auth = authenticator(keys)
    short = token(keys, exp=int(time.time()) + 1)
    await auth.authenticate(bearer(short))
    assert short in auth._cache
    assert auth._cache[short][1] <= time.time() + 1 + 5 + 0.01  # exp plus leeway at most


def test_hmac_and_none_algorithms_cannot_be_configured() -> None:
    for algorithms in (["HS256"], ["none"], []):
        with pytest.raises(ConfigError, match="algorithm"):
            parse_config(
                {"auth": {"jwt": {"issuer": ISSUER, "audience": AUDIENCE, "jwks": "k.json", "algorithms": algorithms}}},
                env={},
            )
