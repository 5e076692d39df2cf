"""Hypothesis properties of the planner, checked by simulating whole runs.

A small pure simulator (below, test-only) plays the engine and the backends: it calls
``decide``, applies the actions to an in-memory run (``StartStep`` → running; ``Evaluate`` → ready,
with the step evaluated at once in this process; ``Wake`` → the time the planner wants to be called
again), then lets the running work complete, fail (retryable or not), time out or be cancelled at
random, or advances the clock to the wake time, until the run finishes. Every action is checked against DESIGN.md's step semantics as it is applied.

Readings of DESIGN.md used here (see tests/unit/test_plan.py for the case-by-case versions):
only a *mapped* source (or a template reading a step) without ``default`` propagates a skip; a
condition that cannot be evaluated is an error of its step; ``completed`` means no step failed
and no error was skipped past; the attempt budget of a retried step is ``maxAttempts`` plus one
fallback attempt when ``then: fallback``.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from toolweave.engine.conditions import compile_condition
from toolweave.engine.evaluate import StepEvaluation, evaluate_step
from toolweave.engine.mapping import template_references
from toolweave.engine.plan import (
    Action,
    CancelStep,
    CompleteStep,
    Evaluate,
    ExpireWork,
    FailStep,
    FinishRun,
    RetryStep,
    RunView,
    SkipStep,
    StartRun,
    StartStep,
    StepView,
    Wake,
    decide,
    retry_delay,
)
from toolweave.model.definitions import ErrorHandling, ErrorStrategy, JobDefinition, Step, ToolDefinition
from toolweave.model.graph import sink_steps
from toolweave.model.status import GenerationStatus, RunStatus, StepStatus

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MAX_CALLS = 300
UNAVAILABLE = (StepStatus.SKIPPED, StepStatus.FAILED, StepStatus.CANCELLED)
EPS = 1e-9

# cel-python raises the recursion limit when its environment is built; build it now, not inside a
# hypothesis test (which warns that it cannot restore the limit)
compile_condition("true")


# --- random jobs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    job: JobDefinition
    tools: dict[str, ToolDefinition]
    inputs: dict[str, Any]
    deadline: float | None
    cancel_at: int | None
    """Index of the decide call before which a cancel is requested, if any."""

    def __repr__(self) -> str:  # what hypothesis prints for a falsifying example
        return (
            f"Scenario(job={self.job.dump()!r}, tools={[t.dump() for t in self.tools.values()]!r}, "
            f"inputs={self.inputs!r}, deadline={self.deadline!r}, cancel_at={self.cancel_at!r})"
        )


def _error_handling(draw: st.DrawFn) -> dict[str, Any] | None:
    kind = draw(st.sampled_from(["none", "halt", "skip", "retry", "fallback"]))
    if kind == "none":
        return None
    if kind in ("halt", "skip"):
        return {"strategy": kind}
    if kind == "fallback":
        return {
            "strategy": "fallback",
            "fallbackToolId": "fb",
            "then": draw(st.sampled_from(["halt", "skip"])),
        }
    then = draw(st.sampled_from(["halt", "skip", "fallback"]))
    handling: dict[str, Any] = {
        "strategy": "retry",
        "maxAttempts": draw(st.integers(1, 4)),
        "backoffSeconds": draw(st.sampled_from([0.0, 0.5, 2.0, 10.0])),
        "maxBackoffSeconds": draw(st.sampled_from([1.0, 5.0, 60.0])),
        "then": then,
    }
    if then == "fallback":
        handling["fallbackToolId"] = "fb"
    return handling


@st.composite
def scenarios(draw: st.DrawFn, max_steps: int = 6) -> Scenario:
    n = draw(st.integers(1, max_steps))
    steps: list[dict[str, Any]] = []
    for i in range(n):
        sid = f"s{i}"
        earlier = [f"s{j}" for j in range(i)]
        deps = draw(st.lists(st.sampled_from(earlier), unique=True, max_size=3)) if earlier else []
        mappings: list[dict[str, Any]] = []
        explicit: list[str] = []
        for k, dep in enumerate(deps):
            how = draw(st.sampled_from(["map", "map", "default", "explicit", "template"]))
            target = f"in{k}"
            if how == "map":
                mappings.append({"sourceStepId": dep, "sourceOutputName": "out", "targetInputName": target})
            elif how == "default":
                mappings.append(
                    {"sourceStepId": dep, "sourceOutputName": "n", "targetInputName": target, "default": -1}
                )
            elif how == "template":
                mappings.append({"template": f"{{{{ steps.{dep}.outputs.n }}}}", "targetInputName": target})
                explicit.append(dep)
            else:
                explicit.append(dep)
        extra = draw(st.sampled_from(["none", "none", "job", "value", "bad_template"]))
        if extra == "job":
            mappings.append({"sourceJobInput": "flag", "targetInputName": "flag"})
        elif extra == "value":
            mappings.append({"value": [1, 2], "targetInputName": "v"})
        elif extra == "bad_template":  # fails to render when the optional job input is absent
            mappings.append({"template": "{{ job.opt }}!", "targetInputName": "o"})
        conditions: list[str | None] = [None, None, None, "job.flag", "!job.flag"]
        for dep in deps:
            conditions += [
                f"steps.{dep}.status == 'succeeded'",
                f"steps.{dep}.outputs.out.width < 2048",
                f"has(steps.{dep}.outputs.out) && steps.{dep}.outputs.out.width < 2048",
            ]
        data: dict[str, Any] = {"stepId": sid, "inputMappings": mappings, "dependencies": explicit}
        if draw(st.integers(0, 7)) == 0:
            data["jobId"] = "child"
        else:
            data["toolId"] = "t"
        condition = draw(st.sampled_from(conditions))
        if condition is not None:
            data["condition"] = condition
        handling = _error_handling(draw)
        if handling is not None:
            data["errorHandling"] = handling
        timeout = draw(st.sampled_from([None, None, 4.0, 20.0]))
        if timeout is not None:
            data["timeoutSeconds"] = timeout
        steps.append(data)
    job_data: dict[str, Any] = {
        "jobId": "random",
        "steps": steps,
        "inputSchema": {"flag": {"type": "boolean"}, "opt": {"type": "string"}},
        "errorHandlingStrategy": draw(st.sampled_from(["halt", "skip"])),
    }
    if draw(st.booleans()):
        chosen = draw(st.lists(st.sampled_from([s["stepId"] for s in steps]), unique=True, min_size=1))
        job_data["outputSchema"] = {
            f"o_{sid}": {"type": "integer", "sourceStepId": sid, "sourceOutputName": "n"} for sid in chosen
        }
    job = JobDefinition.model_validate(job_data)
    tools = {
        tid: ToolDefinition.model_validate(
            {"toolId": tid, "service": "builtin", "timeoutSeconds": draw(st.sampled_from([None, 6.0, 30.0]))}
        )
        for tid in ("t", "fb")
    }
    inputs: dict[str, Any] = {"flag": draw(st.booleans())}
    if draw(st.booleans()):
        inputs["opt"] = "x"
    deadline = draw(st.sampled_from([None, None, None, 15.0, 60.0]))
    cancel_at = draw(st.one_of(st.none(), st.none(), st.none(), st.integers(0, 12)))
    return Scenario(job, tools, inputs, deadline, cancel_at)


# --- the simulator -----------------------------------------------------------------------------


@dataclass
class SimStep:
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
    work_outputs: dict[str, Any] | None = None
    work_error: dict[str, Any] | None = None
    history: list[StepStatus] = field(default_factory=list)
    retry_delays: list[tuple[int, float, float]] = field(default_factory=list)
    """(failed attempt, nominal delay, actual delay) of every scheduled retry."""

    def view(self, step_id: str) -> StepView:
        return StepView(
            step_id,
            self.status,
            attempt=self.attempt,
            tool_id=self.tool_id,
            using_fallback=self.using_fallback,
            outputs=copy.deepcopy(self.outputs),
            skipped_by_error=self.skipped_by_error,
            reason=self.reason,
            next_attempt_at=self.next_attempt_at,
            started_at=self.started_at,
            work_status=self.work_status if self.status is StepStatus.RUNNING else None,
            work_outputs=copy.deepcopy(self.work_outputs) if self.status is StepStatus.RUNNING else None,
            work_error=copy.deepcopy(self.work_error) if self.status is StepStatus.RUNNING else None,
        )

    def set_status(self, status: StepStatus) -> None:
        assert not self.status.terminal, f"terminal status {self.status} changed to {status}"
        self.status = status
        self.history.append(status)

    @property
    def in_flight(self) -> bool:
        return (
            self.status is StepStatus.RUNNING
            and self.work_status is not None
            and not self.work_status.terminal
        )


class Simulation:
    def __init__(self, scenario: Scenario, rng: random.Random) -> None:
        self.sc = scenario
        self.job = scenario.job
        self.rng = rng
        self.now = 0.0
        self.status = RunStatus.QUEUED
        self.cancel_requested = False
        self.steps = {s.step_id: SimStep() for s in self.job.steps}
        self.finish: FinishRun | None = None
        self.finished_at: float | None = None
        self.failed_steps: list[str] = []
        self.skipped_by_error: list[str] = []
        self.calls = 0
        self.deadline_at = scenario.deadline
        self.seen: set[str] = set()
        self.evaluations: dict[str, StepEvaluation] = {}

    # the view the engine would load
    def run_view(self) -> RunView:
        return RunView(
            run_id="run_sim",
            status=self.status,
            job=self.job,
            inputs=dict(self.sc.inputs),
            steps={sid: s.view(sid) for sid, s in self.steps.items()},
            tools=self.sc.tools,
            evaluations=dict(self.evaluations),
            cancel_requested=self.cancel_requested,
            deadline_at=self.deadline_at,
        )

    def step(self, sid: str) -> Step:
        found = self.job.step(sid)
        assert found is not None
        return found

    def handling(self, sid: str) -> ErrorHandling:
        return self.job.error_handling_for(self.step(sid))

    def timeout(self, sid: str) -> float | None:
        step, state = self.step(sid), self.steps[sid]
        if step.timeout_seconds is not None:
            return step.timeout_seconds
        tool = self.sc.tools.get(state.tool_id or "")
        return tool.timeout_seconds if tool else None

    def attempt_budget(self, sid: str) -> int:
        h = self.handling(sid)
        if h.strategy is ErrorStrategy.RETRY:
            return h.max_attempts + (1 if h.then is ErrorStrategy.FALLBACK else 0)
        if h.strategy is ErrorStrategy.FALLBACK:
            return 2
        return 1

    def blocking_sources(self, sid: str) -> list[str]:
        """Steps whose failure to succeed makes ``sid`` skip: mapped without default, or read by a template."""
        found: list[str] = []
        for m in self.step(sid).input_mappings:
            if m.source_step_id is not None and not m.has_default:
                found.append(m.source_step_id)
            if m.template is not None:
                found.extend(template_references(m.template)[1])
        return found

    # --- the loop ---

    def run(self) -> None:
        while self.finish is None:
            assert self.calls < MAX_CALLS, f"no FinishRun after {MAX_CALLS} decide calls"
            if self.sc.cancel_at is not None and self.calls == self.sc.cancel_at:
                self.cancel_requested = True
            rv = self.run_view()
            before = copy.deepcopy(rv)
            actions = decide(rv, self.now)
            self.calls += 1
            assert rv == before, "decide mutated its input"
            assert decide(rv, self.now) == actions, "decide gave different actions for the same input"
            self.apply(actions)
            if self.finish is None:
                self.environment(actions)
        # a finished run yields nothing more, whatever time it is
        assert decide(self.run_view(), self.now + 1000.0) == []

    def environment(self, actions: list[Action]) -> None:
        """The world between two calls: backends report, or time passes up to the wake time."""
        wakes = [a.at for a in actions if isinstance(a, Wake)]
        in_flight = [sid for sid, s in self.steps.items() if s.in_flight]
        if any(s.status is StepStatus.READY for s in self.steps.values()):
            return  # their evaluations are back: the planner goes on with them
        assert in_flight or wakes, "the run stalled: nothing in flight and no wake time"
        if in_flight and (not wakes or self.rng.random() < 0.75):
            for sid in self.rng.sample(in_flight, self.rng.randint(1, len(in_flight))):
                self.report(sid)
            self.now += self.rng.choice([0.0, 0.5, 1.0, 3.0])
        else:
            self.now = max(self.now, min(wakes))

    def report(self, sid: str) -> None:
        s = self.steps[sid]
        outcome = self.rng.choices(
            ["complete", "retryable", "fatal", "timeout", "cancelled"], weights=[10, 4, 2, 1, 1]
        )[0]
        if outcome == "complete":
            width = self.rng.choice([512, 4096])
            s.work_status = GenerationStatus.COMPLETED
            s.work_outputs = {
                "out": {
                    "kind": "artifact",
                    "sha256": "ab" * 32,
                    "mimeType": "image/png",
                    "size": 1,
                    "width": width,
                },
                "n": self.rng.randint(0, 9),
            }
        elif outcome in ("retryable", "fatal"):
            s.work_status = GenerationStatus.FAILED
            s.work_error = {"message": outcome, "retryable": outcome == "retryable", "code": "backend"}
        elif outcome == "timeout":
            s.work_status = GenerationStatus.TIMEOUT
            s.work_error = {"message": "backend timeout", "retryable": True}
        else:
            s.work_status = GenerationStatus.CANCELLED
            s.work_error = None

    # --- applying actions, checking each ---

    def apply(self, actions: list[Action]) -> None:
        kinds = [type(a) for a in actions]
        assert kinds.count(FinishRun) <= 1 and kinds.count(Wake) <= 1, actions
        if FinishRun in kinds:
            assert kinds[-1] is FinishRun, "FinishRun must be the last action"
        if Wake in kinds:
            assert kinds[-1] is Wake and FinishRun not in kinds
        if StartRun in kinds:
            assert kinds.index(StartRun) == 0 and self.status is RunStatus.QUEUED
        if FailStep in kinds:  # halt: nothing starts, the run ends failed in the same call
            assert StartStep not in kinds, actions
            assert FinishRun in kinds
        if self.cancel_requested or (self.deadline_at is not None and self.now >= self.deadline_at):
            assert StartStep not in kinds and FinishRun in kinds, actions
        started = [a.step_id for a in actions if isinstance(a, StartStep)]
        assert len(started) == len(set(started)), "a step started twice in one call"
        for action in actions:
            getattr(self, f"on_{type(action).__name__}")(action)
            self.seen.add(type(action).__name__)
            if isinstance(action, StartStep) and (action.using_fallback or action.job_id):
                self.seen.add("fallback started" if action.using_fallback else "nested job started")
            if isinstance(action, SkipStep) and not action.by_error:
                self.seen.add("skip: condition" if action.reason.startswith("condition") else "skip: mapping")
        if FailStep in kinds:
            assert not any(s.in_flight or s.status is StepStatus.RUNNING for s in self.steps.values())

    def on_Evaluate(self, a: Evaluate) -> None:
        s, step = self.steps[a.step_id], self.step(a.step_id)
        assert not s.status.terminal and not s.in_flight, f"a {s.status} step was sent to be evaluated"
        assert a.attempt == s.attempt + 1, "attempts are numbered one by one"
        for dep in step.all_dependencies:
            assert self.steps[dep].status.terminal, f"{a.step_id} evaluated before dependency {dep} finished"
        s.set_status(StepStatus.READY)
        s.attempt, s.tool_id, s.using_fallback, s.next_attempt_at = a.attempt, a.tool_id, a.using_fallback, None
        answer = evaluate_step({"step": step.dump(), "attempt": a.attempt, "job": dict(self.sc.inputs),
                                "steps": a.steps, "condition_seconds": 1.0, "template_seconds": 1.0})
        self.evaluations[a.step_id] = StepEvaluation.of(a.step_id, a.attempt, answer)

    def on_StartRun(self, action: StartRun) -> None:
        self.status = RunStatus.RUNNING

    def on_StartStep(self, a: StartStep) -> None:
        s, step = self.steps[a.step_id], self.step(a.step_id)
        assert s.status is not StepStatus.SUCCEEDED, "a succeeded step was started again"
        assert not s.status.terminal, f"a {s.status} step was started"
        assert not s.in_flight, "a step started while its work was still in flight"
        if s.status is StepStatus.RUNNING:  # only a fallback replaces a failed attempt at once
            assert a.using_fallback and not s.using_fallback
        if s.status is StepStatus.WAITING_RETRY:
            assert s.next_attempt_at is not None and self.now >= s.next_attempt_at, "retry started early"
        ready = s.status is StepStatus.READY  # evaluated: this attempt was numbered when it was sent
        for dep in step.all_dependencies:
            assert self.steps[dep].status.terminal, f"{a.step_id} started before dependency {dep} finished"
        for source in self.blocking_sources(a.step_id):
            assert self.steps[source].status is StepStatus.SUCCEEDED, f"{a.step_id} started without {source}"
        assert a.attempt == s.attempt + (0 if ready else 1), "attempts are numbered one by one"
        assert a.attempt <= self.attempt_budget(a.step_id), "more attempts than the strategy allows"
        if a.using_fallback:
            assert a.tool_id == self.handling(a.step_id).fallback_tool_id and a.job_id is None
        elif step.job_id is not None:
            assert (a.tool_id, a.job_id) == (None, step.job_id)
        else:
            assert (a.tool_id, a.job_id) == (step.tool_id, None)
        s.set_status(StepStatus.RUNNING)
        s.attempt, s.tool_id, s.using_fallback = a.attempt, a.tool_id, a.using_fallback
        s.started_at, s.next_attempt_at = self.now, None
        s.work_status, s.work_outputs, s.work_error = GenerationStatus.PENDING, None, None
        timeout = self.timeout(a.step_id)
        assert a.deadline_at == (self.now + timeout if timeout else None)

    def on_CompleteStep(self, a: CompleteStep) -> None:
        s = self.steps[a.step_id]
        assert s.status is StepStatus.RUNNING and s.work_status is GenerationStatus.COMPLETED
        assert a.outputs == s.work_outputs
        s.set_status(StepStatus.SUCCEEDED)
        s.outputs = a.outputs

    def on_SkipStep(self, a: SkipStep) -> None:
        s, step = self.steps[a.step_id], self.step(a.step_id)
        if a.by_error:
            assert a.error is not None
            self.skipped_by_error.append(a.step_id)
        elif a.reason.startswith("condition is false"):
            assert step.condition is not None
        else:  # a mapped source did not succeed
            blocked = [d for d in self.blocking_sources(a.step_id) if self.steps[d].status in UNAVAILABLE]
            assert blocked, f"{a.step_id} skipped ({a.reason}) though its sources are available"
        s.set_status(StepStatus.SKIPPED)
        s.skipped_by_error, s.reason = a.by_error, a.reason

    def on_FailStep(self, a: FailStep) -> None:
        self.steps[a.step_id].set_status(StepStatus.FAILED)
        self.failed_steps.append(a.step_id)

    def on_RetryStep(self, a: RetryStep) -> None:
        s, h = self.steps[a.step_id], self.handling(a.step_id)
        assert h.strategy is ErrorStrategy.RETRY, "a retry without the retry strategy"
        assert s.status is StepStatus.RUNNING
        assert a.error is not None and a.error.get("retryable") is True, "a retry of a non-retryable error"
        if s.work_status is GenerationStatus.FAILED:
            assert s.work_error is not None and s.work_error["retryable"], "a retry of a non-retryable error"
        assert a.next_attempt == s.attempt + 1 and s.attempt < h.max_attempts, "retries exceed maxAttempts"
        nominal = min(h.max_backoff_seconds, h.backoff_seconds * 2.0 ** (s.attempt - 1))
        actual = a.at - self.now
        assert nominal / 2 - EPS <= actual <= nominal + EPS, (nominal, actual)
        if s.retry_delays:
            _, prev_nominal, prev_actual = s.retry_delays[-1]
            assert nominal >= prev_nominal, "backoff shrank"
            if nominal == 2 * prev_nominal:  # below the cap the jittered delays never shrink
                assert actual >= prev_actual - EPS
        s.retry_delays.append((s.attempt, nominal, actual))
        s.set_status(StepStatus.WAITING_RETRY)
        s.next_attempt_at = a.at

    def on_CancelStep(self, a: CancelStep) -> None:
        s = self.steps[a.step_id]
        assert a.was_running == (s.status is StepStatus.RUNNING)
        assert s.work_status is not GenerationStatus.COMPLETED or not a.was_running, "completed work was lost"
        assert (
            self.cancel_requested
            or self.failed_steps
            or (self.deadline_at is not None and self.now >= self.deadline_at)
        ), "a step cancelled without a cancel, a halt or the deadline"
        s.set_status(StepStatus.CANCELLED)
        if s.work_status is not None and not s.work_status.terminal:
            s.work_status = GenerationStatus.CANCELLED

    def on_ExpireWork(self, a: ExpireWork) -> None:
        s = self.steps[a.step_id]
        timeout = self.timeout(a.step_id)
        assert s.in_flight and timeout is not None and s.started_at is not None
        assert self.now >= s.started_at + timeout, "work expired before its timeout"
        s.work_status = GenerationStatus.TIMEOUT
        s.work_error = {"message": "timed out", "retryable": True}

    def on_Wake(self, a: Wake) -> None:
        assert a.at >= self.now

    def on_FinishRun(self, a: FinishRun) -> None:
        assert self.finish is None
        self.finish, self.finished_at = a, self.now
        assert all(s.status.terminal for s in self.steps.values()), "the run finished with unfinished steps"
        self.status = a.status
        self.check_final(a)

    # --- the final status ---

    def expected_outputs(self) -> dict[str, Any]:
        done = {sid for sid, s in self.steps.items() if s.status is StepStatus.SUCCEEDED}
        if self.job.output_schema:
            return {
                o.name: (self.steps[o.source_step_id].outputs or {})["n"]
                for o in self.job.output_schema
                if o.source_step_id in done
            }
        sinks = [sid for sid in sink_steps(self.job.steps) if sid in done]
        merged: dict[str, Any] = {}
        for sid in sinks:
            for name, value in (self.steps[sid].outputs or {}).items():
                merged[name if len(sinks) == 1 else f"{sid}.{name}"] = value
        return merged

    def check_final(self, a: FinishRun) -> None:
        past_deadline = self.deadline_at is not None and self.now >= self.deadline_at
        if self.cancel_requested:
            assert a.status is RunStatus.CANCELLED
            return
        if past_deadline:
            assert a.status is RunStatus.FAILED and a.error is not None and a.error["code"] == "deadline"
            return
        if self.failed_steps:
            assert a.status is RunStatus.FAILED
            assert a.error is not None and a.error["step_id"] == self.failed_steps[0]
            return
        expected = self.expected_outputs()
        assert a.outputs == expected
        if self.skipped_by_error:
            assert a.status is (RunStatus.PARTIALLY_COMPLETED if expected else RunStatus.FAILED)
        else:
            assert a.status is RunStatus.COMPLETED and a.error is None
        # skip propagation, checked on the final state of a run that was not cut short
        for sid, s in self.steps.items():
            blocked = [
                d for d in self.blocking_sources(sid) if self.steps[d].status is not StepStatus.SUCCEEDED
            ]
            if blocked:
                assert s.status is StepStatus.SKIPPED and not s.skipped_by_error, (sid, blocked)
            elif self.step(sid).condition is None:
                assert s.status is StepStatus.SUCCEEDED or s.skipped_by_error, (sid, s.status, s.reason)


# --- properties --------------------------------------------------------------------------------


@SETTINGS
@given(scenario=scenarios(), rng=st.randoms(use_true_random=False))
def test_every_simulated_run_keeps_the_step_semantics(scenario: Scenario, rng: random.Random) -> None:
    """Termination, readiness, no double start, final statuses, retries, halt, skip propagation, purity."""
    sim = Simulation(scenario, rng)
    sim.run()
    assert sim.finish is not None
    event(f"run {sim.finish.status}")  # coverage, shown by --hypothesis-show-statistics
    for seen in sorted(sim.seen):
        event(seen)
    # completed iff nothing failed, no error was skipped past, and the run was not cut short
    cut_short = sim.cancel_requested or (sim.deadline_at is not None and sim.now >= sim.deadline_at)
    clean = not sim.failed_steps and not sim.skipped_by_error and not cut_short
    assert (sim.finish.status is RunStatus.COMPLETED) == clean
    # terminal statuses never changed (set_status refuses it) and a succeeded step ran once per success
    for s in sim.steps.values():
        assert s.history.count(StepStatus.SUCCEEDED) <= 1
        assert all(not st_.terminal for st_ in s.history[:-1])


@settings(max_examples=150, deadline=None)
@given(
    scenario=scenarios(max_steps=5),
    rng=st.randoms(use_true_random=False),
)
def test_runs_where_every_step_retries_stay_within_their_budget(
    scenario: Scenario, rng: random.Random
) -> None:
    """The same simulation with every step on ``retry``: budgets, retryable-only and backoff bounds."""
    steps = []
    for i, s in enumerate(scenario.job.steps):
        handling = ErrorHandling(
            strategy=ErrorStrategy.RETRY,
            max_attempts=1 + i % 4,
            backoff_seconds=[0.0, 1.0, 3.0][i % 3],
            max_backoff_seconds=[2.0, 10.0][i % 2],
            then=[ErrorStrategy.SKIP, ErrorStrategy.HALT, ErrorStrategy.FALLBACK][i % 3],
            fallback_tool_id="fb",
        )
        steps.append(s.model_copy(update={"error_handling": handling}))
    job = scenario.job.model_copy(update={"steps": steps})
    sim = Simulation(Scenario(job, scenario.tools, scenario.inputs, None, None), rng)
    sim.run()
    for sid, s in sim.steps.items():
        assert s.attempt <= sim.attempt_budget(sid)


@settings(max_examples=300, deadline=None)
@given(
    run_id=st.text(min_size=1, max_size=8),
    step_id=st.text(min_size=1, max_size=8),
    base=st.floats(0, 100, allow_nan=False),
    cap=st.floats(0, 1000, allow_nan=False),
    attempts=st.integers(1, 30),
)
def test_retry_delays_grow_to_the_cap_within_half_to_full(
    run_id: str, step_id: str, base: float, cap: float, attempts: int
) -> None:
    previous_nominal = previous_actual = 0.0
    for attempt in range(1, attempts + 1):
        nominal = min(cap, base * 2.0 ** (attempt - 1))
        actual = retry_delay(run_id, step_id, attempt, base, cap)
        assert nominal / 2 <= actual <= nominal
        assert nominal >= previous_nominal
        if nominal < cap:
            assert actual >= previous_actual
        assert actual == retry_delay(run_id, step_id, attempt, base, cap)
        previous_nominal, previous_actual = nominal, actual


@st.composite
def arbitrary_views(draw: st.DrawFn) -> tuple[RunView, float]:
    """A run in any state a store could hold, not only those the simulation reaches."""
    scenario = draw(scenarios(max_steps=4))
    views: dict[str, StepView] = {}
    for s in scenario.job.steps:
        status = draw(st.sampled_from(list(StepStatus)))
        work = draw(st.one_of(st.none(), st.sampled_from(list(GenerationStatus))))
        views[s.step_id] = StepView(
            s.step_id,
            status,
            attempt=draw(st.integers(0, 5)),
            tool_id=draw(st.sampled_from([None, "t", "fb"])),
            using_fallback=draw(st.booleans()),
            outputs={"out": {"width": 10}, "n": 1} if status is StepStatus.SUCCEEDED else None,
            skipped_by_error=status is StepStatus.SKIPPED and draw(st.booleans()),
            next_attempt_at=draw(st.one_of(st.none(), st.floats(0, 100))),
            started_at=draw(st.one_of(st.none(), st.floats(0, 100))),
            work_status=work,
            work_outputs={"out": {"width": 3000}, "n": 2} if work is GenerationStatus.COMPLETED else None,
            work_error=draw(
                st.one_of(
                    st.none(), st.fixed_dictionaries({"message": st.just("x"), "retryable": st.booleans()})
                )
            ),
        )
    rv = RunView(
        run_id="r",
        status=draw(st.sampled_from(list(RunStatus))),
        job=scenario.job,
        inputs=scenario.inputs,
        steps=views,
        tools=scenario.tools,
        cancel_requested=draw(st.booleans()),
        deadline_at=scenario.deadline,
    )
    return rv, draw(st.floats(0, 200))


@settings(max_examples=200, deadline=None)
@given(arbitrary_views())
def test_decide_is_pure_and_total_on_any_state(case: tuple[RunView, float]) -> None:
    """Same input, same output; the input is never mutated; no exception; terminal steps untouched."""
    rv, now = case
    before = copy.deepcopy(rv)
    actions = decide(rv, now)
    assert rv == before
    assert decide(rv, now) == actions
    if rv.status.terminal:
        assert actions == []
    touched = {
        a.step_id
        for a in actions
        if isinstance(a, StartStep | CompleteStep | SkipStep | FailStep | RetryStep | CancelStep | ExpireWork)
    }
    for sid in touched:
        assert not rv.steps[sid].status.terminal, f"an action on terminal step {sid}: {actions}"
    assert sum(isinstance(a, FinishRun) for a in actions) <= 1
