"""Running a real worker in a test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from toolweave.app import App
from toolweave.engine.worker import Worker


@asynccontextmanager
async def running_worker(app: App, slots: int = 2, **options: Any) -> AsyncIterator[Worker]:
    """A worker running ``Worker.run`` in the background; stopped (in-flight work finished) on exit."""
    options.setdefault("idle_poll_seconds", 0.1)
    worker = app.make_worker(slots, **options)
    runner = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        await runner


async def work_until_done(app: App, run_id: str, timeout: float = 20.0, **options: Any) -> dict[str, Any]:
    """Run a worker until ``run_id`` ends; the run as ``App.get_run`` shows it."""
    async with running_worker(app, **options):
        return await app.wait(run_id, timeout=timeout)
