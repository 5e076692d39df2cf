"""Claims: due tasks leased to a worker with what each needs (a generation's ``DispatchWork``, a
run's ready steps as ``EvaluateWork``); stale tasks finished instead of handed out; a claimed
dispatch turns its run ``running``.
"""

from __future__ import annotations

from typing import Any

from toolweave.engine.evaluate import EvaluateWork
from toolweave.engine.transitions import Transitions, _ready_work
from toolweave.engine.work import DispatchWork, NotFound
from toolweave.model.status import GenerationStatus, TaskKind
from toolweave.store import generations as gens_q
from toolweave.store import runs as runs_q
from toolweave.store import tasks as tasks_q
from toolweave.store.db import Tx


class Claims(Transitions):
    """Leasing tasks to workers."""

    def claim_tx(self, tx: Tx, owner: str, limit: int, now: float) -> tuple[list[Any], float | None]:
        """Lease due tasks and load what each needs. Returns (work items, next due time if idle).
        Tasks found to have nothing left to do (their generation or run finished) are deleted, and
        the claim goes on in the queue for others in their place."""
        tx.by_index()  # every statement here finds its rows by key
        items: list[Any] = []
        while len(items) < limit:
            found, taken = self._claim(tx, owner, limit - len(items), now)
            items += found
            if len(found) == taken:  # none dropped: the queue has no more due tasks, or the limit is met
                break
        next_due = None
        if len(items) < limit:
            next_due = tasks_q.next_due(tx, now)
        return items, next_due

    def _claim(self, tx: Tx, owner: str, limit: int, now: float) -> tuple[list[Any], int]:
        """(work items, how many tasks were leased): stale tasks are finished, not handed out."""
        tx.by_index()
        claimed = tasks_q.claim_with_generations(tx, owner, limit, now, self.lease_seconds)
        items: list[Any] = []
        for task, gen in claimed:
            if task.kind is TaskKind.EVALUATE:
                evaluation = self._evaluation_work(tx, task)
                if evaluation is None:
                    tasks_q.finish_many(tx, [task.claim])
                else:
                    items.append((task, evaluation))
                continue
            if task.kind not in (TaskKind.DISPATCH, TaskKind.POLL, TaskKind.CANCEL):
                items.append((task, None))
                continue
            stale = gen is None or (
                task.kind in (TaskKind.DISPATCH, TaskKind.POLL) and GenerationStatus(gen.status).terminal
            )
            work = None if stale else self._work(tx, gen, task)
            if work is None:
                tasks_q.finish_many(tx, [task.claim])
                continue
            items.append((task, work))
        picked = sorted({w.run_id for t, w in items if t.kind in (TaskKind.DISPATCH, TaskKind.EVALUATE) and w is not None})
        # the runs they are nested in turn running too; an evaluation's run is taken as maybe nested
        nested = any(t.kind is TaskKind.EVALUATE for t, _ in items) or any(
            gen is not None and gen["run_parent_id"] for t, gen in claimed if t.kind is TaskKind.DISPATCH
        )
        runs_q.mark_picked_up(tx, picked, now, nested=nested)
        return items, len(claimed)

    def generation_work_tx(self, tx: Tx, generation_id: str) -> DispatchWork:
        """A generation as a service sees it (for webhooks that need the service's help)."""
        gen = gens_q.with_tool_shas(tx, [generation_id]).get(generation_id)
        work = self._work(tx, gen, tasks_q.Task(0, TaskKind.DISPATCH, None, generation_id, 1)) if gen is not None else None
        if work is None:
            raise NotFound(generation_id)
        return work

    def _work(self, tx: Tx, gen: Any, task: tasks_q.Task) -> DispatchWork | None:
        """``gen`` carries its run's ``tool_shas`` (``generations.with_tool_shas``)."""
        sha = (gen["tool_shas"] or {}).get(gen["tool_id"])
        if sha is None:
            return None
        return DispatchWork(
            task_id=task.task_id, task_attempts=task.attempts, generation_id=gen["generation_id"], run_id=gen["run_id"],
            step_id=gen["step_id"], attempt=gen["attempt"], account_id=gen["master_account_id"],
            tool=self._tool(tx, sha), inputs=gen["request_payload"] or {},
            deadline_at=gen["deadline_at"], platform_run_id=gen["platform_specific_run_id"], claim_token=task.token,
            sent_at=gen["sent_at"],
            poll_error=gen["error"] if task.kind is TaskKind.POLL and not GenerationStatus(gen["status"]).terminal else None,
        )

    def _evaluation_work(self, tx: Tx, task: tasks_q.Task) -> EvaluateWork | None:
        """A claimed ``evaluate`` task's work: the run's ready steps, each with what it sees."""
        loaded = self._load_view(tx, task.ref_id or "", run=runs_q.get(tx, task.ref_id or ""))
        if loaded is None or loaded[1].status.terminal:
            return None
        work = _ready_work(task, loaded[1])
        return work if work.steps else None
