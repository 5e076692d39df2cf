"""A run's end in the engine's transitions: its final status written (a compare-and-set), what is
left of its credit hold released, then its parent's step decided again (a nested run) or its
notifications written (an outbox row and a ``notify`` task per target: its callback, the
``notification_rules``). Its final outputs grant nothing (``grants.made_media``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from toolweave.engine import plan
from toolweave.engine.work import _Ctx
from toolweave.model.status import RunStatus, TaskKind
from toolweave.store import credits as credits_q
from toolweave.store import notifications as notes_q
from toolweave.store import runs as runs_q
from toolweave.store import tasks as tasks_q
from toolweave.store.db import Tx
from toolweave.store.ids import new_id

if TYPE_CHECKING:
    from toolweave.engine.transitions import Transitions


def finish_run(engine: Transitions, tx: Tx, run: Any, action: plan.FinishRun, ctx: _Ctx, event: Any) -> None:
    """Finish the run as the planner says (a compare-and-set): release what is left of its credit
    hold, then decide its parent again (a nested run) or write its notifications."""
    now = ctx.now
    if not runs_q.set_status(
        tx, run["run_id"], action.status, now, final_outputs=action.outputs, error=action.error, finished_at=now
    ):
        return
    event(f"run.{action.status.value}", outputs=action.outputs, error=action.error)
    if run["credit_run_id"] == run["run_id"]:  # what is left of its hold goes back
        credits_q.release(tx, run["master_account_id"], run["run_id"], now)
    # its outputs grant nothing: what its steps' tools made, their records granted already, and a
    # job output (a media one too) may pick a reference out of a JSON answer (``made_media``)
    if run["parent_run_id"]:  # its step in the parent run ended
        touched = frozenset((run["parent_step_id"],)) if run["parent_step_id"] else None
        engine._advance_parent(tx, run["parent_run_id"], ctx, touched)
        return
    _notify(engine, tx, run, action, now)


def _notify(engine: Transitions, tx: Tx, run: Any, action: plan.FinishRun, now: float) -> None:
    """The outbox rows (and their ``notify`` tasks) that tell who asked that the run ended."""
    targets: list[tuple[str, dict[str, Any]]] = []
    if run.callback_url:
        targets.append(("callback", {"url": run.callback_url}))
    for rule in engine.notification_rules:
        targets.extend(rule(run, action.status))
    event_type = {
        RunStatus.COMPLETED: "run.completed",
        RunStatus.PARTIALLY_COMPLETED: "run.completed",
        RunStatus.FAILED: "run.failed",
        RunStatus.CANCELLED: "run.cancelled",
    }[action.status]
    for channel, target in targets:
        nid = new_id("ntf_")
        notes_q.insert(
            tx, notification_id=nid, run_id=run.run_id, account_id=run.master_account_id, channel=channel,
            event_type=event_type, target=target,
            payload={"runId": run.run_id, "status": action.status.value, "jobId": run.job_definition_id,
                     "outputs": action.outputs, "error": action.error},
            created_at=now,
        )
        tasks_q.enqueue(tx, TaskKind.NOTIFY, run_id=run.run_id, ref_id=nid, now=now)
