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
from dataclasses import replace
from typing import Any

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
from toolweave.engine.asking import build_question, default_answer, outputs_of
from toolweave.engine.ceiling import Ceiling
from toolweave.engine.conditions import ConditionError, compile_condition, evaluate_condition
from toolweave.engine.evaluate import needs_evaluation, templates_loop
from toolweave.engine.mapping import MappingError, mapping_unavailable, resolve_map_items, resolve_step_inputs
from toolweave.inputs import InputError, drawn_seeds, prepare_inputs
from toolweave.model.asking import OnReject
from toolweave.model.definitions import ErrorStrategy, JobDefinition, Step
from toolweave.model.graph import output_source, sink_steps, step_order
from toolweave.model.status import GenerationStatus, RunStatus, StepStatus

# --- helpers ---------------------------------------------------------------------------------


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


def _seeded(run_id: str, step_id: str, attempt: int) -> random.Random:
    """The random source of one attempt's unmapped seeds: random-looking, and the same every time
    the planner decides that attempt (``decide`` stays deterministic)."""
    digest = hashlib.blake2b(f"seed:{run_id}:{step_id}:{attempt}".encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


def _retry_after(error: dict[str, Any]) -> float:
    value = error.get("retry_after_seconds")
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        return 0.0
    return min(float(value), MAX_RETRY_AFTER_SECONDS)


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
        self._context: dict[str, dict[str, Any]] | None = None
        self.status: dict[str, StepStatus] = _Watched(((sid, v.status) for sid, v in run.steps.items()), self._changed)
        self.outputs: dict[str, dict[str, Any] | None] = _Watched(
            ((sid, v.outputs) for sid, v in run.steps.items()), self._changed
        )
        self.by_error: dict[str, bool] = {
            sid: v.skipped_by_error or (v.status is StepStatus.SUCCEEDED and v.map is not None and v.map.failed > 0)
            for sid, v in run.steps.items()
        }
        """Steps whose error was skipped past (a map step that succeeded with failed items counts)."""
        self.wake: float | None = None
        self.failed: tuple[str, str, dict[str, Any] | None] | None = None
        self.gathering: set[str] = set()
        """Map steps completed in this call: their outputs are gathered by the engine, which decides
        again; the steps after them wait for that."""
        self.finished_items: set[tuple[str, int]] = set()
        self.last_item_error: tuple[int, dict[str, Any]] | None = None
        """The last item that failed in this call, and its error (named in the map step's error)."""
        self.ceiling = Ceiling(run.budget, run.steps)
        """The run's cost ceiling, if it has one: what is spent and under way (``engine.ceiling``)."""

    def step_context(self) -> dict[str, dict[str, Any]]:
        """What mappings, templates and conditions see of the steps (``steps.<id>.status``,
        ``steps.<id>.outputs``), as the call has changed them so far: built once per call and kept
        up to date step by step (``_changed``), so starting the branches of a wide fan-out costs
        the same per branch as starting one. Read it during a call; keep a copy."""
        if self._context is None:
            self._context = {sid: self._entry(sid) for sid in self.status}
        return self._context

    def _entry(self, sid: str) -> dict[str, Any]:
        return {"status": str(self.status[sid]), "outputs": self.outputs.get(sid) or {}}

    def _changed(self, sid: str) -> None:
        if self._context is not None and sid in self.status:
            self._context[sid] = self._entry(sid)

    def wake_at(self, at: float) -> None:
        self.wake = at if self.wake is None else min(self.wake, at)

    def timeout_for(self, step: Step, tool_id: str | None) -> float | None:
        """The step's timeout, else that of the tool the attempt runs (``tool_id``, else the step's)."""
        if step.timeout_seconds is not None:
            return step.timeout_seconds
        tool = self.run.tools.get(tool_id or step.tool_id or "")
        return tool.timeout_seconds if tool is not None else None

    def recovery(
        self, step: Step, error: dict[str, Any], *, attempt: int, using_fallback: bool, tool_may_help: bool, key: str
    ) -> tuple[ErrorStrategy, float | None]:
        """What follows a failed attempt under the step's error handling: ``(RETRY, at)``,
        ``(FALLBACK, None)``, ``(SKIP, None)`` or ``(HALT, None)``. ``key`` seeds the jitter."""
        handling = self.job.error_handling_for(step)
        strategy = handling.strategy
        if strategy is ErrorStrategy.RETRY:
            if error.get("retryable") and attempt < handling.max_attempts:
                delay = retry_delay(self.run.run_id, key, attempt, handling.backoff_seconds, handling.max_backoff_seconds)
                return ErrorStrategy.RETRY, self.now + max(delay, _retry_after(error))
            strategy = handling.then
        if strategy is ErrorStrategy.FALLBACK:
            if tool_may_help and not using_fallback and handling.fallback_tool_id:
                return ErrorStrategy.FALLBACK, None
            strategy = handling.then if handling.then is not ErrorStrategy.FALLBACK else ErrorStrategy.HALT
        return (ErrorStrategy.SKIP if strategy is ErrorStrategy.SKIP else ErrorStrategy.HALT), None

    def contract(self, step: Step, tool_id: str | None) -> tuple[str, list[Any]] | None:
        """(what to name in an error, input schema) of what the step runs; None when the run
        carries no definition of it (a view built without its tools)."""
        if tool_id is not None:
            tool = self.run.tools.get(tool_id)
            return None if tool is None else (f"tool {tool_id!r}", tool.input_schema)
        nested = self.run.jobs.get(step.job_id or "")
        return None if nested is None else (f"job {nested.job_id!r}", nested.input_schema)

    def attempt_inputs(
        self, step: Step, tool_id: str | None, attempt: int, *, item: ItemView | None = None,
        resolved: dict[str, Any] | None = None,
    ) -> tuple[dict[str, Any], tuple[str, ...]] | dict[str, Any]:
        """The inputs of one attempt (of the step, or of one of its items) under the contract of
        what it runs: resolved from the mappings, then coerced, defaulted, bounds and choices
        checked, unmapped seeds drawn — exactly as a direct run's. Returns ``(inputs, the seeds
        drawn at random)``, or the error that fails the attempt (a dict)."""
        try:
            if resolved is not None:  # evaluated in an evaluator process (templates that loop)
                inputs = dict(resolved)
            elif item is None:
                inputs = resolve_step_inputs(step, job=self.run.inputs, steps=self.step_context())
            else:
                inputs = resolve_step_inputs(
                    step, job=self.run.inputs, steps=self.step_context(), item=item.value, index=item.index
                )
        except MappingError as exc:
            return _error(f"inputs could not be resolved: {exc}")
        contract = self.contract(step, tool_id)
        if contract is None:
            return inputs, ()
        name, schema = contract
        key = step.step_id if item is None else f"{step.step_id}[{item.index}]"
        try:
            prepared = prepare_inputs(schema, inputs, coerce_text=True, allow_paths=False,
                                      rng=_seeded(self.run.run_id, key, attempt))
        except InputError as exc:
            error = _error(f"{name} refused its inputs: {'; '.join(map(str, exc.problems))}", code="invalid_input")
            error["fields"] = [{"field": p.field, "message": p.message} for p in exc.problems]
            return error
        return prepared, tuple(drawn_seeds(schema, inputs))

    # each handler updates self.status so later steps see the effect
    def evaluate(self, step: Step, attempt: int, *, tool_id: str | None, fallback: bool) -> None:
        self.actions.append(Evaluate(step.step_id, attempt, tool_id, fallback, dict(self.step_context())))
        self.status[step.step_id] = StepStatus.READY

    def start(
        self, step: Step, view: StepView, attempt: int, *, tool_id: str | None, fallback: bool,
        evaluated: StepEvaluation | None = None,
    ) -> None:
        resolved = evaluated.inputs if evaluated is not None else None
        if resolved is None and templates_loop(step):
            self.evaluate(step, attempt, tool_id=tool_id, fallback=fallback)
            return
        found = self.attempt_inputs(step, tool_id, attempt, resolved=resolved)
        if isinstance(found, dict):
            # the failed attempt is the one with ``tool_id``: a fallback that cannot resolve its
            # inputs must not start the fallback again (that recursed without end)
            attempted = replace(view, tool_id=tool_id, using_fallback=fallback)
            self.failure(step, attempted, found, attempt=attempt)
            return
        inputs, drawn = found
        if step.ask is not None:
            self.ask(step, view, attempt, inputs)
            return
        ceiling = self.ceiling.refuse(step.step_id)
        if ceiling is not None:
            self.give_up(step, ceiling, skip=True)
            return
        self.start_action(step, attempt, inputs, tool_id=tool_id, fallback=fallback, drawn=drawn)
        self.status[step.step_id] = StepStatus.RUNNING

    # ask steps ------------------------------------------------------------------------------------

    def ask(self, step: Step, view: StepView, attempt: int, inputs: dict[str, Any]) -> None:
        """An ask step is ready: its question is stored and it waits for a person until its timeout."""
        assert step.ask is not None
        question = build_question(step.ask, inputs)
        if isinstance(question, str):
            self.failure(step, view, _error(f"step {step.step_id!r} cannot ask: {question}", code="invalid_input"),
                         attempt=attempt, tool_may_help=False)
            return
        expires = self.now + step.ask.timeout
        self.actions.append(AskStep(step.step_id, attempt, question, expires))
        self.status[step.step_id] = StepStatus.WAITING_INPUT
        self.wake_at(expires)

    def visit_waiting(self, step: Step, view: StepView) -> None:
        """An ask step waiting for input: its answer, or the default answer once its timeout passed."""
        spec, question = step.ask, view.question
        if spec is None or question is None:  # (a view built without its question)
            return
        answer, by = view.answer, view.answered_by
        if answer is None:
            expires = (view.started_at if view.started_at is not None else self.now) + spec.timeout
            if self.now < expires:
                self.wake_at(expires)
                return
            answer, by = default_answer(spec, question), None
            self.actions.append(ExpireQuestion(step.step_id, answer))
        outputs = outputs_of(spec, question, answer, by)
        if not outputs["approved"] and spec.on_reject is OnReject.FAIL:
            if by is None:
                error = _error(f"not answered within {spec.timeout:g} s (onTimeout: {spec.on_timeout.value})", code="ask_timeout")
            else:
                error = _error(f"rejected by {by}" + (f": {outputs['comment']}" if outputs["comment"] else ""),
                               code="rejected")
            self.give_up(step, error, skip=self.job.error_handling_for(step).strategy is ErrorStrategy.SKIP)
            return
        self.actions.append(CompleteStep(step.step_id, outputs))
        self.status[step.step_id] = StepStatus.SUCCEEDED
        self.outputs[step.step_id] = outputs

    def start_action(
        self, step: Step, attempt: int, inputs: dict[str, Any], *, tool_id: str | None, fallback: bool,
        item: int | None = None, drawn: tuple[str, ...] = (),
    ) -> None:
        """Say ``StartStep`` (of the step, or of one of its items), with the attempt's deadline."""
        timeout = self.timeout_for(step, tool_id)
        deadline = self.now + timeout if timeout else None
        if deadline is not None:
            self.wake_at(deadline)
        self.actions.append(
            StartStep(
                step.step_id, attempt, inputs, tool_id=tool_id, job_id=None if tool_id else step.job_id,
                using_fallback=fallback, deadline_at=deadline, item=item, drawn_seeds=drawn,
            )
        )

    def failure(
        self, step: Step, view: StepView, error: dict[str, Any], *, attempt: int, tool_may_help: bool = True
    ) -> None:
        """Handle a failed attempt. ``tool_may_help`` is False when the error is not the tool's (a
        condition that cannot be evaluated): another tool would not fix it, so no fallback."""
        strategy, at = self.recovery(
            step, error, attempt=attempt, using_fallback=view.using_fallback, tool_may_help=tool_may_help,
            key=step.step_id,
        )
        if strategy is ErrorStrategy.RETRY and at is not None:
            self.actions.append(RetryStep(step.step_id, at, attempt + 1, error))
            self.status[step.step_id] = StepStatus.WAITING_RETRY
            self.wake_at(at)
            return
        if strategy is ErrorStrategy.FALLBACK:
            fallback = self.job.error_handling_for(step).fallback_tool_id
            self.start(step, view, attempt + 1, tool_id=fallback, fallback=True)
            return
        self.give_up(step, error, skip=strategy is ErrorStrategy.SKIP)

    def give_up(self, step: Step, error: dict[str, Any], *, skip: bool) -> None:
        """The step ends with an error: skipped past it, or failed (which halts the run)."""
        message = str(error.get("message") or "failed")
        if skip:
            self.actions.append(SkipStep(step.step_id, f"skipped after an error: {message}", True, error))
            self.status[step.step_id] = StepStatus.SKIPPED
            self.by_error[step.step_id] = True
            return
        self.actions.append(FailStep(step.step_id, message, error))
        self.status[step.step_id] = StepStatus.FAILED
        if self.failed is None:
            self.failed = (step.step_id, message, error)

    # map steps ------------------------------------------------------------------------------------

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
                self.actions.append(ExpireWork(sid, item=item.index))
                err = _error(f"timed out after {timeout:g} s", retryable=True, code="timeout")
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
                self.actions.append(ExpireWork(sid))
                err = _error(f"timed out after {timeout:g} s", retryable=True, code="timeout")
                self.failure(step, view, err, attempt=view.attempt)
                return
            self.wake_at(deadline)

    def visit_pending(self, step: Step, view: StepView) -> None:
        sid = step.step_id
        for dep in step.all_dependencies:
            if (dep in self.status and not self.status[dep].terminal) or dep in self.gathering:
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
        if all(s.terminal for s in self.status.values()):
            if not self.gathering:  # else the engine gathers the map outputs and decides again
                self.finish()
            return self.actions
        waiting = any(s is StepStatus.WAITING_INPUT or (s is StepStatus.RUNNING and run.steps[sid].child_waiting)
                      for sid, s in self.status.items())
        if waiting != (run.status is RunStatus.WAITING_INPUT):
            self.actions.append(SetWaiting(waiting))
        if run.deadline_at is not None:
            self.wake_at(run.deadline_at)
        if self.wake is not None:
            self.actions.append(Wake(self.wake))
        return self.actions


class _Watched(dict[str, Any]):
    """A dict of the planner's that tells it which key changed (its step context follows)."""

    __slots__ = ("_on_set",)

    def __init__(self, items: Any, on_set: Any) -> None:
        super().__init__(items)
        self._on_set = on_set

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self._on_set(key)


def decide(run: RunView, now: float) -> list[Action]:
    """The actions that follow from ``run`` at time ``now``. Pure: no I/O, no clock, no randomness."""
    return _Planner(run, now).decide()


__all__ = [  # the planner, and the vocabulary of engine.actions it speaks
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
    "resolve_job_outputs",
    "retry_delay",
    "topological_order",
]
