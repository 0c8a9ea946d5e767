"""Who is asking: a request's credential turned into a caller, or refused.

Credentials are API keys (``Authorization: Bearer <key>`` or ``X-API-Key``),
kept only as SHA-256 digests and compared in constant time, or JWT bearer
tokens checked against the issuer's JWKS: an asymmetric algorithm from the
allow-list, ``exp``/``nbf``/``iat`` with leeway, ``iss``, an ``aud`` that
names this hub (RFC 8707) and the required scopes. The principal is the key's
name (``key:<name>``) or the token's issuer and subject (``jwt:<iss>#<sub>``,
so a refreshed token is the same principal); the tenant comes with the key or
from the token's tenant claim. A credential that names no known tenant is
refused. Accepted credentials are cached (bounded, never past their expiry),
so the hot path pays one dictionary lookup; refused ones are not.

Refusals carry the challenge clients need: 401 with
``WWW-Authenticate: Bearer resource_metadata="<publicUrl>/.well-known/oauth-protected-resource/mcp"``
(and ``error="invalid_token"`` when a token was sent), 403 with
``error="insufficient_scope"`` for a token without a required scope.
Nothing of a credential ever appears in an error or a log.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections import OrderedDict
from typing import Any, Final

import jwt

from hub.context import ANONYMOUS, Caller
from hub.errors import Forbidden, Unauthorized
from hub.jwks import Jwks, JwksError
from hub.schema import Config

__all__ = ["METADATA_PATH", "Authenticator", "credential"]

logger = logging.getLogger(__name__)

METADATA_PATH: Final = "/.well-known/oauth-protected-resource"
_CACHE_SIZE: Final = 10_000
_JWT_CACHE_SECONDS: Final = 300.0


def credential(headers: dict[str, str]) -> str | None:
    """The bearer token or API key of a request, if it sent one."""
    authorization = headers.get("authorization")
    if authorization is not None:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return ""  # a credential of another kind (or malformed): present, and not accepted
    key = headers.get("x-api-key")
    return key.strip() if key is not None else None


class Authenticator:
    """Turns credentials into callers for one config (a reload makes a new one)."""

    def __init__(self, config: Config, jwks: Jwks | None = None) -> None:
        self.enabled = config.auth_enabled
        auth = config.auth
        self._keys = [] if auth is None else list(auth.api_keys)
        self._digests = [bytes.fromhex(key.sha256) for key in self._keys]
        self._jwt = None if auth is None else auth.jwt
        self._jwks = jwks if jwks is not None or self._jwt is None else Jwks(self._jwt.jwks)
        self._tenants = set(config.tenants)
        self.resource = f"{config.public_url}/mcp"
        self.metadata_url = f"{config.public_url}{METADATA_PATH}/mcp"
        self._cache: OrderedDict[str, tuple[Caller, float]] = OrderedDict()

    def metadata(self, config: Config) -> dict[str, Any]:
        """The protected-resource metadata document (RFC 9728)."""
        document: dict[str, Any] = {"resource": self.resource, "bearer_methods_supported": ["header"]}
        if config.auth is not None and config.auth.authorization_servers:
            document["authorization_servers"] = list(config.auth.authorization_servers)
        if self._jwt is not None and self._jwt.scopes:
            document["scopes_supported"] = list(self._jwt.scopes)
        return document

    async def authenticate(self, headers: dict[str, str]) -> Caller:
        """The caller a request's credential names.

        Raises:
            Unauthorized: no credential, or one that is not valid (expired, unknown, tampered...).
            Forbidden: a valid token without a required scope, or naming no known tenant.
        """
        if not self.enabled:
            return ANONYMOUS
        token = credential(headers)
        if not token:
            raise self._challenge(None if token is None else "the credential is not a bearer token or an API key")
        now = time.time()
        cached = self._cache.get(token)
        if cached is not None:
            if cached[1] > now:
                return cached[0]
            del self._cache[token]
        if token.count(".") == 2 and self._jwt is not None:
            caller, until = await self._token(token, now)
        else:
            caller, until = self._api_key(token, now)
        self._cache[token] = (caller, until)
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return caller

    def _challenge(self, problem: str | None) -> Unauthorized:
        value = f'Bearer resource_metadata="{self.metadata_url}"'
        if problem is not None:
            value += f', error="invalid_token", error_description="{problem}"'
        message = "Unauthorized: " + (problem or "send a bearer token or an API key")
        return Unauthorized(message, headers={"www-authenticate": value})

    def _api_key(self, token: str, now: float) -> tuple[Caller, float]:
        digest = hashlib.sha256(token.encode("utf-8", errors="replace")).digest()
        found = None
        for key, known in zip(self._keys, self._digests, strict=True):
            if hmac.compare_digest(digest, known):  # every digest compared: the time says nothing
                found = key
        if found is None:
            raise self._challenge("unknown credential")
        until = now + _JWT_CACHE_SECONDS
        if found.expires is not None:
            expires = found.expires.timestamp()
            if expires <= now:
                raise self._challenge("the API key has expired")
            until = min(until, expires)
        return Caller(principal=f"key:{found.name}", tenant=found.tenant, admin=found.admin), until

    async def _token(self, token: str, now: float) -> tuple[Caller, float]:
        settings = self._jwt
        assert settings is not None and self._jwks is not None
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise self._challenge("malformed token") from None
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in settings.algorithms:
            raise self._challenge("the token's algorithm is not accepted")
        kid = header.get("kid")
        try:
            key = await self._jwks.key(kid if isinstance(kid, str) else None, algorithm)
            claims = jwt.decode(
                token,
                key=key.key,
                algorithms=[algorithm],
                audience=settings.audience,
                issuer=settings.issuer,
                leeway=settings.leeway,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except JwksError:
            raise self._challenge("no key of the issuer signed this token") from None
        except jwt.ExpiredSignatureError:
            raise self._challenge("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise self._challenge("the token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise self._challenge("the token was not issued for this hub") from None
        except jwt.InvalidIssuerError:
            raise self._challenge("the token's issuer is not trusted") from None
        except (jwt.PyJWTError, ValueError, TypeError):
            raise self._challenge("the token is not valid") from None
        granted = _scopes(claims)
        missing = [scope for scope in settings.scopes if scope not in granted]
        if missing:
            challenge = (
                f'Bearer error="insufficient_scope", scope="{" ".join(settings.scopes)}", '
                f'resource_metadata="{self.metadata_url}"'
            )
            raise Forbidden(
                f"Forbidden: the token lacks the scope {missing[0]}", headers={"www-authenticate": challenge}
            )
        tenant = claims.get(settings.tenant_claim)
        if not isinstance(tenant, str) or tenant not in self._tenants:
            raise Forbidden("Forbidden: the token names no tenant of this hub")
        admin = settings.admin_scope is not None and settings.admin_scope in granted
        caller = Caller(principal=f"jwt:{claims['iss']}#{claims['sub']}", tenant=tenant, admin=admin)
        return caller, min(float(claims["exp"]) + settings.leeway, now + _JWT_CACHE_SECONDS)


def _scopes(claims: dict[str, Any]) -> set[str]:
    scope = claims.get("scope")
    if isinstance(scope, str):
        return set(scope.split())
    listed = claims.get("scp")
    return {s for s in listed if isinstance(s, str)} if isinstance(listed, list) else set()
