"""``toolweave serve``'s connection limits (``api.connections``, ``cli.serve.connection_limits``):
a client that sends half a request's headers and stalls is disconnected once the header time has
passed, headers past their size are answered 431, and a request whose headers arrived in time is
answered however long its answer takes. uvicorn on loopback, configured as ``serve`` configures it;
raw sockets for the clients."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from toolweave.cli.serve import connection_limits
from toolweave.settings import Settings

HEADER_SECONDS = 0.5
SAFETY_SECONDS = 60.0  # how long a test waits for what must happen (not a measurement)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _slow(request: Request) -> Response:
    async def ticks() -> AsyncIterator[bytes]:
        for _ in range(4):  # an answer that takes longer than the header time, like an event stream
            await asyncio.sleep(HEADER_SECONDS)
            yield b"tick\n"
    return StreamingResponse(ticks(), media_type="text/plain")


async def _echo(request: Request) -> Response:
    return PlainTextResponse(f"got {len(await request.body())} bytes")


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[str, int]]:
    settings = Settings(home=tmp_path, http_header_timeout_seconds=HEADER_SECONDS, http_max_header_bytes=4096)
    app = Starlette(routes=[Route("/slow", _slow), Route("/echo", _echo, methods=["POST"])])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, lifespan="off", log_level="warning", timeout_graceful_shutdown=1,
                            **connection_limits(settings))
    srv = _Server(config)
    task = asyncio.create_task(srv.serve(sockets=[sock]))
    while not srv.started:
        assert not task.done(), task.result()
        await asyncio.sleep(0.01)
    yield sock.getsockname()
    srv.should_exit = True
    await asyncio.wait_for(task, SAFETY_SECONDS)


async def _read_all(reader: asyncio.StreamReader) -> bytes:
    """Everything until the server closes the connection."""
    return await asyncio.wait_for(reader.read(), SAFETY_SECONDS)


async def test_a_client_that_stalls_halfway_through_its_headers_is_disconnected(server: tuple[str, int]) -> None:
    reader, writer = await asyncio.open_connection(*server)
    writer.write(b"GET /slow HTTP/1.1\r\nHost: toolweave\r\nX-Slow: abc")  # and nothing more
    await writer.drain()
    assert await _read_all(reader) == b""  # closed, without an answer
    writer.close()


async def test_a_client_that_sends_its_headers_a_byte_at_a_time_is_disconnected(server: tuple[str, int]) -> None:
    reader, writer = await asyncio.open_connection(*server)
    header = b"GET /slow HTTP/1.1\r\nHost: toolweave\r\n" + b"X-Drip: " + b"a" * 400
    closed = asyncio.create_task(_read_all(reader))
    for byte in header:  # each byte well inside the time, the whole far past it
        if closed.done():
            break
        writer.write(bytes([byte]))
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        await asyncio.sleep(HEADER_SECONDS / 20)
    assert await closed == b""
    assert closed.done()
    writer.close()


async def test_headers_past_their_size_are_answered_431(server: tuple[str, int]) -> None:
    reader, writer = await asyncio.open_connection(*server)
    writer.write(b"GET /slow HTTP/1.1\r\nHost: toolweave\r\n" + b"X-Big: " + b"a" * 8000 + b"\r\n")
    await writer.drain()
    answer = await _read_all(reader)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    writer.close()


async def test_a_request_whose_headers_came_in_time_takes_what_its_answer_takes(server: tuple[str, int]) -> None:
    reader, writer = await asyncio.open_connection(*server)
    # a keep-alive connection: an answer longer than the header time, then a second request with a
    # body sent slowly after its headers, then the client leaves
    writer.write(b"GET /slow HTTP/1.1\r\nHost: toolweave\r\n\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), SAFETY_SECONDS)
    assert head.startswith(b"HTTP/1.1 200 "), head
    body = await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), SAFETY_SECONDS)
    assert body.count(b"tick") == 4
    writer.write(b"POST /echo HTTP/1.1\r\nHost: toolweave\r\nContent-Length: 6\r\nConnection: close\r\n\r\nabc")
    await writer.drain()
    await asyncio.sleep(HEADER_SECONDS * 2)  # the body is slow; its headers were complete
    writer.write(b"def")
    await writer.drain()
    answer = await _read_all(reader)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"got 6 bytes"), answer
    writer.close()
