"""The hot-path HTTP/1.1 client against a real uvicorn server: keep-alive, streaming, closes, TLS, errors."""

from __future__ import annotations

import asyncio
import datetime
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from connectors.http1 import Http1Error, Http1Pool
from tests.servers import START_DEADLINE, _Server, asgi_body, asgi_lifespan, reserve_port, serve

pytestmark = pytest.mark.anyio

WAIT = 10.0


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {"use_uvloop": False}), id="asyncio"),
        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),  # what `manifold serve` runs on
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


class Echo:
    """Echoes the body; ``/stream`` answers in chunks as the test releases them; ``/close`` says Connection: close."""

    def __init__(self) -> None:
        self.clients: list[Any] = []
        self.chunks: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await asgi_lifespan(receive, send)
            return
        self.clients.append(tuple(scope["client"]))
        body = await asgi_body(receive)
        headers = [(b"content-type", b"application/octet-stream"), (b"x-seen-length", str(len(body)).encode())]
        if scope["path"] == "/close":
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if scope["path"] == "/stream":
            while (chunk := await self.chunks.get()) is not None:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        else:
            await send({"type": "http.response.body", "body": body})


async def test_keep_alive_reuses_one_connection_for_sequential_posts() -> None:
    app = Echo()
    async with serve(app) as url, Http1Pool(f"{url}/echo") as pool:
        for size in (0, 10, 100_000):
            response = await pool.post({"x-test": "1"}, b"x" * size)
            assert response.status == 200
            assert response.headers["x-seen-length"] == str(size)
            assert await response.read() == b"x" * size
    assert len(app.clients) == 3 and len(set(app.clients)) == 1


async def test_concurrent_posts_get_their_own_connections_and_answers() -> None:
    app = Echo()
    async with serve(app) as url, Http1Pool(f"{url}/echo") as pool:

        async def one(number: int) -> bytes:
            response = await pool.post({}, str(number).encode())
            return await response.read()

        assert await asyncio.gather(*(one(n) for n in range(20))) == [str(n).encode() for n in range(20)]


async def test_a_streamed_body_arrives_chunk_by_chunk() -> None:
    app = Echo()
    async with serve(app) as url, Http1Pool(f"{url}/stream") as pool:
        response = await pool.post({}, b"")
        body = aiter(response)
        for chunk in (b"event: message\n", b"data: {}\n\n"):
            app.chunks.put_nowait(chunk)
            assert await asyncio.wait_for(anext(body), WAIT) == chunk
        app.chunks.put_nowait(None)
        assert [chunk async for chunk in body] == []
        assert response.complete


async def test_a_large_body_is_read_whole_through_backpressure() -> None:
    app = Echo()
    payload = bytes(range(256)) * 20_000  # 5 MB: the socket is paused and resumed on the way
    async with serve(app) as url, Http1Pool(f"{url}/echo") as pool:
        response = await pool.post({}, payload)
        assert await response.read() == payload


async def test_connection_close_is_honoured_and_a_fresh_connection_is_used() -> None:
    app = Echo()
    async with serve(app) as url, Http1Pool(f"{url}/close") as pool:
        for _ in range(2):
            response = await pool.post({}, b"hi")
            assert await response.read() == b"hi"
    assert len(set(app.clients)) == 2


async def test_a_released_unfinished_reply_closes_its_connection() -> None:
    app = Echo()
    async with serve(app) as url:
        async with Http1Pool(f"{url}/stream") as pool:
            response = await pool.post({}, b"")
            response.release()  # walked away mid-body: that connection cannot carry another request
            app.chunks.put_nowait(None)
        async with Http1Pool(f"{url}/echo") as pool:
            assert await (await pool.post({}, b"next")).read() == b"next"


async def test_refused_connections_and_bad_headers_are_errors() -> None:
    closed = reserve_port()
    try:
        async with Http1Pool(f"http://127.0.0.1:{closed.getsockname()[1]}/mcp") as pool:
            with pytest.raises(Http1Error, match="Connection refused"):
                await pool.post({}, b"")
    finally:
        closed.close()
    with pytest.raises(Http1Error, match="line break"):
        Http1Pool("http://127.0.0.1:1/mcp")._request({"x-evil": "a\r\nInjected: 1"}, b"")
    with pytest.raises(ValueError, match="not an http"):
        Http1Pool("ftp://127.0.0.1/mcp")


def _certificate(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@asynccontextmanager
async def serve_tls(app: Echo, cert: Path, key: Path) -> AsyncIterator[int]:
    sock = reserve_port()
    config = uvicorn.Config(app, log_level="warning", ssl_certfile=str(cert), ssl_keyfile=str(key))
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await asyncio.wait_for(server.ready.wait(), START_DEADLINE)
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, START_DEADLINE)
        sock.close()


async def test_https_upstreams_are_spoken_to_over_verified_tls(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path)
    app = Echo()
    async with serve_tls(app, cert, key) as port:
        trusted = ssl.create_default_context(cafile=str(cert))
        async with Http1Pool(f"https://localhost:{port}/echo", ssl_context=trusted) as pool:
            assert await (await pool.post({}, b"secret")).read() == b"secret"
        async with Http1Pool(f"https://localhost:{port}/echo") as untrusting:
            with pytest.raises((Http1Error, ssl.SSLError)):
                await untrusting.post({}, b"secret")


async def test_an_interim_reply_is_skipped_for_the_final_one() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(
            next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")).split(b":")[1]
        )
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, Http1Pool(f"http://127.0.0.1:{port}/mcp") as pool:
        response = await pool.post({}, b"{}")
        assert response.status == 200
        assert "link" not in response.headers
        assert await response.read() == b"{}"
