"""Server-Sent Events of a run: replay from ``Last-Event-ID``, then live, ending when the run ends.
Each account has at most ``sse_max_streams_per_account`` streams open in a process at once
(``StreamSlots``); a stream reads ahead of its client at most ``AHEAD`` events (and its watcher
holds at most ``watching.LIVE_EVENTS`` new ones, then reads on from the store)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from toolweave.app import App

KEEPALIVE_SECONDS = 15.0
RETRY_MS = 2000
AHEAD = 100
"""Events a stream holds for a client that has not taken them yet; then it reads no further."""
RETRY_AFTER_SECONDS = 5


class StreamSlots:
    """The event streams each account has open in this process, at most ``limit`` at once (0:
    no limit). ``take`` before a stream opens; the ``release`` it returns, when it closes (any
    number of times)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: dict[str, int] = {}

    def take(self, account: str) -> Callable[[], None] | None:
        """The release of a new slot of ``account``'s, or None when it has ``limit`` open."""
        count = self.open.get(account, 0)
        if self.limit and count >= self.limit:
            return None
        self.open[account] = count + 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            left = self.open.get(account, 1) - 1
            if left > 0:
                self.open[account] = left
            else:
                self.open.pop(account, None)

        return release


def format_event(event: dict[str, Any]) -> str:
    payload = json.dumps(event, separators=(",", ":"), ensure_ascii=False, default=str)
    return f"id: {event['id']}\nevent: {event['type']}\ndata: {payload}\n\n"


async def stream(
    app: App, run_id: str, account_id: str | None, after: int, *, keepalive: float = KEEPALIVE_SECONDS
) -> AsyncIterator[str]:
    """The SSE text of a run's events after ``after``; a comment line keeps idle connections open."""
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(AHEAD)

    async def produce() -> None:
        try:
            async for event in app.watch(run_id, account_id, after):
                await queue.put(event)
        except asyncio.CancelledError:
            raise  # the client went away: nobody takes the end
        except BaseException:
            await queue.put(None)
            raise
        await queue.put(None)

    producer = asyncio.create_task(produce(), name=f"sse-{run_id}")
    try:
        yield f"retry: {RETRY_MS}\n\n"
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), keepalive)
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            if item is None:
                break
            yield format_event(item)
        if producer.done() and not producer.cancelled() and producer.exception() is not None:
            yield 'event: error\ndata: {"message": "the event stream stopped unexpectedly"}\n\n'
    finally:
        producer.cancel()
        with contextlib.suppress(BaseException):
            await producer
