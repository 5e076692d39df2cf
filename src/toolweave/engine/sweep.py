"""No run is ever stranded: the invariant, and the sweep that repairs a run that breaks it.

Every unfinished run has something that will move it: an ``advance`` or ``evaluate`` task, a
waiting generation (one not yet finished, with the ``dispatch`` or ``poll`` task that will finish
it) or an unfinished child run. ``stranded`` lists the runs that break this (tests call it after every crash and chaos
test and expect it empty). The worker sweeps periodically: ``repair_tx`` gives each stranded run's
waiting generations their task again (a lost dispatch as a recovering one, so the service
re-attaches rather than submits twice; a lost poll due at once), its ready steps their evaluate
task, and advances the run, which
schedules what its steps wait for (a retry's backoff, a deadline). Every repair is logged at
WARNING: a stranded run is a bug somewhere else.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from toolweave.engine.core import Engine
from toolweave.model.status import GenerationStatus, StepStatus, TaskKind
from toolweave.store import generations as gens_q
from toolweave.store import runs as runs_q
from toolweave.store import tasks as tasks_q
from toolweave.store.db import Store, Tx

log = logging.getLogger("toolweave.sweep")


def stranded(tx: Tx, limit: int = 100) -> list[str]:
    """Unfinished runs that nothing will move (oldest first); always empty when the engine is right."""
    return runs_q.stranded(tx, limit)


@dataclass
class Repair:
    run_id: str
    requeued: list[str] = field(default_factory=list)
    """``<kind> <generation id>`` of each task made again."""
    moved: bool = True
    """False when even after the repair nothing will move the run."""

    def describe(self) -> str:
        done = f"{', '.join(self.requeued)} queued again; " if self.requeued else ""
        return f"run {self.run_id} was stranded: {done}advanced"


def repair_tx(tx: Tx, engine: Engine, run_id: str, now: float) -> Repair | None:
    """Repair one run if it is (still) stranded; None when something moves it already. The run's
    lock is taken first, as every transaction that changes its parts does, so the check holds."""
    if runs_q.get(tx, run_id, lock=True) is None or not runs_q.stranded(tx, 1, run_id):
        return None
    repair = Repair(run_id)
    for gen in gens_q.waiting_without_task(tx, run_id):
        kind = TaskKind.DISPATCH if gen.status == GenerationStatus.PENDING.value else TaskKind.POLL
        tasks_q.enqueue(tx, kind, run_id=run_id, ref_id=gen.generation_id, now=now, attempted=kind is TaskKind.DISPATCH)
        repair.requeued.append(f"{kind.value} {gen.generation_id}")
    if any(row.status == StepStatus.READY.value for row in runs_q.steps(tx, run_id)):
        tasks_q.schedule_evaluation(tx, run_id, now=now, at=now, priority=0, lease_owner=None, lease_seconds=0)
        repair.requeued.append(f"evaluate {run_id}")
    engine.advance_tx(tx, run_id, None, now, None)
    repair.moved = not runs_q.stranded(tx, 1, run_id)
    return repair


async def sweep(store: Store, engine: Engine, now: float, limit: int = 100) -> list[Repair]:
    """Find stranded runs and repair each in a transaction of its own; log every repair."""
    repairs: list[Repair] = []
    for run_id in await store.read(stranded, limit):
        repair = await store.tx(repair_tx, engine, run_id, now)
        if repair is None:
            continue
        repairs.append(repair)
        if repair.moved:
            log.warning("%s", repair.describe())
        else:
            log.error("%s, but nothing will move it yet", repair.describe())
    return repairs
