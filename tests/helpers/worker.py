"""Running a real worker in a test."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from toolweave.app import App
from toolweave.engine.work import DispatchWork
from toolweave.engine.worker import Worker
from toolweave.services.base import GenerationContext


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


async def work_until_submitted(app: App, run_id: str, timeout: float = 30.0) -> str:
    """Run a worker until the run's generation is submitted to its backend and waits on it
    (``processing``); its id. For a backend that takes long: ``run_until_idle`` would sit out its
    whole timeout, since the generation's next poll is always due soon."""
    deadline = time.monotonic() + timeout
    async with running_worker(app):
        while True:
            generations = (await app.get_run(run_id))["generations"]
            if generations and generations[0]["status"] == "processing":
                return str(generations[0]["generationId"])
            assert time.monotonic() < deadline, f"run {run_id} was not submitted in {timeout} s: {generations}"
            await asyncio.sleep(0.05)


async def lease_dispatch(app: App, owner: str = "doomed-worker") -> DispatchWork:
    """Lease the one due dispatch task to ``owner``, as a worker's claim does, and nothing more: a
    worker that dies now (its lease runs out) never sent anything."""
    items, _ = await app.store.tx(app.engine.claim_tx, owner, 1, time.time())
    [(task, work)] = items
    assert task.kind.value == "dispatch" and isinstance(work, DispatchWork)
    return work


def submit_context(app: App, work: DispatchWork, service: str) -> GenerationContext:
    """The context a worker gives ``service``'s ``submit`` for ``work``: for a service that marks
    before sending, with the mark (``Engine.mark_sending_tx``, under the work's claim)."""
    marks = getattr(app.services[service], "marks_sending", False) is True

    async def mark() -> bool:
        now = time.time()
        held: bool = await app.store.tx(
            app.engine.mark_sending_tx, work.claim, work.generation_id, now, now + app.engine.lease_seconds
        )
        return held

    return work.context(None, marks_sending=marks, on_sending=mark if marks else None)


def sent_at(app: App, generation_id: str) -> float | None:
    """The generation's ``sent_at`` mark."""
    row = app.store.read_sync(lambda tx: tx.one("SELECT sent_at FROM generations WHERE generation_id = :id",
                                                {"id": generation_id}))
    assert row is not None
    value: float | None = row.sent_at
    return value
