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
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

from toolweave.engine.conditions import ConditionError, compile_condition, evaluate_condition
from toolweave.engine.mapping import MappingError, mapping_unavailable, resolve_step_inputs
from toolweave.inputs import InputError, prepare_inputs
from toolweave.model.definitions import ErrorStrategy, JobDefinition, Step, ToolDefinition
from toolweave.model.graph import output_source, sink_steps, step_order
from toolweave.model.status import GenerationStatus, RunStatus, StepStatus

# --- state -----------------------------------------------------------------------------------


@dataclass(slots=True)
class StepView:
    """One step run as the planner sees it (read-only; not frozen because a frozen dataclass
    costs five times as much to build, and the engine builds one per step per transition)."""

    step_id: str
    status: StepStatus = StepStatus.PENDING
    attempt: int = 0
    tool_id: str | None = None
    using_fallback: bool = False
    outputs: dict[str, Any] | None = None
    skipped_by_error: bool = False
    reason: str | None = None
    next_attempt_at: float | None = None
    started_at: float | None = None
    work_status: GenerationStatus | None = None
    """Status of the step's current generation (or child run, for a nested job)."""
    work_outputs: dict[str, Any] | None = None
    work_error: dict[str, Any] | None = None


@dataclass(frozen=True)
class RunView:
    run_id: str
    status: RunStatus
    job: JobDefinition
    inputs: dict[str, Any]
    steps: Mapping[str, StepView]
    tools: Mapping[str, ToolDefinition] = field(default_factory=dict)
    jobs: Mapping[str, JobDefinition] = field(default_factory=dict)
    """The nested jobs its steps run, by id (their input schemas are the steps' contracts)."""
    cancel_requested: bool = False
    deadline_at: float | None = None
    order: tuple[str, ...] = ()
    """Step ids in topological order (computed from ``job`` when empty; the engine caches it)."""


# --- actions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class StartRun:
    pass


@dataclass(frozen=True)
class StartStep:
    """Run the step's tool (or nested job, when ``job_id`` is set) as a new attempt."""

    step_id: str
    attempt: int
    inputs: dict[str, Any]
    tool_id: str | None = None
    job_id: str | None = None
    using_fallback: bool = False
    deadline_at: float | None = None


@dataclass(frozen=True)
class CompleteStep:
    step_id: str
    outputs: dict[str, Any]


@dataclass(frozen=True)
class SkipStep:
    step_id: str
    reason: str
    by_error: bool = False
    error: dict[str, Any] | None = None


@dataclass(frozen=True)
class FailStep:
    step_id: str
    reason: str
    error: dict[str, Any] | None = None


@dataclass(frozen=True)
class RetryStep:
    step_id: str
    at: float
    next_attempt: int
    error: dict[str, Any] | None = None


@dataclass(frozen=True)
class CancelStep:
    """Cancel a step; if it is running, its generation is cancelled at the backend too."""

    step_id: str
    reason: str
    was_running: bool = False


@dataclass(frozen=True)
class ExpireWork:
    """A running step passed its timeout: its generation times out and is cancelled at the backend."""

    step_id: str


@dataclass(frozen=True)
class FinishRun:
    status: RunStatus
    outputs: dict[str, Any]
    error: dict[str, Any] | None = None


@dataclass(frozen=True)
class Wake:
    """Decide again at this time (a retry falls due, a timeout or the deadline passes)."""

    at: float


Action = StartRun | StartStep | CompleteStep | SkipStep | FailStep | RetryStep | CancelStep | ExpireWork | FinishRun | Wake


# --- helpers ---------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _compiled(expr: str) -> Any:
    return compile_condition(expr)


def topological_order(job: JobDefinition) -> list[str]:
    """Step ids in dependency order; ties keep the order of the file (a validated job has no cycle)."""
    return step_order(job.steps)


def retry_delay(run_id: str, step_id: str, attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with equal jitter, derived deterministically from the attempt."""
    delay = min(cap, base * 2.0 ** max(0, attempt - 1))
    digest = hashlib.blake2b(f"{run_id}:{step_id}:{attempt}".encode(), digest_size=8).digest()
    fraction = int.from_bytes(digest, "big") / 2**64
    return delay / 2 + fraction * delay / 2


MAX_RETRY_AFTER_SECONDS = 3600.0
"""A backend's ``Retry-After`` is honoured up to this (a hostile or broken header cannot park a
step for days; the run's deadline still applies)."""


def _retry_after(error: dict[str, Any]) -> float:
    value = error.get("retry_after_seconds")
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        return 0.0
    return min(float(value), MAX_RETRY_AFTER_SECONDS)


def _seeded(run_id: str, step_id: str, attempt: int) -> random.Random:
    """The random source of one attempt's unmapped seeds: random-looking, and the same every time
    the planner decides that attempt (``decide`` stays deterministic)."""
    digest = hashlib.blake2b(f"seed:{run_id}:{step_id}:{attempt}".encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


def _follow_path(value: Any, path: str | None) -> Any:
    if not path:
        return value
    from toolweave.engine.mapping import follow_path

    return follow_path(value, path)


def resolve_job_outputs(job: JobDefinition, steps: Mapping[str, StepView]) -> dict[str, Any]:
    """The run's final outputs from the succeeded steps.

    Declared outputs name their source step (or resolve to the single sink step that has an
    output of that name). Without an ``outputSchema``, the outputs of the sink steps are merged
    (prefixed ``stepId.`` where two sinks share a name).
    """
    result: dict[str, Any] = {}
    sinks = sink_steps(job.steps)
    if job.output_schema:
        for out in job.output_schema:
            found = output_source(job, out)
            if found is None:
                continue
            source, name, path = found
            view = steps.get(source)
            if view is None or view.status is not StepStatus.SUCCEEDED or name not in (view.outputs or {}):
                continue
            try:
                result[out.name] = _follow_path((view.outputs or {})[name], path)
            except (KeyError, IndexError, TypeError, MappingError):
                continue
        return result
    counts: dict[str, int] = {}
    for sid in sinks:
        for name in steps[sid].outputs or {}:
            counts[name] = counts.get(name, 0) + 1
    for sid in sinks:
        view = steps[sid]
        if view.status is not StepStatus.SUCCEEDED:
            continue
        for name, value in (view.outputs or {}).items():
            result[name if counts[name] == 1 else f"{sid}.{name}"] = value
    return result


def _error(message: str, *, retryable: bool = False, code: str | None = None) -> dict[str, Any]:
    return {"message": message, "retryable": retryable, "code": code}


# --- decide ----------------------------------------------------------------------------------


class _Planner:
    def __init__(self, run: RunView, now: float) -> None:
        self.run = run
        self.now = now
        self.job = run.job
        self.actions: list[Action] = []
        self.status: dict[str, StepStatus] = {sid: v.status for sid, v in run.steps.items()}
        self.outputs: dict[str, dict[str, Any] | None] = {sid: v.outputs for sid, v in run.steps.items()}
        self.by_error: dict[str, bool] = {sid: v.skipped_by_error for sid, v in run.steps.items()}
        self.wake: float | None = None
        self.failed: tuple[str, str, dict[str, Any] | None] | None = None

    def step_context(self) -> dict[str, dict[str, Any]]:
        return {sid: {"status": str(st), "outputs": self.outputs.get(sid) or {}} for sid, st in self.status.items()}

    def wake_at(self, at: float) -> None:
        self.wake = at if self.wake is None else min(self.wake, at)

    def timeout_for(self, step: Step, view: StepView) -> float | None:
        if step.timeout_seconds is not None:
            return step.timeout_seconds
        tool = self.run.tools.get(view.tool_id or step.tool_id or "")
        return tool.timeout_seconds if tool is not None else None

    def contract(self, step: Step, tool_id: str | None) -> tuple[str, list[Any]] | None:
        """(what to name in an error, input schema) of what the step runs; None when the run
        carries no definition of it (a view built without its tools)."""
        if tool_id is not None:
            tool = self.run.tools.get(tool_id)
            return None if tool is None else (f"tool {tool_id!r}", tool.input_schema)
        nested = self.run.jobs.get(step.job_id or "")
        return None if nested is None else (f"job {nested.job_id!r}", nested.input_schema)

    # each handler updates self.status so later steps see the effect
    def start(self, step: Step, view: StepView, attempt: int, *, tool_id: str | None, fallback: bool) -> None:
        try:
            inputs = resolve_step_inputs(step, job=self.run.inputs, steps=self.step_context())
        except MappingError as exc:
            # the failed attempt is the one with ``tool_id``: a fallback that cannot resolve its
            # inputs must not start the fallback again (that recursed without end)
            attempted = replace(view, tool_id=tool_id, using_fallback=fallback)
            self.failure(step, attempted, _error(f"inputs could not be resolved: {exc}"), attempt=attempt)
            return
        contract = self.contract(step, tool_id)
        if contract is not None:
            # the step gets its tool's (or nested job's) contract exactly as a direct run does:
            # coerced, defaulted, bounds and choices checked, unmapped seeds drawn; a value the
            # tool refuses fails the attempt here and never reaches the backend
            name, schema = contract
            try:
                inputs = prepare_inputs(schema, inputs, coerce_text=True, allow_paths=False,
                                        rng=_seeded(self.run.run_id, step.step_id, attempt))
            except InputError as exc:
                attempted = replace(view, tool_id=tool_id, using_fallback=fallback)
                error = _error(f"{name} refused its inputs: {'; '.join(map(str, exc.problems))}", code="invalid_input")
                error["fields"] = [{"field": p.field, "message": p.message} for p in exc.problems]
                self.failure(step, attempted, error, attempt=attempt)
                return
        timeout = self.timeout_for(step, view) if tool_id == view.tool_id else step.timeout_seconds
        if timeout is None and tool_id is not None:
            tool = self.run.tools.get(tool_id)
            timeout = tool.timeout_seconds if tool else None
        deadline = self.now + timeout if timeout else None
        if deadline is not None:
            self.wake_at(deadline)
        self.actions.append(
            StartStep(
                step.step_id,
                attempt,
                inputs,
                tool_id=tool_id,
                job_id=None if tool_id else step.job_id,
                using_fallback=fallback,
                deadline_at=deadline,
            )
        )
        self.status[step.step_id] = StepStatus.RUNNING

    def failure(
        self, step: Step, view: StepView, error: dict[str, Any], *, attempt: int, tool_may_help: bool = True
    ) -> None:
        """Handle a failed attempt. ``tool_may_help`` is False when the error is not the tool's (a
        condition that cannot be evaluated): another tool would not fix it, so no fallback."""
        handling = self.job.error_handling_for(step)
        strategy = handling.strategy
        retryable = bool(error.get("retryable"))
        if strategy is ErrorStrategy.RETRY:
            if retryable and attempt < handling.max_attempts:
                delay = retry_delay(
                    self.run.run_id, step.step_id, attempt, handling.backoff_seconds, handling.max_backoff_seconds
                )
                delay = max(delay, _retry_after(error))
                self.actions.append(RetryStep(step.step_id, self.now + delay, attempt + 1, error))
                self.status[step.step_id] = StepStatus.WAITING_RETRY
                self.wake_at(self.now + delay)
                return
            strategy = handling.then
        if strategy is ErrorStrategy.FALLBACK:
            if tool_may_help and not view.using_fallback and handling.fallback_tool_id:
                self.start(step, view, attempt + 1, tool_id=handling.fallback_tool_id, fallback=True)
                return
            strategy = handling.then if handling.then is not ErrorStrategy.FALLBACK else ErrorStrategy.HALT
        message = str(error.get("message") or "failed")
        if strategy is ErrorStrategy.SKIP:
            self.actions.append(SkipStep(step.step_id, f"skipped after an error: {message}", True, error))
            self.status[step.step_id] = StepStatus.SKIPPED
            self.by_error[step.step_id] = True
            return
        self.actions.append(FailStep(step.step_id, message, error))
        self.status[step.step_id] = StepStatus.FAILED
        if self.failed is None:
            self.failed = (step.step_id, message, error)

    def visit(self, step: Step) -> None:
        sid = step.step_id
        view = self.run.steps[sid]
        status = self.status[sid]
        if status is StepStatus.RUNNING:
            self.visit_running(step, view)
        elif status is StepStatus.WAITING_RETRY:
            due = view.next_attempt_at or self.now
            if self.now >= due:
                self.start(step, view, view.attempt + 1, tool_id=view.tool_id or step.tool_id, fallback=view.using_fallback)
            else:
                self.wake_at(due)
        elif status in (StepStatus.PENDING, StepStatus.READY):
            self.visit_pending(step, view)

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
        timeout = self.timeout_for(step, view)
        if timeout is not None and view.started_at is not None:
            deadline = view.started_at + timeout
            if self.now >= deadline:
                self.actions.append(ExpireWork(sid))
                err = _error(f"timed out after {timeout:g} s", retryable=True, code="timeout")
                self.failure(step, view, err, attempt=view.attempt)
                return
            self.wake_at(deadline)

    def visit_pending(self, step: Step, view: StepView) -> None:
        sid = step.step_id
        for dep in step.all_dependencies:
            if dep in self.status and not self.status[dep].terminal:
                return
        context = self.step_context()
        reason = mapping_unavailable(step, context)
        if reason is not None:
            self.actions.append(SkipStep(sid, reason))
            self.status[sid] = StepStatus.SKIPPED
            return
        if step.condition:
            try:
                ok = evaluate_condition(_compiled(step.condition), job=self.run.inputs, steps=context)
            except ConditionError as exc:
                error = _error(f"condition could not be evaluated: {exc}")
                self.failure(step, view, error, attempt=view.attempt + 1, tool_may_help=False)
                return
            if not ok:
                self.actions.append(SkipStep(sid, f"condition is false: {step.condition}"))
                self.status[sid] = StepStatus.SKIPPED
                return
        self.start(step, view, view.attempt + 1, tool_id=step.tool_id, fallback=False)

    def cancel_rest(self, reason: str) -> None:
        for sid, status in self.status.items():
            view = self.run.steps.get(sid)
            if status is StepStatus.RUNNING and view is not None and view.work_status is GenerationStatus.COMPLETED:
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
        else:
            status, error = RunStatus.COMPLETED, None
        self.actions.append(FinishRun(status, outputs, error))

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
        steps = {s.step_id: s for s in self.job.steps}
        for sid in run.order or topological_order(self.job):
            step = steps.get(sid)
            if step is None:
                continue
            self.visit(step)
            if self.failed is not None:
                break
        if self.failed is not None:
            # no step starts in a call that halts the run: drop the starts made before the failure
            # was seen, so the cancellation below does not leave a new generation behind
            started = {a.step_id for a in self.actions if isinstance(a, StartStep)}
            self.actions = [a for a in self.actions if not isinstance(a, StartStep)]
            for sid in started:
                self.status[sid] = run.steps[sid].status
            step_id, message, error = self.failed
            self.cancel_rest(f"step {step_id} failed")
            err = {**(error or {}), "message": f"step {step_id} failed: {message}", "step_id": step_id}
            self.actions.append(FinishRun(RunStatus.FAILED, {}, err))
            return self.actions
        if all(s.terminal for s in self.status.values()):
            self.finish()
            return self.actions
        if run.deadline_at is not None:
            self.wake_at(run.deadline_at)
        if self.wake is not None:
            self.actions.append(Wake(self.wake))
        return self.actions


def decide(run: RunView, now: float) -> list[Action]:
    """The actions that follow from ``run`` at time ``now``. Pure: no I/O, no clock, no randomness."""
    return _Planner(run, now).decide()
