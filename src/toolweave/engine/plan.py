"""The planner: a pure function from a run's state and the time to the actions that follow.

``decide(run, now)`` does no I/O. It walks the steps in topological order once, so every effect
of an earlier step (success, skip, failure) is seen by the later ones in the same call: a step
that finishes, the successor it makes ready and a skip that cascades through the graph all come
out of one call. Every scheduling rule of the design lives here:

- readiness: a step is ready when all its dependencies (explicit and implied by mappings) are
  finished; if a mapping's source step did not succeed and the mapping has no ``default``, the
  step is skipped with the reason recorded;
- ``condition``: evaluated on job inputs and earlier steps (outputs, statuses); false → skipped;
- error handling: ``halt`` (fail the run, cancel the rest), ``skip``, ``retry`` (exponential
  backoff with deterministic jitter, only for retryable errors; then ``then:``), ``fallback``
  (another tool with the same mappings);
- step timeouts and the run deadline; cancellation;
- the final status and outputs.

The parts: ``plan_base`` (what one call shares), ``plan_maps`` (map steps), ``plan_asks`` (steps
that ask a person), ``plan_rules`` (order, backoff, seeds, final outputs).
"""

from __future__ import annotations

import heapq
from dataclasses import replace

from toolweave.engine.actions import (
    Action,
    AskStep,
    Budget,
    CancelStep,
    CompleteMap,
    CompleteStep,
    Evaluate,
    ExpireQuestion,
    ExpireWork,
    FailStep,
    FinishItem,
    FinishRun,
    ItemView,
    MapView,
    OpenMap,
    RetryStep,
    RunView,
    SetWaiting,
    SkipStep,
    StartRun,
    StartStep,
    StepEvaluation,
    StepView,
    Wake,
)
from toolweave.engine.conditions import ConditionError, compile_condition, evaluate_condition
from toolweave.engine.evaluate import needs_evaluation
from toolweave.engine.mapping import mapping_unavailable
from toolweave.engine.plan_asks import AskPlanning
from toolweave.engine.plan_maps import MapPlanning
from toolweave.engine.plan_rules import (
    MAX_RETRY_AFTER_SECONDS,
    SENT_GRACE_SECONDS,
    Graph,
    deadline_error,
    graph_of,
    resolve_job_outputs,
    retry_delay,
    topological_order,
)
from toolweave.engine.plan_rules import error as _error
from toolweave.model.definitions import Step
from toolweave.model.status import GenerationStatus, RunStatus, StepStatus


class _Planner(MapPlanning, AskPlanning):
    """One call of ``decide``: the walk over the steps (``plan_base`` holds its state and what every
    part shares; map steps are ``plan_maps``, steps that ask ``plan_asks``)."""

    def visit(self, step: Step) -> None:
        sid = step.step_id
        view = self.run.steps[sid]
        status = self.status[sid]
        if status is StepStatus.RUNNING and step.map is not None:
            if view.map is not None:
                self.visit_map(step, view.map)
        elif status is StepStatus.RUNNING:
            self.visit_running(step, view)
        elif status is StepStatus.WAITING_RETRY:
            due = view.next_attempt_at or self.now
            if self.now >= due:
                self.start(step, view, view.attempt + 1, tool_id=view.tool_id or step.tool_id, fallback=view.using_fallback)
            else:
                self.wake_at(due)
        elif status is StepStatus.PENDING:
            self.visit_pending(step, view)
        elif status is StepStatus.READY:
            self.visit_ready(step, view)
        elif status is StepStatus.WAITING_INPUT:
            self.visit_waiting(step, view)

    def visit_running(self, step: Step, view: StepView) -> None:
        sid = step.step_id
        work = view.work_status
        if work is GenerationStatus.COMPLETED:
            self.actions.append(CompleteStep(sid, dict(view.work_outputs or {})))
            self.status[sid] = StepStatus.SUCCEEDED
            self.outputs[sid] = dict(view.work_outputs or {})
            return
        if work in (GenerationStatus.FAILED, GenerationStatus.TIMEOUT):
            error = view.work_error or _error("the backend reported a failure", retryable=True)
            if work is GenerationStatus.TIMEOUT and "code" not in error:
                error = {**error, "code": "timeout"}
            self.failure(step, view, error, attempt=view.attempt)
            return
        if work is GenerationStatus.CANCELLED:
            self.failure(step, view, view.work_error or _error("cancelled at the backend"), attempt=view.attempt)
            return
        timeout = self.timeout_for(step, view.tool_id)
        if timeout is not None and view.started_at is not None:
            deadline = view.started_at + timeout
            if self.now >= deadline:
                if view.work_sending and self.now < deadline + SENT_GRACE_SECONDS:
                    self.wake_at(deadline + SENT_GRACE_SECONDS)  # its submit's worker records what became of it
                    return
                self.actions.append(ExpireWork(sid))
                self.failure(step, view, deadline_error(timeout, view.work_error, sending=view.work_sending),
                             attempt=view.attempt)
                return
            self.wake_at(deadline)

    def visit_pending(self, step: Step, view: StepView) -> None:
        sid = step.step_id
        if self.blocked(sid):
            return
        context = self.step_context()
        reason = mapping_unavailable(step, context)
        if reason is not None:
            self.actions.append(SkipStep(sid, reason))
            self.status[sid] = StepStatus.SKIPPED
            return
        if needs_evaluation(step, view.attempt + 1):
            self.evaluate(step, view.attempt + 1, tool_id=step.tool_id, fallback=False)
            return
        if step.condition:  # one that does not loop: as cheap as reading what it compares
            try:
                ok = evaluate_condition(compile_condition(step.condition), job=self.run.inputs, steps=context)
            except ConditionError as exc:
                error = _error(f"condition could not be evaluated: {exc}")
                self.failure(step, view, error, attempt=view.attempt + 1, tool_may_help=False)
                return
            if not ok:
                self.actions.append(SkipStep(sid, f"condition is false: {step.condition}"))
                self.status[sid] = StepStatus.SKIPPED
                return
        if step.map is not None:
            self.open_map(step, view)
            return
        self.start(step, view, view.attempt + 1, tool_id=step.tool_id, fallback=False)

    def visit_ready(self, step: Step, view: StepView) -> None:
        """A step whose evaluation was asked for: go on once it is here (else wait for it)."""
        evaluated = self.run.evaluations.get(step.step_id)
        if evaluated is None or evaluated.attempt != view.attempt:
            return
        error = evaluated.error
        if error is not None:
            # a condition that cannot be evaluated is not the tool's fault: no fallback helps
            stage_is_condition = error.get("stage") == "condition"
            self.failure(step, view, {k: v for k, v in error.items() if k != "stage"}, attempt=view.attempt,
                         tool_may_help=not stage_is_condition)
            return
        if evaluated.condition is False:
            self.actions.append(SkipStep(step.step_id, f"condition is false: {step.condition}"))
            self.status[step.step_id] = StepStatus.SKIPPED
            return
        if step.map is not None:  # (its attempt is counted when the map opens)
            self.open_map(step, replace(view, attempt=view.attempt - 1), evaluated=evaluated)
            return
        self.start(step, view, view.attempt, tool_id=view.tool_id, fallback=view.using_fallback, evaluated=evaluated)

    def cancel_rest(self, reason: str) -> None:
        for sid, status in self.status.items():
            view = self.run.steps.get(sid)
            if status is StepStatus.RUNNING and view is not None and view.map is not None:
                # items whose work finished are kept, like a step's (a retry of the run reuses them)
                for item in view.map.active:
                    if item.work_status is GenerationStatus.COMPLETED and (sid, item.index) not in self.finished_items:
                        self.actions.append(FinishItem(sid, item.index, True, dict(item.work_outputs or {})))
                self.actions.append(CancelStep(sid, reason, was_running=True))
                self.status[sid] = StepStatus.CANCELLED
            elif status is StepStatus.RUNNING and view is not None and view.work_status is GenerationStatus.COMPLETED:
                # its work finished already: keep it, so a retry of the run reuses it instead of
                # paying for it again
                self.actions.append(CompleteStep(sid, dict(view.work_outputs or {})))
                self.status[sid] = StepStatus.SUCCEEDED
                self.outputs[sid] = dict(view.work_outputs or {})
            elif not status.terminal:
                self.actions.append(CancelStep(sid, reason, was_running=status is StepStatus.RUNNING))
                self.status[sid] = StepStatus.CANCELLED

    def finish(self) -> None:
        views = {
            sid: StepView(
                sid, self.status[sid], outputs=self.outputs.get(sid), skipped_by_error=self.by_error.get(sid, False)
            )
            for sid in self.status
        }
        outputs = resolve_job_outputs(self.job, views)
        if any(self.by_error.values()):
            status = RunStatus.PARTIALLY_COMPLETED if outputs else RunStatus.FAILED
            error = None if outputs else _error("every output was lost to skipped errors")
            error = self.ceiling.run_error() or error  # the reason the run stopped short
        else:
            status, error = RunStatus.COMPLETED, None
        self.actions.append(FinishRun(status, outputs, error))

    def blocked(self, sid: str) -> bool:
        """True while a dependency of the step has not finished, or is a map step whose outputs the
        engine has yet to gather. Walking from the touched steps, only the steps stored as
        unfinished can be unfinished still: the smaller of them and the dependencies is read, and
        the first dependency found unfinished ends it, so a fan-in's readiness costs about the same
        however many of its branches have finished."""
        deps = self.graph.dependencies.get(sid, frozenset())
        if self.gathering and not deps.isdisjoint(self.gathering):
            return True
        status = self.status
        unfinished = self.unfinished
        if unfinished is None:
            return any(dep in status and not status[dep].terminal for dep in deps)
        small, large = (unfinished, deps) if len(unfinished) < len(deps) else (deps, unfinished)
        return any(dep in large and dep in status and not status[dep].terminal for dep in small)

    def walk_all(self) -> None:
        """Visit every step in order (each sees what the call did to the steps before it)."""
        steps = self.graph.steps
        for sid in self.run.order or self.graph.order:
            step = steps.get(sid)
            if step is None:
                continue
            self.visit(step)
            if self.failed is not None:
                return

    def walk_from(self, touched: frozenset[str]) -> None:
        """Visit the touched steps and, in order, whatever follows from them: the steps after each
        one that finishes in this call (ready now, or skipped, which goes on down the graph)."""
        graph = self.graph
        heap = [(graph.index[sid], sid) for sid in touched if sid in graph.index]
        heapq.heapify(heap)
        queued = set(touched)
        while heap:
            _, sid = heapq.heappop(heap)
            before = self.status[sid]
            self.visit(graph.steps[sid])
            self.visited.append(sid)
            if self.failed is not None:
                return
            if not before.terminal and self.status[sid].terminal:
                for after in graph.dependents[sid]:
                    if after not in queued:
                        queued.add(after)
                        heapq.heappush(heap, (graph.index[after], after))

    def waits(self, sid: str) -> bool:
        status = self.status[sid]
        return status is StepStatus.WAITING_INPUT or (status is StepStatus.RUNNING and self.run.steps[sid].child_waiting)

    def decide(self) -> list[Action]:
        run = self.run
        if run.status.terminal:
            return []
        if run.status is RunStatus.QUEUED:
            self.actions.append(StartRun())
        if run.cancel_requested:
            self.cancel_rest("the run was cancelled")
            self.actions.append(FinishRun(RunStatus.CANCELLED, {}, _error("cancelled")))
            return self.actions
        if run.deadline_at is not None and self.now >= run.deadline_at:
            self.cancel_rest("the run passed its deadline")
            self.actions.append(FinishRun(RunStatus.FAILED, {}, _error("the run passed its deadline", code="deadline")))
            return self.actions
        touched = run.touched if run.status is not RunStatus.QUEUED else None
        if touched is None:
            self.walk_all()
        else:
            self.unfinished = run.unfinished if run.unfinished is not None else frozenset(
                sid for sid, view in run.steps.items() if not view.status.terminal
            )
            self.walk_from(touched)
        if self.failed is not None:
            # no step starts (or goes to be evaluated) in a call that halts the run: drop the starts
            # made before the failure was seen, so the cancellation below leaves no new work behind
            started = {a.step_id for a in self.actions if isinstance(a, StartStep | Evaluate | AskStep)}
            reset = {sid for sid in started if not self.status[sid].terminal}
            self.actions = [
                a for a in self.actions
                if not isinstance(a, StartStep | Evaluate | AskStep) and not (isinstance(a, OpenMap) and a.step_id in reset)
            ]
            for sid in reset:
                self.status[sid] = run.steps[sid].status
            step_id, message, error = self.failed
            self.cancel_rest(f"step {step_id} failed")
            err = {**(error or {}), "message": f"step {step_id} failed: {message}", "step_id": step_id}
            self.actions.append(FinishRun(RunStatus.FAILED, {}, err))
            return self.actions
        # the steps that may still be unfinished: all of them, or (walking from the touched steps)
        # those stored as unfinished, of which only the ones this call finished are terminal now
        # (so ``all`` stops at about the first one it reads)
        open_steps = self.status if self.unfinished is None else self.unfinished
        if all(self.status[sid].terminal for sid in open_steps):
            if not self.gathering:  # else the engine gathers the map outputs and decides again
                self.finish()
            return self.actions
        if self.unfinished is None or run.status is RunStatus.WAITING_INPUT or any(map(self.waits, self.visited)):
            waiting = any(map(self.waits, open_steps))
        else:  # nothing waited when the run was last planned (it would wait), and no step seen waits
            waiting = False
        if waiting != (run.status is RunStatus.WAITING_INPUT):
            self.actions.append(SetWaiting(waiting))
        if self.unfinished is None:
            if run.deadline_at is not None:
                self.wake_at(run.deadline_at)
            if self.wake is not None:
                self.actions.append(Wake(self.wake))
        elif self.wake is not None:  # the timers of steps this call did not see are set already
            self.actions.append(Wake(self.wake, keep_earlier=True))
        return self.actions


def decide(run: RunView, now: float) -> list[Action]:
    """The actions that follow from ``run`` at time ``now``. Pure: no I/O, no clock, no randomness."""
    return _Planner(run, now).decide()


__all__ = [  # the planner, and the vocabulary of engine.actions it speaks
    "MAX_RETRY_AFTER_SECONDS",
    "Action",
    "AskStep",
    "Budget",
    "CancelStep",
    "CompleteMap",
    "CompleteStep",
    "Evaluate",
    "ExpireQuestion",
    "ExpireWork",
    "FailStep",
    "FinishItem",
    "FinishRun",
    "Graph",
    "ItemView",
    "MapView",
    "OpenMap",
    "RetryStep",
    "RunView",
    "SetWaiting",
    "SkipStep",
    "StartRun",
    "StartStep",
    "StepEvaluation",
    "StepView",
    "Wake",
    "decide",
    "graph_of",
    "resolve_job_outputs",
    "retry_delay",
    "topological_order",
]
