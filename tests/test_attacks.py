"""Attacks on the hub, end to end: real sockets on 127.0.0.1, real SDK upstreams, two tenants.

Each attack checks the refusal as the attacker sees it (HTTP status, JSON-RPC code, headers) and that
the victim is unharmed: its session and calls still work afterwards and nothing of it leaked. Every
upstream records what it receives, and every log record of the suite is kept, so that the last tests
can say that no client credential reached an upstream and that no secret reached a log.
"""

from __future__ import annotations

import asyncio
import base64
import fnmatch
import hashlib
import hmac
import json
import logging
import os
import signal
import socket
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hub.app import create_app
from hub.cli import main
from hub.config import exposure_problem, parse_config
from hub.runtime import Hub
from hub.server import http_options
from tests.polling import until
from tests.servers import serve
from tests.upstreams import build_upstream
from tests.wire import HEADERS, INIT, next_data, rpc, sse_messages

pytestmark = pytest.mark.anyio

WAIT = 10.0
ISSUER = "https://id.example.com"
ROOT = Path(__file__).resolve().parent.parent

KEYS = {  # API key name -> the key itself; the config holds only their digests
    "ci-bot": "mfd_ci-bot-Kq7vXz3c9LwPn2Rf",
    "ci-bot-2": "mfd_ci-bot-2-R8mTn4bY2sHdQe",
    "zeta-bot": "mfd_zeta-bot-Vf5gJk1pQ6wEa0",
    "ops": "mfd_ops-Zc3xNb8mL0aSj7Uy",
    "retired": "mfd_retired-Hy2uIo9tR4eWk1",
}
ENV = {  # the upstream credentials of the config, expanded from ${VAR}
    "NOTES_OWN_KEY": "notes-own-key-Jk8DsWq4",
    "ACME_NOTES_TOKEN": "acme-notes-token-Tq9WzLm3",
    "ACME_SHARED_SECRET": "acme-shared-secret-Pl4XkNb6",
    "ZETA_SHARED_SECRET": "zeta-shared-secret-Mn7BvCx1",
    "ZETA_CLOCK_KEY": "zeta-clock-key-Gh2RtYu5",
}
MARK = "acme-probe-7c1d"  # what the attacker sends; no upstream outside its view may ever see it
PROTOCOL_HEADERS = frozenset(
    {
        "host",
        "accept",
        "accept-encoding",
        "connection",
        "content-length",
        "content-type",
        "user-agent",
        "mcp-session-id",
        "mcp-protocol-version",
        "last-event-id",
    }
)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key(name: str, header: str = "authorization") -> dict[str, str]:
    """A request's credential: an API key as a bearer token (or in ``X-API-Key``)."""
    value = KEYS[name]
    return {"authorization": f"Bearer {value}"} if header == "authorization" else {"x-api-key": value}


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


# -- logs of the whole suite -------------------------------------------------------------------------


class _Kept(logging.Handler):
    """Every record of every logger, formatted whole (tracebacks included)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(scope="module", autouse=True)
def suite_logs() -> Iterator[list[str]]:
    """The log lines of every test in this module, at DEBUG, for the hub's loggers and everything else."""
    handler = _Kept()
    root = logging.getLogger()
    loggers = [root, *(logging.getLogger(name) for name in ("hub", "connectors", "httpx", "httpcore"))]
    levels = [logger.level for logger in loggers]
    root.addHandler(handler)
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
    try:
        yield handler.lines
    finally:
        root.removeHandler(handler)
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


# -- JWT keys and tokens -----------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _part(value: dict[str, Any]) -> str:
    return _b64(json.dumps(value).encode())


@dataclass
class Signer:
    """The issuer's keys (RSA, EC P-256, Ed25519, published in a JWKS file) and a stranger's."""

    rsa_key: rsa.RSAPrivateKey
    ec_key: ec.EllipticCurvePrivateKey
    ed_key: ed25519.Ed25519PrivateKey
    stranger: rsa.RSAPrivateKey
    jwks: str
    minted: list[str] = field(default_factory=list)
    """Every token made in the suite, good or forged: none may show up in a log or upstream."""

    def claims(self, audience: str, **changes: Any) -> dict[str, Any]:
        now = int(time.time())
        body: dict[str, Any] = {
            "iss": ISSUER,
            "aud": audience,
            "sub": "alice",
            "iat": now,
            "exp": now + 600,
            "scope": "mcp",
            "tenant": "acme",
        }
        body.update(changes)
        return {name: value for name, value in body.items() if value is not None}

    def keep(self, token: str) -> str:
        self.minted.append(token)
        return token

    def token(self, audience: str, kid: str = "r1", **changes: Any) -> str:
        private: Any
        private, algorithm = {
            "r1": (self.rsa_key, "RS256"),
            "e1": (self.ec_key, "ES256"),
            "d1": (self.ed_key, "EdDSA"),
        }[kid]
        return self.keep(
            jwt.encode(self.claims(audience, **changes), private, algorithm=algorithm, headers={"kid": kid})
        )

    def by_stranger(self, audience: str, kid: str) -> str:
        """Signed with a key the issuer never published, under ``kid``."""
        return self.keep(jwt.encode(self.claims(audience), self.stranger, algorithm="RS256", headers={"kid": kid}))

    def unsigned(self, audience: str) -> str:
        """``alg: none``: no signature at all."""
        return self.keep(f"{_part({'alg': 'none', 'typ': 'JWT', 'kid': 'r1'})}.{_part(self.claims(audience))}.")

    def hmac_with_public_key(self, audience: str) -> str:
        """HS256 with the issuer's RSA public key (PEM) as the shared secret: the classic key confusion."""
        pem = self.rsa_key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        signing = f"{_part({'alg': 'HS256', 'typ': 'JWT', 'kid': 'r1'})}.{_part(self.claims(audience))}"
        signature = hmac.new(pem, signing.encode(), hashlib.sha256).digest()
        return self.keep(f"{signing}.{_b64(signature)}")

    def tampered(self, token: str, **changes: Any) -> str:
        """``token`` with its payload changed and its signature kept."""
        head, payload, signature = token.split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return self.keep(f"{head}.{_part({**claims, **changes})}.{signature}")


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> Signer:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ed_key = ed25519.Ed25519PrivateKey.generate()
    keys = [
        {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key())), "kid": "r1", "use": "sig"},
        {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key())), "kid": "e1", "alg": "ES256"},
        {**json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(ed_key.public_key())), "kid": "d1", "alg": "EdDSA"},
    ]
    path = tmp_path_factory.mktemp("issuer") / "jwks.json"
    path.write_text(json.dumps({"keys": keys}))
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return Signer(rsa_key, ec_key, ed_key, stranger, str(path))


# -- upstreams that record what reaches them ---------------------------------------------------------


@dataclass
class Seen:
    """One HTTP request an upstream received."""

    method: str
    headers: list[tuple[str, str]]
    body: bytearray = field(default_factory=bytearray)
    session: str = ""
    """The upstream session it belongs to (its Mcp-Session-Id, or the one its reply assigned)."""

    def values(self, name: str) -> list[str]:
        return [value for header, value in self.headers if header == name]

    def method_called(self) -> str:
        """The JSON-RPC method of the request's body ("" for none)."""
        try:
            message = json.loads(self.body)
        except ValueError:
            return ""
        return str(message.get("method", "")) if isinstance(message, dict) else ""

    def text(self) -> str:
        return "\n".join(f"{name}: {value}" for name, value in self.headers) + "\n" + self.body.decode(errors="replace")


class Recorder:
    """An ASGI wrapper around an upstream that records every request: its headers as sent, and its body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.seen: list[Seen] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = [(name.decode("latin-1").lower(), value.decode("latin-1")) for name, value in scope["headers"]]
        seen = Seen(scope["method"], headers)
        seen.session = next((value for name, value in headers if name == "mcp-session-id"), "")
        self.seen.append(seen)

        async def tee() -> Message:
            message = await receive()
            seen.body += message.get("body", b"")
            return message

        async def reply(message: Message) -> None:
            if message["type"] == "http.response.start" and not seen.session:
                for name, value in message.get("headers", []):
                    if name.lower() == b"mcp-session-id":
                        seen.session = value.decode("latin-1")
            await send(message)

        await self.app(scope, tee, reply)

    def sessions_with(self, marker: str) -> set[str]:
        """The upstream sessions whose requests carried ``marker`` in their body."""
        return {seen.session for seen in self.seen if marker.encode() in seen.body}


@dataclass
class Held:
    """The ``hold`` tool of the notes upstream: it returns only once the test releases it."""

    started: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)


def notes_server(held: Held) -> MCPServer:
    """The test upstream, plus a tool the config denies to its tenant and one that waits for the test."""
    server = build_upstream("notes")

    def delete_note(title: str) -> str:
        return f"deleted {title}"

    async def hold() -> str:
        held.started.set()
        await asyncio.wait_for(held.release.wait(), timeout=WAIT)
        return "released"

    server.add_tool(delete_note, name="delete_note", description="Delete a note.")
    server.add_tool(hold, name="hold", description="Return once the test says so.")
    return server


def counter_server() -> MCPServer:
    """A tiny upstream that keeps a counter per upstream session."""
    server = MCPServer("shared", version="1.0.0", log_level="WARNING")
    counts: dict[str, int] = {}

    @server.tool()
    def count(ctx: Context, tag: str) -> str:
        """Count the calls of this upstream session (``tag`` says who called, for the test's records)."""
        session = (ctx.headers or {}).get("mcp-session-id", "")
        counts[session] = counts.get(session, 0) + 1
        return str(counts[session])

    return server


@dataclass
class Upstreams:
    notes: Recorder
    clock: Recorder
    shared: Recorder
    urls: dict[str, str]
    held: Held

    @property
    def recorders(self) -> dict[str, Recorder]:
        return {"notes": self.notes, "clock": self.clock, "shared": self.shared}


def tcp_socket() -> socket.socket:
    """A free loopback port on a TCP socket proper: asyncio sets TCP_NODELAY on what it accepts (no 40 ms stalls)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


async def _serve_until(app: ASGIApp, url: asyncio.Future[str], stop: asyncio.Event) -> None:
    try:
        async with serve(app, sock=tcp_socket()) as served:
            url.set_result(served)
            await stop.wait()
    except BaseException as exc:
        if not url.done():
            url.set_exception(exc)
        raise


@asynccontextmanager
async def upstreams() -> AsyncIterator[Upstreams]:
    """The three upstreams, started together and stopped together (each in the task that started it)."""
    held = Held()
    notes = Recorder(notes_server(held).streamable_http_app(streamable_http_path="/mcp"))
    clock = Recorder(build_upstream("clock").streamable_http_app(streamable_http_path="/mcp"))
    shared = Recorder(counter_server().streamable_http_app(streamable_http_path="/mcp"))
    stop = asyncio.Event()
    urls: dict[str, asyncio.Future[str]] = {}
    tasks = []
    for name, app in (("notes", notes), ("clock", clock), ("shared", shared)):
        urls[name] = asyncio.get_running_loop().create_future()
        tasks.append(asyncio.create_task(_serve_until(app, urls[name], stop)))
    try:
        async with asyncio.timeout(WAIT):
            await asyncio.gather(*urls.values())
        yield Upstreams(notes, clock, shared, {name: url.result() for name, url in urls.items()}, held)
    finally:
        stop.set()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


# -- the hub -----------------------------------------------------------------------------------------


def config_for(ups: Upstreams, jwks: str, base: str) -> dict[str, Any]:
    """Two tenants: acme (notes and shared, no delete tools) and zeta (clock and shared)."""
    api_keys: list[dict[str, Any]] = [
        {"name": "ci-bot", "sha256": digest(KEYS["ci-bot"]), "tenant": "acme", "expires": "2099-06-30T00:00:00Z"},
        {"name": "ci-bot-2", "sha256": digest(KEYS["ci-bot-2"]), "tenant": "acme"},
        {"name": "zeta-bot", "sha256": digest(KEYS["zeta-bot"]), "tenant": "zeta"},
        {"name": "ops", "sha256": digest(KEYS["ops"]), "tenant": "acme", "admin": True},
        {"name": "retired", "sha256": digest(KEYS["retired"]), "tenant": "acme", "expires": "2020-01-01T00:00:00Z"},
    ]
    return {
        "hub": {
            "storage": ":memory:",
            "reconnect": {"initialDelay": 0.05, "maxDelay": 0.2},
            "publicUrl": base,
        },
        "mcpServers": {
            "notes": {"url": f"{ups.urls['notes']}/mcp", "headers": {"X-Notes-Key": "${NOTES_OWN_KEY}"}},
            "clock": {"url": f"{ups.urls['clock']}/mcp"},
            "shared": {"url": f"{ups.urls['shared']}/mcp", "sessionMode": "shared"},
        },
        "auth": {
            "apiKeys": api_keys,
            "jwt": {
                "issuer": ISSUER,
                "audience": f"{base}/mcp",
                "jwks": jwks,
                "algorithms": ["RS256", "ES256", "EdDSA"],
                "tenantClaim": "tenant",
                "scopes": ["mcp"],
                "leeway": 30,
            },
            "authorizationServers": [ISSUER],
        },
        "tenants": {
            "acme": {
                "upstreams": ["notes", "shared"],
                "tools": {"allow": ["notes__*", "shared__*"], "deny": ["*delete*"]},
                "headers": {
                    "notes": {"Authorization": "Bearer ${ACME_NOTES_TOKEN}"},
                    "shared": {"X-Tenant-Secret": "${ACME_SHARED_SECRET}"},
                },
            },
            "zeta": {
                "upstreams": ["clock", "shared"],
                "headers": {
                    "clock": {"X-Clock-Key": "${ZETA_CLOCK_KEY}"},
                    "shared": {"X-Tenant-Secret": "${ZETA_SHARED_SECRET}"},
                },
            },
        },
    }


def messages_in(response: httpx.Response) -> list[dict[str, Any]]:
    """Every JSON-RPC message in a reply to a POST, JSON or SSE."""
    kind = response.headers.get("content-type", "")
    if kind.startswith("application/json"):
        return [response.json()]
    if kind.startswith("text/event-stream"):
        return sse_messages(response.text)
    return []


def error_of(message: dict[str, Any]) -> dict[str, Any]:
    assert "error" in message, message
    error: dict[str, Any] = message["error"]
    return error


def text_of(message: dict[str, Any]) -> str:
    assert "result" in message, message
    return str(message["result"]["content"][0]["text"])


@dataclass
class Client:
    """One session on the hub's /mcp, spoken to on the wire."""

    http: httpx.AsyncClient
    url: str
    headers: dict[str, str]
    next_id: int = 0

    @property
    def session_id(self) -> str:
        return self.headers["mcp-session-id"]

    async def post(self, message: dict[str, Any], **headers: str) -> httpx.Response:
        return await self.http.post(self.url, json=message, headers={**self.headers, **headers})

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """The reply to one request (which must get through the door: HTTP 200)."""
        self.next_id += 1
        response = await self.post(rpc(self.next_id, method, params))
        assert response.status_code == 200, response.text
        replies = [m for m in messages_in(response) if m.get("id") == self.next_id]
        assert len(replies) == 1, response.text
        return replies[0]

    async def call(self, tool: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.request("tools/call", {"name": tool, "arguments": arguments or {}})

    async def names(self, method: str, kind: str, key: str) -> list[str]:
        """Every name (or URI) of a list, page by page."""
        names: list[str] = []
        params: dict[str, Any] = {}
        for _ in range(100):
            result = (await self.request(method, params))["result"]
            names += [item[key] for item in result[kind]]
            if "nextCursor" not in result:
                return names
            params = {"cursor": result["nextCursor"]}
        raise AssertionError(f"{method} did not end within 100 pages")


@dataclass
class World:
    """The upstreams, the hub in front of them, and a client of the hub."""

    ups: Upstreams
    base: str
    hub: Hub
    http: httpx.AsyncClient
    signer: Signer

    @property
    def url(self) -> str:
        return f"{self.base}/mcp"

    @property
    def metadata_url(self) -> str:
        return f"{self.base}/.well-known/oauth-protected-resource/mcp"

    def token(self, kid: str = "r1", **changes: Any) -> str:
        return self.signer.token(self.url, kid, **changes)

    async def open(self, credential: dict[str, str]) -> Client:
        response = await self.http.post(self.url, json=rpc(0, "initialize", INIT), headers={**HEADERS, **credential})
        assert response.status_code == 200, response.text
        headers = {
            **HEADERS,
            **credential,
            "mcp-session-id": response.headers["mcp-session-id"],
            "mcp-protocol-version": "2025-11-25",
        }
        client = Client(self.http, self.url, headers)
        initialized = await client.post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert initialized.status_code == 202, initialized.text
        return client

    async def initialize(self, credential: dict[str, str]) -> httpx.Response:
        """An ``initialize`` as it is answered (no assumption that it gets through)."""
        return await self.http.post(self.url, json=rpc(0, "initialize", INIT), headers={**HEADERS, **credential})


@asynccontextmanager
async def hub_for(
    ups: Upstreams,
    signer: Signer,
    *,
    hub: dict[str, Any] | None = None,
    servers: dict[str, dict[str, Any]] | None = None,
    limits: dict[str, dict[str, Any]] | None = None,
) -> AsyncIterator[World]:
    """A hub with auth in front of ``ups``; ``hub``, ``servers`` (per upstream) and ``limits`` (per tenant)
    change its config."""
    sock = tcp_socket()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    document = config_for(ups, signer.jwks, base)
    document["hub"].update(hub or {})
    for upstream, settings in (servers or {}).items():
        document["mcpServers"][upstream].update(settings)
    for tenant, tenant_limits in (limits or {}).items():
        document["tenants"][tenant]["limits"] = tenant_limits
    config = parse_config(document, env=ENV)
    app = create_app(config)
    async with (
        serve(app, sock=sock, **http_options(config.hub)),
        httpx.AsyncClient(timeout=WAIT, trust_env=False) as http,
    ):
        yield World(ups, base, app.hub, http, signer)


@asynccontextmanager
async def world(signer: Signer, **changes: Any) -> AsyncIterator[World]:
    """Fresh upstreams and a hub in front of them (``changes`` as for :func:`hub_for`)."""
    async with upstreams() as ups, hub_for(ups, signer, **changes) as w:
        yield w


@dataclass
class Answer:
    """What an HTTP request got, without waiting for the end of a stream that was let through."""

    status: int
    headers: httpx.Headers
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def answer(http: httpx.AsyncClient, method: str, url: str, headers: dict[str, str], **kwargs: Any) -> Answer:
    """The status, headers and (unless it is an open event stream) body of one request."""
    async with asyncio.timeout(WAIT), http.stream(method, url, headers=headers, **kwargs) as response:
        streaming = response.headers.get("content-type", "").startswith("text/event-stream")
        body = b"" if streaming and response.status_code == 200 else await response.aread()
        return Answer(response.status_code, response.headers, body)


def challenge_of(response: httpx.Response | Answer, status: int = 401) -> str:
    """The ``WWW-Authenticate`` of a refusal, checked for the status and JSON-RPC error that go with it."""
    code = response.status_code if isinstance(response, httpx.Response) else response.status
    body = response.json()
    assert code == status, body
    assert body["error"]["code"] == {401: -32030, 403: -32031}[status], body
    return str(response.headers.get("www-authenticate", ""))


# -- 1. a tenant reaching for another tenant's names -------------------------------------------------


def _shape(message: dict[str, Any], name: str) -> dict[str, Any]:
    """An error with the name that was asked for taken out: what is left must not tell names apart."""
    shaped: dict[str, Any] = json.loads(json.dumps(error_of(message)).replace(name, "<name>"))
    return shaped


async def test_another_tenants_names_and_denied_tools_answer_exactly_like_names_that_do_not_exist(
    signer: Signer,
) -> None:
    async with world(signer, hub={"pageSize": 3}) as w:
        acme = await w.open(key("ci-bot"))
        zeta = await w.open(key("zeta-bot"))
        assert text_of(await zeta.call("clock__echo", {"text": "before"})) == "clock: before"
        completion = {"name": "who", "value": "A"}
        attacks = [  # (what, method, the name reached for, a name that does not exist)
            ("another tenant's tool", "tools/call", "clock__echo", "ghost__echo"),
            ("a guessed name", "tools/call", "clock__forecast", "ghost__forecast"),
            ("a denied tool of its own upstream", "tools/call", "notes__delete_note", "notes__no_such_tool"),
            ("another tenant's prompt", "prompts/get", "clock__greet", "ghost__greet"),
            ("a completion of another tenant's prompt", "completion/complete", "clock__greet", "ghost__greet"),
            (
                "a completion of another tenant's template",
                "completion/complete",
                "manifold://clock/item://{item_id}",
                "manifold://ghost/item://{item_id}",
            ),
            (
                "another tenant's resource",
                "resources/read",
                "manifold://clock/file:///readme.txt",
                "manifold://ghost/x",
            ),
            (
                "another tenant's templated resource",
                "resources/read",
                "manifold://clock/item://42",
                "manifold://ghost/1",
            ),
            ("an upstream's own URI", "resources/read", "file:///readme.txt", "file:///ghost.txt"),
            ("a subscription", "resources/subscribe", "manifold://clock/file:///readme.txt", "manifold://ghost/x"),
        ]

        def params(method: str, name: str) -> dict[str, Any]:
            if method == "tools/call":
                return {"name": name, "arguments": {"text": MARK, "city": MARK, "title": MARK}}
            if method == "prompts/get":
                return {"name": name, "arguments": {"who": MARK}}
            if method == "completion/complete":
                kind = "ref/resource" if name.startswith("manifold://") else "ref/prompt"
                ref = {"type": kind, "uri": name} if kind == "ref/resource" else {"type": kind, "name": name}
                return {"ref": ref, "argument": {**completion, "value": MARK}}
            return {"uri": name}

        for what, method, reached, unknown in attacks:
            refused = await acme.request(method, params(method, reached))
            nothing = await acme.request(method, params(method, unknown))
            assert _shape(refused, reached) == _shape(nothing, unknown), what
            assert "result" not in refused, what

        # Each list shows the tenant's view only, on every page.
        every_tool = [tool["name"] for tool in w.hub.catalog.items("tools")]
        assert {"clock__echo", "notes__delete_note", "shared__count"} <= set(every_tool)
        acme_tools = await acme.names("tools/list", "tools", "name")
        assert acme_tools == [
            name
            for name in every_tool
            if name.startswith(("notes__", "shared__")) and not fnmatch.fnmatchcase(name, "*delete*")
        ]
        assert await acme.names("prompts/list", "prompts", "name") == ["notes__greet"]
        assert await acme.names("resources/list", "resources", "uri") == ["manifold://notes/file:///readme.txt"]
        templates = await acme.names("resources/templates/list", "resourceTemplates", "uriTemplate")
        assert templates == ["manifold://notes/item://{item_id}"]
        zeta_tools = await zeta.names("tools/list", "tools", "name")
        assert zeta_tools == [name for name in every_tool if name.startswith(("clock__", "shared__"))]
        assert await zeta.names("prompts/list", "prompts", "name") == ["clock__greet"]

        # The victim is unharmed, and nothing the attacker sent reached the victim's upstream.
        assert text_of(await zeta.call("clock__echo", {"text": "after"})) == "clock: after"
        ref = {"type": "ref/prompt", "name": "clock__greet"}
        done = await zeta.request("completion/complete", {"ref": ref, "argument": completion})
        assert done["result"]["completion"]["values"] == ["clock:Ada", "clock:Alan"]
        assert not [seen for seen in w.ups.clock.seen if MARK.encode() in seen.body]
        assert "resources/read" not in {seen.method_called() for seen in w.ups.clock.seen}
        assert "resources/subscribe" not in {seen.method_called() for seen in w.ups.clock.seen}
        assert not [seen for seen in w.ups.notes.seen if MARK.encode() in seen.body]


# -- 2. stolen session ids ---------------------------------------------------------------------------


async def intrude(w: World, session_id: str, credential: dict[str, str], event_id: str) -> dict[str, Answer]:
    """Every way to use a session id on /mcp, with ``credential``: what each got."""
    posting = {**HEADERS, **credential, "mcp-session-id": session_id, "mcp-protocol-version": "2025-11-25"}
    listening = {**credential, "accept": "text/event-stream", "mcp-session-id": session_id}
    call = rpc(77, "tools/call", {"name": "notes__echo", "arguments": {"text": "stolen"}})
    cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}}
    return {
        "POST a call": await answer(w.http, "POST", w.url, posting, json=call),
        "POST a notification": await answer(w.http, "POST", w.url, posting, json=cancel),
        "POST initialize": await answer(w.http, "POST", w.url, posting, json=rpc(78, "initialize", INIT)),
        "GET": await answer(w.http, "GET", w.url, listening),
        "GET with Last-Event-ID": await answer(w.http, "GET", w.url, {**listening, "last-event-id": event_id}),
        "DELETE": await answer(w.http, "DELETE", w.url, posting),
    }


@pytest.mark.parametrize("owner", ["api key", "jwt"])
async def test_a_stolen_session_id_answers_404_to_anyone_else_and_401_without_credential(
    signer: Signer, owner: str
) -> None:
    async with world(signer) as w:
        mine = key("ci-bot") if owner == "api key" else bearer(w.token(sub="alice"))
        victim = await w.open(mine)
        progress = {"name": "notes__progress", "arguments": {"steps": 2}, "_meta": {"progressToken": "p"}}
        streamed = await victim.post(rpc(5, "tools/call", progress))
        event_id = next(line[4:] for line in streamed.text.splitlines() if line.startswith("id: "))
        thieves = {
            "another key of the same tenant": key("ci-bot-2"),
            "another tenant's key": key("zeta-bot"),
            "another JWT subject of the same tenant": bearer(w.token(sub="mallory")),
            "another JWT subject of another tenant": bearer(w.token(sub="mallory", tenant="zeta")),
        }
        if owner == "api key":
            thieves["a JWT of the same tenant"] = bearer(w.token(sub="alice"))
        else:
            thieves["an API key of the same tenant"] = key("ci-bot")
        # What a session id that does not exist gets, for the same requests: nobody may tell them apart.
        nothing = await intrude(w, "0" * 32, mine, event_id)
        assert {what: got.status for what, got in nothing.items()} == dict.fromkeys(nothing, 404)
        for thief, credential in thieves.items():
            for what, got in (await intrude(w, victim.session_id, credential, event_id)).items():
                assert (got.status, got.body) == (nothing[what].status, nothing[what].body), (thief, what)
        for what, got in (await intrude(w, victim.session_id, {}, event_id)).items():
            assert got.status == 401, what
            assert 'resource_metadata="' in got.headers["www-authenticate"], what

        # The owner's session is whole: calls, its stream, its replay, and it alone can end it.
        assert text_of(await victim.call("notes__echo", {"text": "still mine"})) == "notes: still mine"
        replay = await w.http.get(
            w.url, headers={**victim.headers, "accept": "text/event-stream", "last-event-id": event_id}
        )
        assert replay.status_code == 200
        assert [m.get("id") for m in sse_messages(replay.text) if "result" in m] == [5]
        listening = await answer(w.http, "GET", w.url, {**victim.headers, "accept": "text/event-stream"})
        assert listening.status == 200
        assert len(w.hub.sessions) == 1
        assert (await victim.post(rpc(9, "ping"))).status_code == 200
        assert (await w.http.delete(w.url, headers=victim.headers)).status_code == 200
        assert (await victim.post(rpc(10, "ping"))).status_code == 404


async def test_a_legacy_sse_session_answers_404_to_another_credential_and_401_without_one(signer: Signer) -> None:
    async with (
        world(signer) as w,
        w.http.stream("GET", f"{w.base}/sse", headers={**key("ci-bot"), "accept": "text/event-stream"}) as stream,
    ):
        assert stream.status_code == 200
        lines = stream.aiter_lines()
        async with asyncio.timeout(WAIT):
            endpoint = await next_data(lines)
        messages = f"{w.base}{endpoint}"

        async def post(credential: dict[str, str], message: dict[str, Any], url: str = messages) -> httpx.Response:
            return await w.http.post(url, json=message, headers={"content-type": "application/json", **credential})

        async def reply() -> dict[str, Any]:
            async with asyncio.timeout(WAIT):
                message: dict[str, Any] = json.loads(await next_data(lines))
            return message

        assert (await post(key("ci-bot"), rpc(1, "initialize", INIT))).status_code == 202
        assert (await reply())["id"] == 1
        assert (await post(key("ci-bot"), {"jsonrpc": "2.0", "method": "notifications/initialized"})).status_code == 202
        made_up = await post(key("ci-bot"), rpc(2, "ping"), f"{w.base}/messages?session_id={'0' * 32}")
        assert made_up.status_code == 404
        stolen = rpc(3, "tools/call", {"name": "notes__echo", "arguments": {"text": "stolen"}})
        for thief in (key("ci-bot-2"), key("zeta-bot"), bearer(w.token(sub="mallory")), key("ci-bot-2", "x-api-key")):
            refused = await post(thief, stolen)
            assert (refused.status_code, refused.content) == (made_up.status_code, made_up.content), thief
        anonymous = await post({}, stolen)
        assert anonymous.status_code == 401
        assert 'resource_metadata="' in anonymous.headers["www-authenticate"]

        # The owner's next reply on its stream is its own: nothing of the thieves' ran.
        assert (
            await post(key("ci-bot"), rpc(4, "tools/call", {"name": "notes__echo", "arguments": {"text": "mine"}}))
        ).status_code == 202
        mine = await reply()
        assert mine["id"] == 4 and text_of(mine) == "notes: mine"
        assert not [seen for seen in w.ups.notes.seen if b"stolen" in seen.body]


async def test_a_token_of_the_same_subject_for_another_tenant_cannot_use_the_session_of_the_first(
    signer: Signer,
) -> None:
    # The session was opened for (alice, acme): its view, its upstream credentials and its limits are acme's.
    # A token that makes alice a caller of zeta must not drive it, on either transport.
    async with world(signer) as w:
        acme_alice = bearer(w.token(sub="alice", tenant="acme"))
        zeta_alice = bearer(w.token(sub="alice", tenant="zeta"))
        let_in: list[str] = []
        async with w.http.stream("GET", f"{w.base}/sse", headers={**acme_alice, "accept": "text/event-stream"}) as sse:
            async with asyncio.timeout(WAIT):
                endpoint = await next_data(sse.aiter_lines())
            headers = {"content-type": "application/json", **zeta_alice}
            refused = await w.http.post(f"{w.base}{endpoint}", json=rpc(1, "ping"), headers=headers)
            if refused.status_code != 404:
                let_in.append(f"POST /messages: {refused.status_code}")
        victim = await w.open(acme_alice)
        nothing = await intrude(w, "0" * 32, zeta_alice, "x")
        for what, got in (await intrude(w, victim.session_id, zeta_alice, "x")).items():
            if (got.status, got.body) != (nothing[what].status, nothing[what].body):
                let_in.append(f"{what} /mcp: {got.status}")
        assert not let_in, let_in
        assert text_of(await victim.call("notes__echo", {"text": "mine"})) == "notes: mine"


async def test_a_session_taken_back_after_a_restart_is_still_only_its_owners(signer: Signer, tmp_path: Path) -> None:
    storage = {"storage": str(tmp_path / "manifold.db")}
    async with upstreams() as ups:
        async with hub_for(ups, signer, hub=storage) as before:
            victim = await before.open(key("ci-bot"))
            assert text_of(await victim.call("notes__echo", {"text": "before"})) == "notes: before"
        async with hub_for(ups, signer, hub=storage) as after:
            victim.http, victim.url = after.http, after.url
            nothing = await intrude(after, "0" * 32, key("ci-bot"), "x")
            for thief in (key("ci-bot-2"), key("zeta-bot"), bearer(after.token(sub="mallory"))):
                for what, got in (await intrude(after, victim.session_id, thief, "x")).items():
                    assert (got.status, got.body) == (nothing[what].status, nothing[what].body), (thief, what)
            assert len(after.hub.sessions) == 0  # nobody else's request took it back
            assert text_of(await victim.call("notes__echo", {"text": "after"})) == "notes: after"
            for what, got in (await intrude(after, victim.session_id, key("ci-bot-2"), "x")).items():
                assert (got.status, got.body) == (nothing[what].status, nothing[what].body), what
            assert text_of(await victim.call("notes__echo", {"text": "still"})) == "notes: still"


# -- 3. bad credentials ------------------------------------------------------------------------------


async def test_bad_tokens_and_keys_get_401_invalid_token_with_the_metadata_url_and_good_ones_get_in(
    signer: Signer,
) -> None:
    async with world(signer) as w:
        now = int(time.time())
        audience = w.url
        bad = {
            "an expired token": w.token(exp=now - 120, iat=now - 900),
            "a token not valid yet": w.token(nbf=now + 600),
            "a token for another audience": w.token(aud="https://other.example.com/mcp"),
            "a token from another issuer": w.token(iss="https://evil.example.com"),
            "a token without a subject": w.token(sub=None),
            "a token signed under an unknown kid": signer.by_stranger(audience, "k-unknown"),
            "a token signed by a stranger under a known kid": signer.by_stranger(audience, "r1"),
            "a tampered payload": signer.tampered(w.token(), tenant="zeta", sub="mallory"),
            "alg none": signer.unsigned(audience),
            "HS256 with the RSA public key as the secret": signer.hmac_with_public_key(audience),
            "an unknown API key": "mfd_unknown-Qw3rTy7uIo9p",
            "an expired API key": KEYS["retired"],
            "a known key with one more character": KEYS["ci-bot"] + "x",
        }
        for what, credential in bad.items():
            for header in (bearer(credential), {"x-api-key": credential}):
                refused = await w.initialize(header)
                challenge = challenge_of(refused)
                assert challenge.startswith("Bearer "), what
                assert f'resource_metadata="{w.metadata_url}"' in challenge, what
                assert 'error="invalid_token"' in challenge, what
                assert credential not in refused.text and credential not in challenge, what
                legacy = await answer(w.http, "GET", f"{w.base}/sse", {**header, "accept": "text/event-stream"})
                assert legacy.status == 401 and 'error="invalid_token"' in legacy.headers["www-authenticate"], what
        basic = await w.initialize({"authorization": "Basic " + _b64(b"ci-bot:" + KEYS["ci-bot"].encode())})
        assert 'error="invalid_token"' in challenge_of(basic)

        unscoped = await w.initialize(bearer(w.token(scope="profile email")))
        challenge = challenge_of(unscoped, 403)
        assert 'error="insufficient_scope"' in challenge and 'scope="mcp"' in challenge
        assert f'resource_metadata="{w.metadata_url}"' in challenge
        challenge_of(await w.initialize(bearer(w.token(tenant="umbrella"))), 403)
        assert len(w.hub.sessions) == 0

        # Good credentials get in, each as its own principal and tenant; a refused forgery poisoned nothing.
        for good in (key("ci-bot"), key("ci-bot", "x-api-key"), bearer(w.token(kid="e1")), bearer(w.token(kid="d1"))):
            client = await w.open(good)
            assert text_of(await client.call("notes__echo", {"text": "in"})) == "notes: in"
        principals = sorted((s.caller.principal, s.caller.tenant) for s in w.hub.sessions)
        assert principals == [(f"jwt:{ISSUER}#alice", "acme")] * 2 + [("key:ci-bot", "acme")] * 2


async def test_a_refreshed_token_for_the_same_issuer_and_subject_keeps_its_session(signer: Signer) -> None:
    async with world(signer) as w:
        now = int(time.time())
        client = await w.open(bearer(w.token(sub="alice", iat=now - 500, exp=now + 60)))
        assert text_of(await client.call("notes__echo", {"text": "one"})) == "notes: one"
        refreshed = bearer(w.token(kid="e1", sub="alice", iat=now, exp=now + 3600))  # another key, another token
        client.headers.update(refreshed)
        assert text_of(await client.call("notes__echo", {"text": "two"})) == "notes: two"
        assert len(w.hub.sessions) == 1
        client.headers.update(bearer(w.token(sub="bob")))
        assert (await client.post(rpc(50, "ping"))).status_code == 404


async def test_the_protected_resource_metadata_is_public_and_names_this_hub(signer: Signer) -> None:
    async with world(signer) as w:
        challenge = challenge_of(await w.initialize({}))
        assert challenge == f'Bearer resource_metadata="{w.metadata_url}"'
        for path in ("/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"):
            document = (await w.http.get(f"{w.base}{path}")).json()
            assert document["resource"] == w.url
            assert document["authorization_servers"] == [ISSUER]
            assert document["scopes_supported"] == ["mcp"]


# -- 4. upstreams: shared sessions per tenant, and only the config's credentials ---------------------


async def test_a_shared_upstream_keeps_each_tenants_state_and_headers_apart(signer: Signer) -> None:
    async with world(signer) as w:
        acme, acme_again, zeta = (
            await w.open(key("ci-bot")),
            await w.open(key("ci-bot-2")),
            await w.open(key("zeta-bot")),
        )

        async def count(client: Client, tag: str) -> str:
            return text_of(await client.call("shared__count", {"tag": tag}))

        counts = [
            await count(acme, "acme-1"),
            await count(acme, "acme-2"),
            await count(zeta, "zeta-1"),
            await count(acme_again, "acme-3"),  # the same tenant shares its upstream session
            await count(zeta, "zeta-2"),
        ]
        assert counts == ["1", "2", "1", "3", "2"]

        shared = w.ups.shared
        acme_sessions, zeta_sessions = shared.sessions_with('"acme-'), shared.sessions_with('"zeta-')
        assert len(acme_sessions) == 1 and len(zeta_sessions) == 1 and acme_sessions != zeta_sessions
        for seen in shared.seen:
            secret = seen.values("x-tenant-secret")
            if seen.session in acme_sessions:
                assert secret == [ENV["ACME_SHARED_SECRET"]], seen.text()
            elif seen.session in zeta_sessions:
                assert secret == [ENV["ZETA_SHARED_SECRET"]], seen.text()
            else:
                assert secret == [], seen.text()  # the discovery session speaks for no tenant

        # Isolated upstreams: a tenant's header goes with its own sessions' requests, and no others.
        assert text_of(await acme.call("notes__echo", {"text": "acme-notes"})) == "notes: acme-notes"
        assert text_of(await zeta.call("clock__echo", {"text": "zeta-clock"})) == "clock: zeta-clock"
        for recorder, marker, header, value in (
            (w.ups.notes, "acme-notes", "authorization", f"Bearer {ENV['ACME_NOTES_TOKEN']}"),
            (w.ups.clock, "zeta-clock", "x-clock-key", ENV["ZETA_CLOCK_KEY"]),
        ):
            tenant_sessions = recorder.sessions_with(marker)
            assert len(tenant_sessions) == 1
            for seen in recorder.seen:
                assert seen.values(header) == ([value] if seen.session in tenant_sessions else []), seen.text()


async def test_a_tenants_upstream_header_replaces_the_upstreams_own_of_the_same_name_whatever_its_case(
    signer: Signer,
) -> None:
    # HTTP header names are case-insensitive: the upstream must get the tenant's credential alone, never
    # the hub-wide one beside it (an upstream that reads the first would serve acme as someone else).
    own = {"headers": {"authorization": "Bearer ${NOTES_OWN_KEY}"}}
    async with world(signer, servers={"notes": own}) as w:
        acme = await w.open(key("ci-bot"))
        assert text_of(await acme.call("notes__echo", {"text": "whose"})) == "notes: whose"
        [acme_session] = w.ups.notes.sessions_with("whose")
        for seen in w.ups.notes.seen:
            expected = ENV["ACME_NOTES_TOKEN"] if seen.session == acme_session else ENV["NOTES_OWN_KEY"]
            assert seen.values("authorization") == [f"Bearer {expected}"], seen.text()


def _client_secrets(signer: Signer) -> list[str]:
    """Everything a client authenticates with: API keys, their digests, every token made."""
    secrets = [*KEYS.values(), *(digest(value) for value in KEYS.values()), *signer.minted]
    return secrets + [token.split(".")[2] for token in signer.minted if len(token.split(".")[2]) > 16]


async def test_no_client_credential_ever_reaches_an_upstream_only_the_configured_headers(signer: Signer) -> None:
    async with world(signer) as w:
        credentials = [
            (key("ci-bot"), "notes"),
            (key("ci-bot-2", "x-api-key"), "notes"),
            (bearer(w.token(sub="alice")), "notes"),
            (key("zeta-bot"), "clock"),
            (bearer(w.token(kid="d1", sub="zed", tenant="zeta")), "clock"),
        ]
        for credential, own in credentials:
            client = await w.open(credential)
            assert text_of(await client.call(f"{own}__echo", {"text": "hello"})) == f"{own}: hello"
            progress = {"name": f"{own}__progress", "arguments": {"steps": 2}, "_meta": {"progressToken": 1}}
            assert (await client.post(rpc(40, "tools/call", progress))).status_code == 200
            assert "result" in await client.request("prompts/get", {"name": f"{own}__greet", "arguments": {"who": "x"}})
            assert "result" in await client.request("resources/read", {"uri": f"manifold://{own}/item://1"})
            assert "result" in await client.request("logging/setLevel", {"level": "debug"})
            assert "result" in await client.call("shared__count", {"tag": own})
            assert (await w.http.delete(w.url, headers=client.headers)).status_code == 200
        async with w.http.stream(
            "GET", f"{w.base}/sse", headers={**key("ci-bot"), "accept": "text/event-stream"}
        ) as sse:
            lines = sse.aiter_lines()
            async with asyncio.timeout(WAIT):
                endpoint = await next_data(lines)
                for message in (
                    rpc(1, "initialize", INIT),
                    rpc(2, "tools/call", {"name": "notes__echo", "arguments": {"text": "old"}}),
                ):
                    posted = await w.http.post(
                        f"{w.base}{endpoint}",
                        json=message,
                        headers={**key("ci-bot"), "content-type": "application/json"},
                    )
                    assert posted.status_code == 202
                    assert json.loads(await next_data(lines))["id"] == message["id"]
        await until(lambda: len(w.hub.sessions) == 0, "every session closed (and its upstream sessions with it)")

    configured = {
        "notes": {"x-notes-key": {ENV["NOTES_OWN_KEY"]}, "authorization": {f"Bearer {ENV['ACME_NOTES_TOKEN']}"}},
        "clock": {"x-clock-key": {ENV["ZETA_CLOCK_KEY"]}},
        "shared": {"x-tenant-secret": {ENV["ACME_SHARED_SECRET"], ENV["ZETA_SHARED_SECRET"]}},
    }
    secrets = _client_secrets(signer)
    for name, recorder in w.ups.recorders.items():
        assert len(recorder.seen) > 10, name
        for seen in recorder.seen:
            text = seen.text()
            assert not [secret for secret in secrets if secret in text], (name, text)
            assert "x-api-key" not in dict(seen.headers), (name, text)
            for header, value in seen.headers:
                if header not in PROTOCOL_HEADERS:
                    assert value in configured[name].get(header, set()), (name, header, text)
    # The configured ones did arrive: the upstream's own on every request, the tenant's on its sessions.
    assert all(seen.values("x-notes-key") == [ENV["NOTES_OWN_KEY"]] for seen in w.ups.notes.seen)
    assert any(seen.values("authorization") for seen in w.ups.notes.seen)
    assert any(seen.values("x-clock-key") for seen in w.ups.clock.seen)


# -- 5. limits ---------------------------------------------------------------------------------------


def limited(response: httpx.Response, limit: str, request_id: Any) -> float:
    """Check a 429 that names ``limit`` with Retry-After and a JSON-RPC error; returns the seconds to wait."""
    assert response.status_code == 429, response.text
    retry = int(response.headers["retry-after"])
    assert retry >= 1
    body = response.json()
    assert body["jsonrpc"] == "2.0" and body["id"] == request_id, body
    assert body["error"]["code"] == -32029 and limit in body["error"]["message"], body
    assert body["error"]["data"] == {"retryAfter": retry}, body
    return float(retry)


async def recovers(client: Client, message: Callable[[int], dict[str, Any]], retry: float) -> float:
    """Poll until a request gets through again, within Retry-After (and a little); returns how long it took."""
    request_id = 1000

    async def through() -> bool:
        nonlocal request_id
        request_id += 1
        response = await client.post(message(request_id))
        assert response.status_code in (200, 429), response.text
        return response.status_code == 200

    return await until(through, "the limit lets requests through again", limit=retry + 1.0)


async def test_requests_past_the_rate_and_burst_get_429_naming_the_limit_and_get_through_after_retry_after(
    signer: Signer,
) -> None:
    async with world(signer, limits={"acme": {"requestsPerMinute": 120, "burst": 3}}) as w:
        acme = await w.open(key("ci-bot"))  # initialize takes one of the three
        zeta = await w.open(key("zeta-bot"))
        assert "result" in await acme.request("ping")
        assert "result" in await acme.request("tools/list")
        retry = limited(await acme.post(rpc(9, "ping")), "requestsPerMinute", 9)
        limited(
            await acme.post(rpc(10, "tools/call", {"name": "notes__echo", "arguments": {"text": "x"}})),
            "requestsPerMinute",
            10,
        )
        limited(await w.initialize(key("ci-bot-2")), "requestsPerMinute", 0)  # the tenant's bucket, for all its keys
        assert text_of(await zeta.call("clock__echo", {"text": "free"})) == "clock: free"
        assert await recovers(acme, lambda i: rpc(i, "ping"), retry) <= retry + 0.5
        assert text_of(await zeta.call("clock__echo", {"text": "still"})) == "clock: still"


async def test_tool_calls_past_tool_calls_per_minute_get_429_while_other_requests_go_on(signer: Signer) -> None:
    async with world(signer, limits={"acme": {"toolCallsPerMinute": 120, "burst": 2}}) as w:
        acme = await w.open(key("ci-bot"))
        echo = {"name": "notes__echo", "arguments": {"text": "x"}}
        for _ in range(2):
            assert text_of(await acme.request("tools/call", echo)) == "notes: x"
        retry = limited(await acme.post(rpc(9, "tools/call", echo)), "toolCallsPerMinute", 9)
        assert "result" in await acme.request("tools/list")  # only tool calls are counted by this limit
        assert await recovers(acme, lambda i: rpc(i, "tools/call", echo), retry) <= retry + 0.5


async def test_calls_past_max_concurrent_calls_get_429_and_a_finished_or_cancelled_call_frees_its_slot(
    signer: Signer,
) -> None:
    async with world(signer, limits={"acme": {"maxConcurrentCalls": 1}}) as w:
        acme, other = await w.open(key("ci-bot")), await w.open(key("ci-bot-2"))
        held = w.ups.held
        hold = asyncio.create_task(acme.post(rpc(5, "tools/call", {"name": "notes__hold", "arguments": {}})))
        try:
            async with asyncio.timeout(WAIT):
                await held.started.wait()
            echo = {"name": "notes__echo", "arguments": {"text": "x"}}
            limited(await other.post(rpc(6, "tools/call", echo)), "maxConcurrentCalls", 6)
            limited(await acme.post(rpc(7, "tools/call", echo)), "maxConcurrentCalls", 7)
            assert "result" in await other.request("tools/list")
            held.release.set()
            async with asyncio.timeout(WAIT):
                finished = await hold
            assert [text_of(m) for m in messages_in(finished)] == ["released"]
        finally:
            held.release.set()
            hold.cancel()
        assert text_of(await other.request("tools/call", echo)) == "notes: x"  # the slot came back at once

        # A call the client cancels frees its slot too.
        held.started.clear()
        held.release.clear()
        hold = asyncio.create_task(acme.post(rpc(8, "tools/call", {"name": "notes__hold", "arguments": {}})))
        try:
            async with asyncio.timeout(WAIT):
                await held.started.wait()
            cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 8}}
            assert (await acme.post(cancel)).status_code == 202
            async with asyncio.timeout(WAIT):
                await hold
        finally:
            held.release.set()
            hold.cancel()
        await recovers(other, lambda i: rpc(i, "tools/call", echo), 1.0)


async def test_sessions_past_max_sessions_get_429_and_a_closed_one_makes_room(signer: Signer) -> None:
    async with world(signer, limits={"acme": {"maxSessions": 2}}) as w:
        first, second = await w.open(key("ci-bot")), await w.open(key("ci-bot-2"))
        for client in (first, second):
            assert "result" in await client.request("ping")  # used: a session in use is never evicted
        retry = limited(await w.initialize(key("ci-bot")), "maxSessions", 0)
        legacy = await answer(w.http, "GET", f"{w.base}/sse", {**key("ci-bot"), "accept": "text/event-stream"})
        assert legacy.status == 429 and "maxSessions" in legacy.json()["error"]["message"]
        zeta = await w.open(key("zeta-bot"))  # other tenants' sessions are theirs to count
        assert text_of(await zeta.call("clock__echo", {"text": "z"})) == "clock: z"
        assert (await w.http.delete(w.url, headers=first.headers)).status_code == 200

        async def room() -> bool:
            response = await w.initialize(key("ci-bot"))
            assert response.status_code in (200, 429), response.text
            return response.status_code == 200

        await until(room, "a session closed makes room", limit=retry + 1.0)
        assert text_of(await second.call("notes__echo", {"text": "kept"})) == "notes: kept"


# -- 6. a flood from one tenant ----------------------------------------------------------------------

FLOODER = """
import asyncio, collections, json, sys, time
import httpx

async def main():
    url, headers, workers = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    counts = collections.Counter()
    stop = asyncio.Event()
    said = asyncio.Event()

    async def flood():
        async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
            for i in range(1_000_000):
                if stop.is_set():
                    return
                call = {"jsonrpc": "2.0", "id": i, "method": "tools/call",
                        "params": {"name": "clock__echo", "arguments": {"text": "flood"}}}
                status = (await http.post(url, json=call, headers=headers)).status_code
                counts[status] += 1
                if status == 429 and not said.is_set():
                    said.set()
                    print("refused", flush=True)

    async def until_stdin_closes():
        await asyncio.wait_for(asyncio.to_thread(sys.stdin.read), 30)  # bounded: never outlives the test by long
        stop.set()

    started = time.monotonic()
    await asyncio.gather(until_stdin_closes(), *(flood() for _ in range(workers)))
    print(json.dumps({"counts": counts, "seconds": time.monotonic() - started}), flush=True)

asyncio.run(main())
"""


async def test_one_tenant_flooding_past_its_limit_leaves_another_tenants_calls_and_latency_alone(
    signer: Signer,
) -> None:
    # The flood comes from another process, as an attacker's would: the test's own loop measures the hub only.
    # The quiet tenant's latency without the flood is measured both before and after it, so that a machine
    # busy with something else for a moment does not pass for the hub's doing.
    async with world(signer, limits={"zeta": {"requestsPerMinute": 600, "burst": 10}}) as w:
        quiet = await w.open(key("ci-bot"))
        noisy = await w.open(key("zeta-bot"))

        async def p50(count: int = 60) -> float:
            times = []
            for i in range(count):
                started = time.perf_counter()
                reply = await quiet.call("notes__echo", {"text": str(i)})
                times.append(time.perf_counter() - started)
                assert text_of(reply) == f"notes: {i}"  # never refused, never wrong
            return statistics.median(times)

        await p50(10)  # warm: the upstream session opened, connections made
        before = await p50()
        flooder = await asyncio.create_subprocess_exec(
            *(sys.executable, "-c", FLOODER, w.url, json.dumps(noisy.headers), "32"),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert flooder.stdin is not None and flooder.stdout is not None
            async with asyncio.timeout(WAIT):
                assert await flooder.stdout.readline() == b"refused\n"
            during = await p50()
            flooder.stdin.close()
            async with asyncio.timeout(WAIT):
                report = json.loads(await flooder.stdout.read())
                await flooder.wait()
        finally:
            if flooder.returncode is None:
                flooder.kill()
                await flooder.wait()
        after = await p50()
        counts = {int(status): count for status, count in report["counts"].items()}
        assert set(counts) == {200, 429} and counts[429] > counts[200], report  # past its limit, and refused
        assert counts[200] <= 10 + 10 * report["seconds"] + 2, report  # the burst, then 10 a second
        quiet_p50 = max(before, after)
        assert during <= max(3 * quiet_p50, quiet_p50 + 0.020), (before, during, after)


# -- 7. exposure, health and the audit trail ---------------------------------------------------------


async def test_a_hub_on_a_public_address_without_auth_refuses_to_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    servers = {"notes": {"url": "http://127.0.0.1:9/mcp"}}
    open_config = parse_config({"hub": {"storage": ":memory:"}, "mcpServers": servers}, env={})
    problem = exposure_problem(open_config, "0.0.0.0")
    assert problem is not None and "apiKeys" in problem and "allowAnonymous" in problem
    assert exposure_problem(open_config, "127.0.0.1") is None
    anonymous = parse_config({"hub": {"allowAnonymous": True}, "mcpServers": servers}, env={})
    assert exposure_problem(anonymous, "0.0.0.0") is None
    keyed = {"apiKeys": [{"name": "k", "sha256": digest("k"), "tenant": "acme"}]}
    with_auth = parse_config({"mcpServers": servers, "auth": keyed, "tenants": {"acme": {}}}, env={})
    assert exposure_problem(with_auth, "0.0.0.0") is None

    path = tmp_path / "open.json"
    path.write_text(json.dumps({"hub": {"storage": ":memory:"}, "mcpServers": servers}))
    port_socket = tcp_socket()
    port = port_socket.getsockname()[1]
    port_socket.close()
    env = {name: value for name, value in os.environ.items() if not name.startswith("MANIFOLD_")}
    command = [sys.executable, "-m", "hub", "serve", "--config", str(path), "--host", "0.0.0.0", "--port", str(port)]
    process = await asyncio.create_subprocess_exec(
        *command, cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(30):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            os.kill(process.pid, signal.SIGKILL)
            await process.wait()
    said = (out + err).decode()
    assert process.returncode == 2, said
    assert "apiKeys" in said and "allowAnonymous" in said, said
    assert "Uvicorn running" not in said and "Application startup" not in said, said
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass

    # `manifold check` says the same of a file that listens there; with allowAnonymous it passes.
    for settings, code in (({"host": "0.0.0.0"}, 2), ({"host": "0.0.0.0", "allowAnonymous": True}, 0)):
        path.write_text(json.dumps({"hub": {"storage": ":memory:", **settings}, "mcpServers": servers}))
        assert main(["check", str(path)]) == code
    said = capsys.readouterr().err
    assert said.count("allowAnonymous") == 1, said


async def test_health_tells_strangers_only_that_the_hub_is_up_and_admins_the_detail(signer: Signer) -> None:
    async with world(signer) as w:
        public = await w.http.get(f"{w.base}/health")
        assert public.status_code == 200
        assert set(public.json()) <= {"status", "server"} and public.json()["status"] == "ok"
        for credential in (key("ci-bot"), {"authorization": "Bearer mfd_nobody"}, bearer(w.token())):
            answered = await w.http.get(f"{w.base}/health", headers=credential)
            assert (answered.status_code, answered.json()) == (200, public.json()), credential
        for name in ("notes", "clock", "shared", "acme", "zeta"):
            assert name not in public.text
        detail = await w.http.get(f"{w.base}/health", headers=key("ops"))
        assert detail.status_code == 200
        assert {upstream["name"] for upstream in detail.json()["upstreams"]} == {"notes", "clock", "shared"}
        assert not [secret for secret in (*ENV.values(), *_client_secrets(signer)) if secret in detail.text]


async def test_the_audit_trail_needs_an_admin_and_records_calls_refusals_and_failures_without_secrets(
    signer: Signer,
) -> None:
    async with world(signer, limits={"zeta": {"requestsPerMinute": 60, "burst": 2}}) as w:
        audit = f"{w.base}/audit"
        assert f'resource_metadata="{w.metadata_url}"' in challenge_of(await w.http.get(audit))
        assert 'error="invalid_token"' in challenge_of(await w.http.get(audit, headers=bearer("mfd_nobody")))
        challenge_of(await w.http.get(audit, headers=key("ci-bot")), 403)

        acme = await w.open(key("ci-bot"))
        assert text_of(await acme.call("notes__echo", {"text": "audited"})) == "notes: audited"
        assert "error" in await acme.call("clock__echo", {"text": "outside"})
        zeta = await w.open(key("zeta-bot"))
        assert "result" in await zeta.request("ping")
        limited(await zeta.post(rpc(9, "tools/call", {"name": "clock__echo", "arguments": {}})), "requestsPerMinute", 9)
        expired = w.token(exp=int(time.time()) - 300)
        challenge_of(await w.initialize(bearer(expired)))
        challenge_of(await w.initialize({"x-api-key": KEYS["retired"]}))

        response = await w.http.get(audit, headers=key("ops"))
        assert response.status_code == 200
        records = response.json()

        def found(**fields: Any) -> list[dict[str, Any]]:
            return [r for r in records if all(r.get(name) == value for name, value in fields.items())]

        assert found(method="tools/call", name="notes__echo", outcome="ok", tenant="acme", principal="key:ci-bot")
        assert found(method="tools/call", name="notes__echo", upstream="notes")
        outside = found(name="clock__echo", tenant="acme", code=-32602, upstream="")  # asked no upstream
        assert outside and {r["outcome"] for r in outside} <= {"error", "refused"}, records
        assert found(name="clock__echo", tenant="zeta", outcome="refused", code=-32029)
        failures = found(outcome="refused", code=-32030, principal="")
        assert len(failures) >= 4, records  # the two probes of /audit and the two initializes
        assert not [secret for secret in (*ENV.values(), *_client_secrets(signer)) if secret in response.text]
        only_zeta = (await w.http.get(audit, params={"tenant": "zeta"}, headers=key("ops"))).json()
        assert only_zeta and {r["tenant"] for r in only_zeta} == {"zeta"}


# -- 8. logs -----------------------------------------------------------------------------------------


async def test_no_secret_reaches_a_log_anywhere_in_the_suite(signer: Signer, suite_logs: list[str]) -> None:
    # Its own attacks at DEBUG, on top of everything the suite did before it (run in file order).
    async with world(signer) as w:
        for credential in (KEYS["retired"], KEYS["ci-bot"] + "x", signer.unsigned(w.url), w.token(aud="x")):
            challenge_of(await w.initialize(bearer(credential)))
        client = await w.open(key("ci-bot"))
        assert "result" in await client.call("notes__echo", {"text": "logged"})
        assert "result" in await client.call("shared__count", {"tag": "logged"})
    assert len(suite_logs) > 100
    secrets = [*ENV.values(), *_client_secrets(signer)]
    leaks = [(secret, line) for line in suite_logs for secret in secrets if secret in line]
    assert not leaks, leaks[:5]
