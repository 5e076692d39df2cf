"""The API on a loopback port in a thread of its own, for synchronous test drivers (schemathesis,
hypothesis): ``with live_server(home, database_url=...) as live: live.url, live.alice, live.bob``.

The server is ``tests.integration.test_api.running_server`` (uvicorn, embedded worker, keys for
alice and bob) running its own event loop; the test thread talks to it over HTTP only.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Live:
    url: str
    alice: str
    bob: str


class _ServerThread(threading.Thread):
    def __init__(self, home: Path, settings: dict[str, Any]) -> None:
        super().__init__(daemon=True, name="live-api-server")
        self.home = home
        self.settings = settings
        self.ready = threading.Event()
        self.live: Live | None = None
        self.error: BaseException | None = None
        self._stopping: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to the caller
            self.error = exc
            self.ready.set()

    async def _main(self) -> None:
        from tests.integration.test_api import running_server

        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        async with running_server(self.home, **self.settings) as server:
            self.live = Live(server.url, server.alice, server.bob)
            self.ready.set()
            await self._stopping.wait()

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self.join(30)


@contextlib.contextmanager
def live_server(home: Path, **settings: Any) -> Iterator[Live]:
    thread = _ServerThread(home, settings)
    thread.start()
    if not thread.ready.wait(60):
        raise RuntimeError("the server did not start")
    if thread.error is not None:
        raise thread.error
    assert thread.live is not None
    try:
        yield thread.live
    finally:
        thread.stop()
