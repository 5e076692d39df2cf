"""An API that takes a request and never answers it: raw sockets on 127.0.0.1, no HTTP library.

It reads each request whole (headers and a ``Content-Length`` body), counts it, and then either
stalls (``mode="stall"``: the connection stays open, silent, until the server stops) or drops the
connection (``mode="drop"``: closed without a byte of answer). After ``answer_after`` requests it
answers the next ones with ``answer`` (a JSON body, HTTP 200), so a retry can succeed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any, Literal


class UnansweringApi:
    def __init__(self, mode: Literal["stall", "drop"], *, answer_after: int | None = None,
                 answer: Any = None) -> None:
        self.mode = mode
        self.answer_after = answer_after
        self.answer = answer
        self.requests: list[bytes] = []
        """Each request's first line and body, as received in full."""
        self._server: asyncio.Server | None = None
        self._stop = asyncio.Event()
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def base_url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def start(self) -> UnansweringApi:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._handlers):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                body = await reader.readexactly(length) if length else b""
                self.requests.append(head.split(b"\r\n", 1)[0] + b"\n" + body)
                if self.answer_after is not None and len(self.requests) > self.answer_after:
                    data = json.dumps(self.answer).encode()
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                                 + str(len(data)).encode() + b"\r\n\r\n" + data)
                    await writer.drain()
                    continue
                if self.mode == "drop":
                    break
                await self._stop.wait()  # stalls: the request was taken, no answer comes
                break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            self._handlers.discard(task)
