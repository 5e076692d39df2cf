"""The planner's part for map steps: a map opened over its list (its items recorded, the first
ones started), each item in flight decided like a step (its work's end, retries, fallback,
timeouts), free places filled from the pending items, the step ended when every item has (or when
``minSuccess`` is out of reach). It sees only a bounded window of items (``actions.MapView``), so a
transition costs the same however long the list. Pure: no I/O."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from toolweave.engine.actions import (
    CompleteMap,
    ExpireWork,
    FinishItem,
    ItemView,
    MapView,
    OpenMap,
    RetryStep,
    StepEvaluation,
    StepView,
)
from toolweave.engine.evaluate import templates_loop
from toolweave.engine.mapping import MappingError, resolve_map_items
from toolweave.engine.plan_base import PlannerBase
from toolweave.engine.plan_rules import SENT_GRACE_SECONDS, deadline_error
from toolweave.engine.plan_rules import error as _error
from toolweave.model.definitions import ErrorStrategy, Step
from toolweave.model.status import GenerationStatus, StepStatus


class MapPlanning(PlannerBase):
    def open_map(self, step: Step, view: StepView, evaluated: StepEvaluation | None = None) -> None:
        """A map step is ready: resolve its list, record its items (with their inputs as an
        evaluator resolved them, when its templates loop), start the first of them."""
        assert step.map is not None
        try:
            items = resolve_map_items(step, job=self.run.inputs, steps=self.step_context())
        except MappingError as exc:
            self.failure(step, view, _error(str(exc), code="map_input"), attempt=view.attempt + 1, tool_may_help=False)
            return
        if len(items) > step.map.max_items:
            message = (
                f"step {step.step_id!r} maps over {len(items)} items; it takes at most {step.map.max_items} "
                "(map.maxItems)"
            )
            self.failure(step, view, _error(message, code="map_too_long"), attempt=view.attempt + 1, tool_may_help=False)
            return
        per_item = evaluated.items if evaluated is not None and templates_loop(step) else None
        if per_item is not None and len(per_item) != len(items):  # (the same list, read from the same rows)
            self.failure(step, view, _error(f"step {step.step_id!r} changed its list while it was evaluated"),
                         attempt=view.attempt + 1, tool_may_help=False)
            return
        self.actions.append(OpenMap(step.step_id, items, per_item))
        self.status[step.step_id] = StepStatus.RUNNING
        waiting = [
            ItemView(i, value=value, inputs=(per_item[i].get("inputs") if per_item else None),
                     inputs_error=(per_item[i].get("error") if per_item else None))
            for i, value in enumerate(items[: step.map.concurrency])
        ]
        self.visit_map(step, MapView(total=len(items), waiting=waiting))

    def visit_map(self, step: Step, view: MapView) -> None:
        """Decide a running map step's items: those whose work ended, retries that fall due,
        timeouts; start pending items into free places; end the step when every item has ended
        (or when ``minSuccess`` can no longer be reached)."""
        assert step.map is not None
        sid = step.step_id
        succeeded, failed, in_flight = view.succeeded, view.failed, 0
        self.last_item_error = None
        for item in view.active:
            outcome = self.visit_item(step, item)
            succeeded += outcome == "succeeded"
            failed += outcome == "failed"
            in_flight += outcome == "in_flight"
        required = step.map.required(view.total)
        for item in view.waiting:
            if in_flight >= step.map.concurrency or view.total - failed < required:
                break
            outcome = self.start_item(step, item, 1, tool_id=step.tool_id, fallback=False)
            failed += outcome == "failed"
            in_flight += outcome == "in_flight"
        if view.total - failed < required:
            detail = ""
            if self.last_item_error is not None:
                index, last = self.last_item_error
                detail = f" (item {index}: {last.get('message') or 'failed'})"
            error = _error(
                f"{failed} of {view.total} items of step {sid!r} failed{detail}; at least {required} must succeed",
                code="map_items_failed",
            )
            handling = self.job.error_handling_for(step)
            after_items = handling.then if handling.strategy in (ErrorStrategy.RETRY, ErrorStrategy.FALLBACK) else handling.strategy
            self.give_up(step, error, skip=after_items is ErrorStrategy.SKIP)
            return
        pending = view.total - succeeded - failed - in_flight
        if in_flight == 0 and pending == 0:
            self.actions.append(CompleteMap(sid))
            self.status[sid] = StepStatus.SUCCEEDED
            self.gathering.add(sid)
            self.by_error[sid] = failed > 0
            return
        if in_flight == 0 and pending > 0:
            self.wake_at(self.now)  # items are left and none is in flight to bring the next decision
        self.status[sid] = StepStatus.RUNNING

    def visit_item(self, step: Step, item: ItemView) -> str:
        """One item in flight: ``"succeeded"``, ``"failed"`` or ``"in_flight"`` afterwards."""
        sid = step.step_id
        if item.status is StepStatus.WAITING_RETRY:
            due = item.next_attempt_at or self.now
            if self.now >= due:
                return self.start_item(step, item, item.attempt + 1, tool_id=item.tool_id or step.tool_id,
                                       fallback=item.using_fallback)
            self.wake_at(due)
            return "in_flight"
        work = item.work_status
        if work is GenerationStatus.COMPLETED:
            self.actions.append(FinishItem(sid, item.index, True, dict(item.work_outputs or {})))
            self.finished_items.add((sid, item.index))
            return "succeeded"
        if work in (GenerationStatus.FAILED, GenerationStatus.TIMEOUT, GenerationStatus.CANCELLED):
            error = item.work_error or _error(
                "cancelled at the backend" if work is GenerationStatus.CANCELLED else "the backend reported a failure",
                retryable=work is not GenerationStatus.CANCELLED,
            )
            if work is GenerationStatus.TIMEOUT and "code" not in error:
                error = {**error, "code": "timeout"}
            return self.item_failure(step, item, error, tool_may_help=True)
        timeout = self.timeout_for(step, item.tool_id)
        if timeout is not None and item.started_at is not None:
            deadline = item.started_at + timeout
            if self.now >= deadline:
                if item.work_sending and self.now < deadline + SENT_GRACE_SECONDS:
                    self.wake_at(deadline + SENT_GRACE_SECONDS)  # its submit's worker records what became of it
                    return "in_flight"
                self.actions.append(ExpireWork(sid, item=item.index))
                err = deadline_error(timeout, item.work_error, sending=item.work_sending)
                return self.item_failure(step, item, err, tool_may_help=True)
            self.wake_at(deadline)
        return "in_flight"

    def start_item(self, step: Step, item: ItemView, attempt: int, *, tool_id: str | None, fallback: bool) -> str:
        found: tuple[dict[str, Any], tuple[str, ...]] | dict[str, Any]
        if not templates_loop(step):
            found = self.attempt_inputs(step, tool_id, attempt, item=item)
        elif item.inputs is not None:  # resolved by an evaluator when the map opened
            found = self.attempt_inputs(step, tool_id, attempt, item=item, resolved=item.inputs)
        else:
            found = item.inputs_error or _error(f"the inputs of item {item.index} were not evaluated")
        if isinstance(found, dict):  # the item's inputs are wrong: another attempt would not fix them
            attempted = replace(item, attempt=attempt, tool_id=tool_id, using_fallback=fallback)
            return self.item_failure(step, attempted, found, tool_may_help=False)
        inputs, drawn = found
        ceiling = self.ceiling.refuse(step.step_id)
        if ceiling is not None:
            attempted = replace(item, attempt=attempt, tool_id=tool_id, using_fallback=fallback)
            return self.item_failure(step, attempted, ceiling, tool_may_help=False)
        self.start_action(step, attempt, inputs, tool_id=tool_id, fallback=fallback, item=item.index, drawn=drawn)
        return "in_flight"

    def item_failure(self, step: Step, item: ItemView, error: dict[str, Any], *, tool_may_help: bool) -> str:
        """A failed attempt of one item, under the step's error handling; the item's outcome."""
        strategy, at = self.recovery(
            step, error, attempt=item.attempt, using_fallback=item.using_fallback, tool_may_help=tool_may_help,
            key=f"{step.step_id}[{item.index}]",
        )
        if strategy is ErrorStrategy.RETRY and at is not None:
            self.actions.append(RetryStep(step.step_id, at, item.attempt + 1, error, item=item.index))
            self.wake_at(at)
            return "in_flight"
        if strategy is ErrorStrategy.FALLBACK:
            fallback = self.job.error_handling_for(step).fallback_tool_id
            return self.start_item(step, item, item.attempt + 1, tool_id=fallback, fallback=True)
        self.actions.append(FinishItem(step.step_id, item.index, False, None, error))
        self.finished_items.add((step.step_id, item.index))
        self.last_item_error = (item.index, error)
        return "failed"
