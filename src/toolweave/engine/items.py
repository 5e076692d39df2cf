"""Map steps in the engine: what the planner is shown of a map step's items, and how its item
actions are written.

The planner sees a map step's counts (kept on its step run), every item in flight and the next
pending ones — never the items that have ended — so a decision costs the same whether the step has
ten items or ten thousand (``bench/engine.py --variant map``). Items are written like steps: each
status change a compare-and-set; the counts change with the items that end, in the same
transaction; a step that ends otherwise than by its items ending (failed, skipped, cancelled)
closes its open items and stops their work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from toolweave.engine import actions as act
from toolweave.engine.plan_rules import work_sending
from toolweave.model.definitions import MapSpec
from toolweave.model.status import GenerationStatus, RunStatus, StepStatus
from toolweave.store import items as items_q
from toolweave.store import runs as runs_q
from toolweave.store.db import Row, Tx

if TYPE_CHECKING:
    from toolweave.engine.transitions import Transitions
    from toolweave.engine.work import _Ctx

_GENERATION_STATUS = {s.value: s for s in GenerationStatus}
_CHILD_WORK = {
    RunStatus.COMPLETED.value: GenerationStatus.COMPLETED,
    RunStatus.PARTIALLY_COMPLETED.value: GenerationStatus.COMPLETED,
    RunStatus.FAILED.value: GenerationStatus.FAILED,
    RunStatus.CANCELLED.value: GenerationStatus.CANCELLED,
}


def map_view(tx: Tx, run_id: str, row: Any, spec: MapSpec) -> act.MapView:
    """The planner's view of a map step whose list is known (``row`` is its step run)."""
    total = int(row["items_total"])
    view = act.MapView(total=total, succeeded=int(row["items_succeeded"] or 0), failed=int(row["items_failed"] or 0))
    if row["status"] != StepStatus.RUNNING.value:
        return view
    active = items_q.active(tx, run_id, row["step_id"])
    view.active = [_item_view(r) for r in active]
    view.children_waiting = any(
        r.status == StepStatus.RUNNING.value and r.child_status == RunStatus.WAITING_INPUT.value for r in active
    )
    view.waiting = [
        act.ItemView(r.item_index, value=items_q.value(r), inputs=inputs, inputs_error=error)
        for r in items_q.waiting(tx, run_id, row["step_id"], spec.concurrency)
        for inputs, error in [items_q.evaluated(r)]
    ]
    return view


def _item_view(r: Row) -> act.ItemView:
    work_status = work_outputs = work_error = None
    sending = False
    if r.status == StepStatus.RUNNING.value:
        if r.child_run_id:
            work_status = _CHILD_WORK.get(r.child_status or "")
            work_outputs, work_error = r.child_outputs, r.child_error
        elif r.work_status is not None:
            work_status = _GENERATION_STATUS[r.work_status]
            work_outputs, work_error = r.work_outputs, r.work_error
            sending = work_sending(r.work_status, r.work_sent_at, r.work_run_id)
    inputs, inputs_error = items_q.evaluated(r)
    return act.ItemView(
        index=r.item_index, status=StepStatus(r.status), value=items_q.value(r), attempt=r.attempt, tool_id=r.tool_id,
        using_fallback=bool(r.using_fallback), next_attempt_at=r.next_attempt_at, started_at=r.started_at,
        work_status=work_status, work_outputs=work_outputs, work_error=work_error, work_sending=sending, inputs=inputs,
        inputs_error=inputs_error,
    )


@dataclass
class ItemWrites:
    """What one transaction's item actions add up to: the count changes per step, and whether a
    map step completed (then the run is decided again, with its gathered outputs)."""

    counts: dict[str, list[int]] = field(default_factory=dict)
    completed: bool = False

    def ended(self, step_id: str, succeeded: bool) -> None:
        pair = self.counts.setdefault(step_id, [0, 0])
        pair[0 if succeeded else 1] += 1

    def flush(self, tx: Tx, run_id: str) -> None:
        for step_id, (succeeded, failed) in self.counts.items():
            items_q.count(tx, run_id, step_id, succeeded, failed)
        self.counts.clear()


def apply(
    engine: Transitions, tx: Tx, run: Any, view: act.RunView, action: act.Action, ctx: _Ctx, writes: ItemWrites,
    event: Any,
) -> None:
    """Write one item action (``OpenMap``, ``FinishItem``, ``CompleteMap``, or a ``RetryStep`` or
    ``ExpireWork`` of an item)."""
    run_id, now = run.run_id, ctx.now
    if isinstance(action, act.OpenMap):
        step = view.job.step(action.step_id)
        tool_id = step.tool_id if step is not None else None
        if items_q.open_step(tx, run_id, action.step_id, tool_id, len(action.items), now):
            items_q.insert(tx, run_id, action.step_id, action.items, action.evaluated)
            event("step.started", action.step_id, items=len(action.items))
    elif isinstance(action, act.FinishItem):
        status = StepStatus.SUCCEEDED if action.succeeded else StepStatus.FAILED
        if items_q.update(
            tx, run_id, action.step_id, action.item, items_q.OPEN,
            status=status, outputs=action.outputs, error=action.error, finished_at=now, progress=1.0 if action.succeeded else None,
        ):
            writes.ended(action.step_id, action.succeeded)
            if action.succeeded:
                event("item.succeeded", action.step_id, item=action.item)
            else:
                event("item.failed", action.step_id, item=action.item, error=action.error)
    elif isinstance(action, act.CompleteMap):
        writes.flush(tx, run_id)  # the counts the step ends with
        complete(engine, tx, run, view, action.step_id, now, event)
        writes.completed = True
    elif isinstance(action, act.RetryStep):
        assert action.item is not None
        if items_q.update(
            tx, run_id, action.step_id, action.item, (StepStatus.RUNNING,),
            status=StepStatus.WAITING_RETRY, next_attempt_at=action.at, error=action.error,
        ):
            event("item.retry_scheduled", action.step_id, item=action.item, at=action.at,
                  nextAttempt=action.next_attempt, error=action.error)
    elif isinstance(action, act.ExpireWork):
        assert action.item is not None
        row = items_q.get(tx, run_id, action.step_id, action.item)
        if row is not None:
            engine._stop_work(tx, row, GenerationStatus.TIMEOUT, "timed out", ctx)


def complete(engine: Transitions, tx: Tx, run: Any, view: act.RunView, step_id: str, now: float, event: Any) -> None:
    """A map step succeeds: its outputs are its items' outputs gathered into lists, one entry per item
    in order (null for an item that failed)."""
    rows = items_q.outcomes(tx, run.run_id, step_id)
    names = output_names(engine, tx, run, view, step_id)
    for r in rows:
        for name in r.outputs or {}:
            if name not in names:
                names.append(name)
    outputs = {
        name: [(r.outputs or {}).get(name) if r.status == StepStatus.SUCCEEDED.value else None for r in rows]
        for name in names
    }
    failed = sum(1 for r in rows if r.status != StepStatus.SUCCEEDED.value)
    step_row = runs_q.step(tx, run.run_id, step_id)
    if runs_q.update_step(
        tx, run.run_id, step_id, (StepStatus.RUNNING,),
        status=StepStatus.SUCCEEDED, outputs=outputs, finished_at=now, progress=1.0, error=None,
        skipped_by_error=False,
    ):
        started = step_row.started_at if step_row is not None and step_row.started_at else now
        event("step.succeeded", step_id, items=len(rows), itemsFailed=failed, durationMs=round((now - started) * 1000))


def output_names(engine: Transitions, tx: Tx, run: Any, view: act.RunView, step_id: str) -> list[str]:
    """The outputs a map step's tool (or nested job) declares."""
    step = view.job.step(step_id)
    if step is None:
        return []
    if step.tool_id is not None:
        tool = view.tools.get(step.tool_id)
        return [o.name for o in tool.output_schema] if tool is not None else []
    sha = run.tool_shas.get(f"job:{step.job_id}")
    if sha is None:
        return []
    nested, _ = engine._job(tx, sha)
    return [o.name for o in nested.output_schema]


def close(engine: Transitions, tx: Tx, run_id: str, step_id: str, reason: str, ctx: _Ctx) -> None:
    """A map step ended otherwise than by its items: its open items are cancelled and the work of
    those running is stopped (at the backend, or the child run)."""
    for row in items_q.close(tx, run_id, step_id, reason, ctx.now):
        engine._stop_work(tx, row, GenerationStatus.CANCELLED, reason, ctx)
