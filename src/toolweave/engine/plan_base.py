"""What every part of one planner call shares (``engine.plan``): the call's state (the steps'
statuses and outputs as the call changes them, what mappings, templates and conditions see of
them, the earliest wake, the cost ceiling), an attempt's inputs under its tool's contract, starting
a step, and what follows a failed attempt (retry, fallback, skip, halt). Pure: no I/O."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from typing import Any, Generic, TypeVar

from toolweave.engine.actions import (
    Action,
    Evaluate,
    FailStep,
    ItemView,
    RetryStep,
    RunView,
    SkipStep,
    StartStep,
    StepEvaluation,
    StepView,
)
from toolweave.engine.ceiling import Ceiling
from toolweave.engine.evaluate import templates_loop
from toolweave.engine.mapping import MappingError, resolve_step_inputs
from toolweave.engine.plan_rules import error as _error
from toolweave.engine.plan_rules import graph_of, retry_after, retry_delay, seeded
from toolweave.inputs import InputError, drawn_seeds, prepare_inputs
from toolweave.model.definitions import ErrorStrategy, Step
from toolweave.model.status import StepStatus

V = TypeVar("V")


class PlannerBase:
    def __init__(self, run: RunView, now: float) -> None:
        self.run = run
        self.now = now
        self.job = run.job
        self.actions: list[Action] = []
        self._context: _Context | None = None
        steps = run.steps
        self.status: _Overlay[StepStatus] = (
            _Overlay(steps, _status_of, self._changed) if run.statuses is None
            else _Overlay(run.statuses, _same, self._changed)
        )
        self.outputs: _Overlay[dict[str, Any] | None] = _Overlay(steps, _outputs_of, self._changed)
        self.by_error: _Overlay[bool] = _Overlay(steps, _by_error_of, None)
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
        self.graph = graph_of(run.job)
        self.unfinished: frozenset[str] | None = None
        """Walking from the touched steps (``RunView.touched``): the steps stored as unfinished."""
        self.visited: list[str] = []
        """Walking from the touched steps: the steps visited."""

    def step_context(self) -> Mapping[str, dict[str, Any]]:
        """What mappings, templates and conditions see of the steps (``steps.<id>.status``,
        ``steps.<id>.outputs``), as the call has changed them so far. A step's entry is made when it
        is first read and made again when the call changes the step, so reading a few steps costs
        the same however many the run has. Read it during a call; keep a copy."""
        if self._context is None:
            self._context = _Context(self)
        return self._context

    def _entry(self, sid: str) -> dict[str, Any]:
        return {"status": str(self.status[sid]), "outputs": self.outputs.get(sid) or {}}

    def _changed(self, sid: str) -> None:
        if self._context is not None:
            self._context._entries.pop(sid, None)

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
                return ErrorStrategy.RETRY, self.now + max(delay, retry_after(error))
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
        drawn = tuple(drawn_seeds(schema, inputs))
        try:  # (a seeded generator costs more than the rest of a start: made only when a seed is drawn)
            prepared = prepare_inputs(schema, inputs, coerce_text=True, allow_paths=False,
                                      rng=seeded(self.run.run_id, key, attempt) if drawn else None)
        except InputError as exc:
            error = _error(f"{name} refused its inputs: {'; '.join(map(str, exc.problems))}", code="invalid_input")
            error["fields"] = [{"field": p.field, "message": p.message} for p in exc.problems]
            return error
        return prepared, drawn

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


    def ask(self, step: Step, view: StepView, attempt: int, inputs: dict[str, Any]) -> None:
        raise NotImplementedError  # engine.plan_asks


def _same(status: Any) -> Any:
    return status


def _status_of(view: StepView) -> StepStatus:
    return view.status


def _outputs_of(view: StepView) -> dict[str, Any] | None:
    return view.outputs


def _by_error_of(view: StepView) -> bool:
    return view.skipped_by_error or (view.status is StepStatus.SUCCEEDED and view.map is not None and view.map.failed > 0)


class _Overlay(Generic[V]):
    """One value per step as the call has changed it, else as the run's view has it. Reading or
    changing one step costs the same however many steps the run has; going over them all
    (``items``, ``values``) reads every step's view."""

    __slots__ = ("_on_set", "_read", "_steps", "changed")

    def __init__(self, steps: Mapping[str, Any], read: Callable[[Any], V],
                 on_set: Callable[[str], None] | None) -> None:
        self.changed: dict[str, V] = {}
        self._steps = steps
        self._read = read
        self._on_set = on_set

    def __getitem__(self, sid: str) -> V:
        changed = self.changed
        if sid in changed:
            return changed[sid]
        return self._read(self._steps[sid])

    def get(self, sid: str, default: Any = None) -> Any:
        return self[sid] if sid in self._steps else default

    def __contains__(self, sid: object) -> bool:
        return sid in self._steps

    def __setitem__(self, sid: str, value: V) -> None:
        self.changed[sid] = value
        if self._on_set is not None:
            self._on_set(sid)

    def __iter__(self) -> Iterator[str]:
        return iter(self._steps)

    def items(self) -> Iterator[tuple[str, V]]:
        return ((sid, self[sid]) for sid in self._steps)

    def values(self) -> Iterator[V]:
        return (self[sid] for sid in self._steps)


class _Context(Mapping[str, dict[str, Any]]):
    """``PlannerBase.step_context``: an entry per step, made when first read."""

    __slots__ = ("_entries", "_planner")

    def __init__(self, planner: PlannerBase) -> None:
        self._entries: dict[str, dict[str, Any]] = {}
        self._planner = planner

    def __getitem__(self, sid: str) -> dict[str, Any]:
        entry = self._entries.get(sid)
        if entry is None:
            if sid not in self._planner.status:
                raise KeyError(sid)
            entry = self._entries[sid] = self._planner._entry(sid)
        return entry

    def __contains__(self, sid: object) -> bool:
        return sid in self._planner.status

    def __iter__(self) -> Iterator[str]:
        return iter(self._planner.status)

    def __len__(self) -> int:
        return len(self._planner.run.steps)
