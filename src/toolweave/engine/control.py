"""What an owner asks of a run already submitted: cancel it, retry it in place, read the version
it pinned, fork it into a new run (``replay``).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from toolweave.engine import replay
from toolweave.engine.transitions import Transitions
from toolweave.engine.work import Conflict, NotFound, _Ctx
from toolweave.model.definitions import JobDefinition
from toolweave.model.status import RunStatus, StepStatus
from toolweave.store import events as events_q
from toolweave.store import items as items_q
from toolweave.store import runs as runs_q
from toolweave.store.db import Tx


class RunControl(Transitions):
    """Cancel, retry and fork."""

    def cancel_tx(self, tx: Tx, run_id: str, account_id: str | None, now: float) -> str:
        run = runs_q.get(tx, run_id, lock=True)
        if run is None or (account_id is not None and run.master_account_id != account_id):
            raise NotFound(run_id)
        if RunStatus(run.status).terminal:
            return str(run.status)
        runs_q.request_cancel(tx, run_id, now)
        events_q.append(tx, run_id, "run.cancel_requested", now)
        self._advance(tx, run_id, _Ctx(now, None, picked_up=False))
        status: str = runs_q.get(tx, run_id).status  # type: ignore[union-attr]
        return status

    def retry_tx(
        self, tx: Tx, run_id: str, account_id: str | None, now: float, cost: tuple[Decimal | None, bool] = (None, False)
    ) -> None:
        """Run a finished run again from its failed, cancelled and skipped steps; succeeded steps
        keep their outputs and are not executed again. ``cost``: (estimate, part unknown), held
        again from the account's credits (``Refused``: nothing changes)."""
        run = runs_q.get(tx, run_id, lock=True)
        if run is None or (account_id is not None and run.master_account_id != account_id):
            raise NotFound(run_id)
        if run.parent_run_id:
            raise Conflict("a nested run is retried through its parent run")
        if run.status not in (RunStatus.FAILED.value, RunStatus.PARTIALLY_COMPLETED.value, RunStatus.CANCELLED.value):
            raise Conflict(
                f"only a failed, partially completed or cancelled run can be retried in place; this one is "
                f"{run.status} (to run it again as a new run, name a step to run again from, or change an input)"
            )
        admission = self.gate.open(tx, [run.master_account_id], now)
        place = admission.admit(run.master_account_id, cost[0], cost[1])
        reset = 0
        for row in runs_q.steps(tx, run_id):
            if row.status != StepStatus.SUCCEEDED.value and row.items_total is not None:
                # a map step whose items were under way goes on from the items that did not succeed
                items_q.reset_unfinished(tx, run_id, row.step_id)
                runs_q.update_step(
                    tx, run_id, row.step_id, tuple(StepStatus), status=StepStatus.RUNNING, items_failed=0,
                    outputs=None, reason=None, error=None, skipped_by_error=False, finished_at=None,
                    next_attempt_at=None,
                )
                reset += 1
            elif row.status != StepStatus.SUCCEEDED.value:
                runs_q.update_step(
                    tx, run_id, row.step_id, tuple(StepStatus), status=StepStatus.PENDING, attempt=0,
                    outputs=None, reason=None, error=None, skipped_by_error=False, finished_at=None,
                    next_attempt_at=None, progress=None, child_run_id=None, using_fallback=False,
                )
                reset += 1
        runs_q.update(
            tx, run_id, status=RunStatus.QUEUED.value, cancel_requested=False, error=None, final_outputs=None,
            finished_at=None, updated_at=now,
            deadline_at=(now + (run.deadline_at - run.started_at)) if run.deadline_at and run.started_at else None,
            # the retry pays as the account pays now (its earlier hold was released when it ended)
            queue_at=place.queue_at, credit_run_id=run_id if place.credits else None,
        )
        admission.held_by(run.master_account_id, run_id, place)
        admission.write(tx)
        events_q.append(tx, run_id, "run.retried", now, stepsReset=reset)
        self._advance(tx, run_id, _Ctx(now, None, picked_up=False))

    def run_job_tx(self, tx: Tx, run_id: str, account_id: str | None) -> tuple[JobDefinition, dict[str, Any], str]:
        """The definition version a run pinned, its inputs and its account (NotFound for another
        account's run)."""
        run = runs_q.get(tx, run_id)
        if run is None or (account_id is not None and run.master_account_id != account_id):
            raise NotFound(run_id)
        job, _ = self._job(tx, run.definition_sha)
        return job, dict(run.job_inputs), str(run.master_account_id)

    def fork_tx(
        self, tx: Tx, run_id: str, account_id: str | None, from_step: str | None, inputs: dict[str, Any],
        origin: dict[str, Any], now: float, seeds: tuple[list[str], list[str]] = ([], []),
        cost: tuple[Decimal | None, bool] = (None, False),
    ) -> str:
        """A new run of a finished run's version, reusing every step it need not run again (``replay``);
        ``seeds`` is (the inputs given anew, the seeds among them drawn at random); ``cost`` its
        estimate, held from the account's credits like a submit's."""
        return replay.fork_tx(
            self, tx, run_id, account_id, from_step=from_step, inputs=inputs, origin=origin, now=now, seeds=seeds,
            cost=cost,
        )
