"""Server-Sent Events of a run: replay from ``Last-Event-ID``, then live, ending when the run ends."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from toolweave.app import App

KEEPALIVE_SECONDS = 15.0
RETRY_MS = 2000


def format_event(event: dict[str, Any]) -> str:
    payload = json.dumps(event, separators=(",", ":"), ensure_ascii=False, default=str)
    return f"id: {event['id']}\nevent: {event['type']}\ndata: {payload}\n\n"


async def stream(
    app: App, run_id: str, account_id: str | None, after: int, *, keepalive: float = KEEPALIVE_SECONDS
) -> AsyncIterator[str]:
    """The SSE text of a run's events after ``after``; a comment line keeps idle connections open."""
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    async def produce() -> None:
        try:
            async for event in app.watch(run_id, account_id, after):
                await queue.put(event)
        finally:
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
