"""Group commit in the worker: what services report on ``submit`` is recorded by a transaction
shared with whatever else finished meanwhile (``Engine.record_and_claim_tx``), which also claims
queued tasks into the slots the batch frees. Up to ``FLUSHES`` such transactions run at once, each
waiting a few turns of the event loop (``FLUSH_DEFERRALS``) for tasks spawned meanwhile; outcomes
of a run that one of them is recording wait for the next.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from toolweave.engine.core import Engine
from toolweave.engine.work import Lease, Outcome, Work
from toolweave.store import tasks as tasks_q
from toolweave.store.db import Store

FLUSHES = 4
"""Transactions recording finished work at the same time (group commit: what finishes while they
run waits for the next one). On PostgreSQL a transaction mostly waits for the server, and with two
at once the worker's runs queued behind them (four: a third more chain jobs per second in
``bench/engine.py --store postgres``, eight no better); SQLite's run inline, one at a time."""
FLUSH_DEFERRALS = 3
"""How many turns of the event loop a transaction recording finished work waits at most for the
tasks spawned meanwhile (see ``_spawn_flush``)."""


class GroupCommit:
    """The ``Worker``'s group commit; a part of ``Worker``, which sets the state below in its
    ``__init__`` and provides what is declared under ``TYPE_CHECKING``."""

    _to_record: list[tuple[Outcome, asyncio.Future[Any]]]
    _flush_scheduled: bool
    _spawned: int
    """Tasks spawned so far: a flush waits a turn while the last turn spawned some (``_spawn_flush``)."""
    _spawned_seen: int
    _deferrals: int
    _flushes: set[asyncio.Task[None]]
    _recording: set[str]
    """Runs whose outcomes a transaction under way is recording."""

    if TYPE_CHECKING:  # provided by ``Worker``
        store: Store
        engine: Engine
        worker_id: str
        _stopping: asyncio.Event
        _inflight: set[asyncio.Task[None]]
        _reserved: int

        def _lease(self, own_slots: int = 1) -> tuple[Lease, int]: ...
        def _in_hand_limit(self) -> int: ...
        def _spawn(self, coro: Any) -> None: ...
        async def _handle(self, task: tasks_q.Task, work: Work | None) -> None: ...

    async def _record(self, item: Outcome) -> list[Work]:
        """Record a submission; those finishing together share one transaction (group commit)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._to_record.append((item, future))
        self._schedule_flush()
        dispatches, _cancel_needed = await future
        return list(dispatches)

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._spawned_seen, self._deferrals = self._spawned, 0
            asyncio.get_running_loop().call_soon(self._spawn_flush)

    def _spawn_flush(self) -> None:
        """Record what finished, in one transaction, unless ``FLUSHES`` are under way already (the
        next one starts when one of them ends, with everything that finished meanwhile). Outcomes
        of a run that a transaction under way is recording wait for the next one: two
        transactions of one run would only queue on its lock.

        While the turns of the event loop since the flush was scheduled spawned tasks (the
        branches a fan-out started, the runs a transaction claimed), it waits one more turn (up to
        ``FLUSH_DEFERRALS``): they start in that turn, and an instant step among them finishes in
        it, in time for this transaction. Without the wait, the branches of a fan-out that a
        transaction handed back finished a turn after their first one was taken, and each of
        those runs took two transactions (the second waiting for the first, which holds the run)."""
        if self._spawned != self._spawned_seen and self._deferrals < FLUSH_DEFERRALS:
            self._spawned_seen = self._spawned
            self._deferrals += 1
            asyncio.get_running_loop().call_soon(self._spawn_flush)
            return
        self._flush_scheduled = False
        if len(self._flushes) >= FLUSHES:
            return
        busy = self._recording
        batch = [entry for entry in self._to_record if entry[0].work.run_id not in busy]
        if not batch:
            return
        self._to_record = [entry for entry in self._to_record if entry[0].work.run_id in busy] if busy else []
        runs = {outcome.work.run_id for outcome, _ in batch}
        busy.update(runs)
        task = asyncio.create_task(self._flush(batch))
        self._flushes.add(task)

        def done(_: asyncio.Task[None]) -> None:
            self._flushes.discard(task)
            busy.difference_update(runs)
            if self._to_record:
                self._schedule_flush()

        task.add_done_callback(done)

    async def _flush(self, batch: list[tuple[Outcome, asyncio.Future[Any]]]) -> None:
        lease, reserved = self._lease(own_slots=len(batch))
        owner = None if self._stopping.is_set() else self.worker_id
        # the batch's tasks are in _inflight; what others hold stays theirs
        room = self._in_hand_limit() - (len(self._inflight) - len(batch)) - (self._reserved - reserved)
        try:
            try:
                results, claimed = await self.store.tx(
                    self.engine.record_and_claim_tx, [item for item, _ in batch], time.time(), lease, owner, room
                )
            except Exception:
                if len(batch) == 1:
                    raise
                # one item spoiled the batch: record each on its own, so the others still land
                lease.used = 0
                for item, future in batch:
                    try:
                        one = await self.store.tx(self.engine.record_submissions_tx, [item], time.time(), lease)
                        future.set_result(one[0])
                    except Exception as exc:
                        future.set_exception(exc)
                return
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        finally:
            self._reserved -= reserved
        for task, work in claimed:
            self._spawn(self._handle(task, work))
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
