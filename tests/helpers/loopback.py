"""Real HTTP (and websocket) servers on 127.0.0.1, port 0, inside the test's event loop.

    app = Starlette(routes=[Route("/x", handler)])
    async with serve_asgi(app) as base_url:
        ...  # base_url is e.g. "http://127.0.0.1:54321"

Uvicorn serves the ASGI app for real (sockets, HTTP parsing, websockets); nothing is mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import uvicorn


class _Server(uvicorn.Server):
    """Uvicorn without signal handling: Ctrl-C still stops the test run, not just the server."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serve_asgi(
    app: Any, *, graceful_seconds: int = 1, send_buffer_bytes: int | None = None
) -> AsyncIterator[str]:
    """Serve ``app`` on a free loopback port for the duration of the block; yields the base URL.

    ``send_buffer_bytes`` fixes the send buffer (``SO_SNDBUF``) of the connections it accepts (set
    on the listening socket, which they inherit; the kernel then no longer grows it up to
    ``net.ipv4.tcp_wmem``): for a test of a client that stops reading, whatever the machine's."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="off",
        access_log=False,
        timeout_graceful_shutdown=graceful_seconds,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        if task.done():
            task.result()  # raises the startup error
        if not server.started:
            raise RuntimeError("the loopback server did not start")
        listening = server.servers[0].sockets
        if send_buffer_bytes is not None:
            for sock in listening:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer_bytes)
        port = listening[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        try:
            await asyncio.wait_for(task, graceful_seconds + 5)
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
