"""When the worker starts a transaction recording finished work (group commit, ``Worker._spawn_flush``):
it waits a turn of the event loop while tasks spawned meanwhile may still finish in time for it, and
no longer than ``FLUSH_DEFERRALS`` turns. The transaction itself is replaced by one that records
which runs each batch held; the recording path on both stores is covered by the integration tests."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from toolweave.engine import worker as worker_module
from toolweave.engine.worker import Worker


def _worker() -> tuple[Worker, list[list[str]]]:
    worker = Worker(None, SimpleNamespace(lease_seconds=30.0), {}, evaluator=SimpleNamespace())  # type: ignore[arg-type]
    batches: list[list[str]] = []

    async def flush(batch: list[tuple[Any, asyncio.Future[Any]]]) -> None:
        batches.append([outcome.work.run_id for outcome, _ in batch])
        for _, future in batch:
            future.set_result(([], False))

    worker._flush = flush  # type: ignore[method-assign]
    return worker, batches


async def _record(worker: Worker, run_id: str) -> None:
    await worker._record(SimpleNamespace(work=SimpleNamespace(run_id=run_id)))  # type: ignore[arg-type]


async def test_a_task_spawned_after_the_flush_was_scheduled_is_recorded_in_the_same_transaction() -> None:
    """A fan-out's branches handed back by one transaction start as tasks of their own; an instant
    step among them finishes in their first turn. Spawned after another outcome scheduled the
    flush, they still go in its transaction, not in one of their own after it."""
    worker, batches = _worker()
    first = asyncio.create_task(_record(worker, "a"))
    await asyncio.sleep(0)  # "a" is queued and the flush scheduled
    assert worker._to_record and worker._flush_scheduled
    worker._spawn(_record(worker, "b"))
    worker._spawn(_record(worker, "c"))
    await asyncio.gather(first, *worker._inflight)
    assert batches == [["a", "b", "c"]]


async def test_the_flush_waits_no_more_than_its_deferrals() -> None:
    """Tasks spawned at every turn (work that never finishes at once) hold the transaction back
    ``FLUSH_DEFERRALS`` turns at most."""
    worker, batches = _worker()
    turns: list[int] = []

    async def spawner() -> None:
        for turn in range(worker_module.FLUSH_DEFERRALS + 5):
            worker._spawn(asyncio.sleep(0))
            if batches and not turns:
                turns.append(turn)
            await asyncio.sleep(0)

    first = asyncio.create_task(_record(worker, "a"))
    await asyncio.sleep(0)
    await asyncio.gather(first, spawner(), *worker._inflight)
    assert batches == [["a"]]
    assert turns and turns[0] <= worker_module.FLUSH_DEFERRALS + 1


async def test_outcomes_of_a_run_being_recorded_wait_for_the_next_transaction() -> None:
    """Unchanged by the wait: two transactions of one run would only queue on its lock."""
    worker, batches = _worker()
    gate = asyncio.Event()

    async def slow_flush(batch: list[tuple[Any, asyncio.Future[Any]]]) -> None:
        batches.append([outcome.work.run_id for outcome, _ in batch])
        await gate.wait()
        for _, future in batch:
            future.set_result(([], False))

    worker._flush = slow_flush  # type: ignore[method-assign]
    first = asyncio.create_task(_record(worker, "a"))
    for _ in range(worker_module.FLUSH_DEFERRALS + 2):
        await asyncio.sleep(0)
    assert batches == [["a"]]
    second = asyncio.create_task(_record(worker, "a"))
    other = asyncio.create_task(_record(worker, "b"))
    for _ in range(worker_module.FLUSH_DEFERRALS + 2):
        await asyncio.sleep(0)
    assert batches == [["a"], ["b"]]  # "a" waits while its run is being recorded
    gate.set()
    await asyncio.gather(first, second, other)
    assert batches == [["a"], ["b"], ["a"]]
