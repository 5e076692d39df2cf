"""Hypothesis properties of the planner's map steps, checked by simulating whole runs.

A pure simulator (test-only) plays the engine and the backends for a job with a map step (and
steps before, after and beside it): it shows the planner what the engine shows it — the map
step's counts, its items in flight and its first ``concurrency`` pending items, never the rest —
applies the actions to an in-memory run, lets item work complete, fail (retryable or not), time out
or be cancelled at random, or advances the clock to the wake time, until the run finishes. Every
action is checked as it is applied:

- never more items in flight than the concurrency; items start in index order, a retry only when
  due, a fallback only in place of a failed attempt; attempts are numbered one by one;
- every item ends once, as its work ended (or its inputs could not be resolved);
- the map step completes only when every item has ended and ``minSuccess`` is met, and ends with an
  error exactly when ``minSuccess`` can no longer be met; its items stop when it ends otherwise;
- the steps after it start only with its gathered outputs; the run's final status agrees.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolweave.engine.plan import (
    Action,
    CancelStep,
    CompleteMap,
    CompleteStep,
    ExpireWork,
    FailStep,
    FinishItem,
    FinishRun,
    ItemView,
    MapView,
    OpenMap,
    RetryStep,
    RunView,
    SkipStep,
    StartRun,
    StartStep,
    StepView,
    Wake,
    decide,
)
from toolweave.model.definitions import ErrorStrategy, JobDefinition, ToolDefinition
from toolweave.model.status import GenerationStatus, RunStatus, StepStatus

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MAX_CALLS = 600
OPEN = (StepStatus.PENDING, StepStatus.RUNNING, StepStatus.WAITING_RETRY)
TOOLS = {
    t: ToolDefinition.model_validate({"toolId": t, "service": "builtin", "inputSchema": {"x": {"type": "json"}, "ys": {"type": "json"}}})
    for t in ("t", "fb")
}


@dataclass(frozen=True)
class Scenario:
    job: JobDefinition
    tools: dict[str, ToolDefinition]
    inputs: dict[str, Any]
    cancel_at: int | None

    def __repr__(self) -> str:
        return f"Scenario(job={self.job.dump()!r}, inputs={self.inputs!r}, cancel_at={self.cancel_at!r})"


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    n = draw(st.integers(0, 14))
    items: list[Any] = [{"p": i} if draw(st.integers(0, 9)) else {"q": i} for i in range(n)]  # some lack "p"
    spec: dict[str, Any] = {"over": {"sourceJobInput": "xs"}, "concurrency": draw(st.integers(1, 4))}
    min_success = draw(st.sampled_from([None, None, 0, 1, 3, "50%", "100%", "34%"]))
    if min_success is not None:
        spec["minSuccess"] = min_success
    item_input = draw(st.sampled_from(["whole", "whole", "path"]))
    mapping = {"sourceItem": True, "targetInputName": "x"}
    if item_input == "path":
        mapping["path"] = "p"  # items without "p" cannot resolve their inputs
    m: dict[str, Any] = {"stepId": "m", "toolId": "t", "map": spec, "inputMappings": [mapping]}
    kind = draw(st.sampled_from(["none", "halt", "skip", "retry", "fallback"]))
    if kind in ("halt", "skip"):
        m["errorHandling"] = {"strategy": kind}
    elif kind == "fallback":
        m["errorHandling"] = {"strategy": "fallback", "fallbackToolId": "fb", "then": draw(st.sampled_from(["halt", "skip"]))}
    elif kind == "retry":
        then = draw(st.sampled_from(["halt", "skip", "fallback"]))
        m["errorHandling"] = {"strategy": "retry", "maxAttempts": draw(st.integers(1, 3)),
                              "backoffSeconds": draw(st.sampled_from([0.0, 1.0, 5.0])), "then": then}
        if then == "fallback":
            m["errorHandling"]["fallbackToolId"] = "fb"
    if draw(st.booleans()):
        m["timeoutSeconds"] = draw(st.sampled_from([3.0, 10.0]))
    steps = [m, {"stepId": "side", "toolId": "t"}]
    if draw(st.booleans()):
        steps.append({"stepId": "after", "toolId": "t", "inputMappings": [
            {"sourceStepId": "m", "sourceOutputName": "y", "targetInputName": "ys"}]})
    job = JobDefinition.model_validate({
        "jobId": "mapped", "steps": steps, "inputSchema": {"xs": {"type": "json"}},
        "outputSchema": {"ys": {"type": "json", "sourceStepId": "m", "sourceOutputName": "y"}},
    })
    tools = TOOLS
    cancel_at = draw(st.one_of(st.none(), st.none(), st.none(), st.integers(0, 20)))
    return Scenario(job, tools, {"xs": items}, cancel_at)


@dataclass
class Work:
    """A step's or an item's current attempt."""

    status: StepStatus = StepStatus.PENDING
    attempt: int = 0
    tool_id: str | None = None
    using_fallback: bool = False
    next_attempt_at: float | None = None
    started_at: float | None = None
    work_status: GenerationStatus | None = None
    work_outputs: dict[str, Any] | None = None
    work_error: dict[str, Any] | None = None
    outputs: dict[str, Any] | None = None
    skipped_by_error: bool = False
    value: Any = None
    ended: int = 0

    @property
    def in_flight(self) -> bool:
        return self.status is StepStatus.RUNNING and self.work_status is not None and not self.work_status.terminal


@dataclass
class Sim:
    sc: Scenario
    rng: random.Random
    now: float = 0.0
    status: RunStatus = RunStatus.QUEUED
    cancel_requested: bool = False
    steps: dict[str, Work] = field(default_factory=dict)
    items: list[Work] = field(default_factory=list)
    opened: bool = False
    succeeded: int = 0
    failed: int = 0
    finish: FinishRun | None = None
    calls: int = 0

    def __post_init__(self) -> None:
        self.job = self.sc.job
        self.spec = self.job.steps[0].map
        assert self.spec is not None
        self.steps = {s.step_id: Work() for s in self.job.steps}

    # --- what the engine shows the planner ---

    def map_view(self) -> MapView | None:
        if not self.opened:
            return None
        m = self.steps["m"]
        if m.status is not StepStatus.RUNNING:
            return MapView(len(self.items), self.succeeded, self.failed)
        active = [self.item_view(i, w) for i, w in enumerate(self.items) if w.status in (StepStatus.RUNNING, StepStatus.WAITING_RETRY)]
        pending = [i for i, w in enumerate(self.items) if w.status is StepStatus.PENDING][: self.spec.concurrency]
        return MapView(len(self.items), self.succeeded, self.failed, active,
                       [ItemView(i, value=copy.deepcopy(self.items[i].value)) for i in pending])

    @staticmethod
    def item_view(index: int, w: Work) -> ItemView:
        running = w.status is StepStatus.RUNNING
        return ItemView(index, w.status, copy.deepcopy(w.value), w.attempt, w.tool_id, w.using_fallback,
                        w.next_attempt_at, w.started_at, w.work_status if running else None,
                        copy.deepcopy(w.work_outputs) if running else None, copy.deepcopy(w.work_error) if running else None)

    def run_view(self) -> RunView:
        views = {}
        for sid, w in self.steps.items():
            running = w.status is StepStatus.RUNNING
            views[sid] = StepView(sid, w.status, w.attempt, w.tool_id, w.using_fallback, copy.deepcopy(w.outputs),
                                  w.skipped_by_error, None, w.next_attempt_at, w.started_at,
                                  w.work_status if running else None, copy.deepcopy(w.work_outputs) if running else None,
                                  copy.deepcopy(w.work_error) if running else None,
                                  self.map_view() if sid == "m" else None)
        return RunView("run_sim", self.status, self.job, copy.deepcopy(self.sc.inputs), views, self.sc.tools,
                       self.cancel_requested)

    # --- the loop ---

    def run(self) -> None:
        again = False
        while self.finish is None:
            assert self.calls < MAX_CALLS, "no FinishRun"
            if self.sc.cancel_at is not None and self.calls == self.sc.cancel_at:
                self.cancel_requested = True
            rv = self.run_view()
            before = copy.deepcopy(rv)
            actions = decide(rv, self.now)
            self.calls += 1
            assert rv == before, "decide mutated its input"
            assert decide(rv, self.now) == actions, "decide is not deterministic"
            again = self.apply(actions)
            if self.finish is None and not again:
                self.environment(actions)
        assert decide(self.run_view(), self.now + 1000.0) == []
        self.check_end()

    def environment(self, actions: list[Action]) -> None:
        wakes = [a.at for a in actions if isinstance(a, Wake)]
        flying = [w for w in [*self.steps.values(), *self.items] if w.in_flight]
        assert flying or wakes, "the run stalled: nothing in flight and no wake time"
        if flying and (not wakes or self.rng.random() < 0.8):
            for w in self.rng.sample(flying, self.rng.randint(1, len(flying))):
                self.report(w)
            self.now += self.rng.choice([0.0, 0.5, 2.0])
        else:
            self.now = max(self.now, min(wakes))

    def report(self, w: Work) -> None:
        outcome = self.rng.choices(["complete", "retryable", "fatal", "timeout", "cancelled"], [10, 4, 2, 1, 1])[0]
        if outcome == "complete":
            w.work_status, w.work_outputs = GenerationStatus.COMPLETED, {"y": self.rng.randint(0, 9)}
        elif outcome in ("retryable", "fatal"):
            w.work_status, w.work_error = GenerationStatus.FAILED, {"message": outcome, "retryable": outcome == "retryable"}
        elif outcome == "timeout":
            w.work_status, w.work_error = GenerationStatus.TIMEOUT, {"message": "slow", "retryable": True}
        else:
            w.work_status, w.work_error = GenerationStatus.CANCELLED, None

    # --- applying and checking ---

    def required(self) -> int:
        return self.spec.required(len(self.items))

    def apply(self, actions: list[Action]) -> bool:
        kinds = [type(a) for a in actions]
        if FinishRun in kinds:
            assert kinds[-1] is FinishRun
        if CompleteMap in kinds and FinishRun in kinds:  # only a halt may end the run before the gathering
            finish = actions[-1]
            assert isinstance(finish, FinishRun) and finish.status in (RunStatus.FAILED, RunStatus.CANCELLED), (
                "the run finished before the map step's outputs were gathered"
            )
        gathered = False
        for a in actions:
            if isinstance(a, StartRun):
                self.status = RunStatus.RUNNING
            elif isinstance(a, OpenMap):
                assert not self.opened and self.steps["m"].status is StepStatus.PENDING
                assert list(a.items) == self.sc.inputs["xs"]
                self.opened = True
                self.items = [Work(value=v) for v in a.items]
                self.steps["m"].status, self.steps["m"].attempt = StepStatus.RUNNING, 1
            elif isinstance(a, StartStep) and a.item is not None:
                self.start_item(a)
            elif isinstance(a, StartStep):
                w = self.steps[a.step_id]
                assert not w.status.terminal and not w.in_flight
                if a.step_id == "after":
                    assert self.steps["m"].status is StepStatus.SUCCEEDED and self.steps["m"].outputs is not None
                    assert a.inputs == {"ys": self.steps["m"].outputs["y"]}
                w.status, w.attempt, w.tool_id, w.using_fallback = StepStatus.RUNNING, a.attempt, a.tool_id, a.using_fallback
                w.started_at, w.work_status, w.work_error = self.now, GenerationStatus.PROCESSING, None
            elif isinstance(a, FinishItem):
                w = self.items[a.item]
                assert w.status in OPEN and w.ended == 0, f"item {a.item} ended twice"
                if a.succeeded:
                    assert w.work_status is GenerationStatus.COMPLETED and a.outputs == w.work_outputs
                    self.succeeded += 1
                    w.outputs = a.outputs
                else:
                    assert w.work_status is None or w.work_status.terminal
                    self.failed += 1
                w.status, w.ended = (StepStatus.SUCCEEDED if a.succeeded else StepStatus.FAILED), 1
            elif isinstance(a, RetryStep) and a.item is not None:
                w = self.items[a.item]
                assert w.status is StepStatus.RUNNING and w.work_status is not None and w.work_status.terminal
                assert a.next_attempt == w.attempt + 1 and a.at >= self.now
                w.status, w.next_attempt_at = StepStatus.WAITING_RETRY, a.at
            elif isinstance(a, ExpireWork) and a.item is not None:
                w = self.items[a.item]
                timeout = self.job.steps[0].timeout_seconds
                assert timeout is not None and w.started_at is not None and self.now >= w.started_at + timeout
                w.work_status = GenerationStatus.TIMEOUT
            elif isinstance(a, CompleteMap):
                assert all(w.status in (StepStatus.SUCCEEDED, StepStatus.FAILED) for w in self.items)
                assert self.succeeded >= self.required(), "completed without minSuccess"
                m = self.steps["m"]
                m.status = StepStatus.SUCCEEDED
                m.outputs = {"y": [(w.outputs or {}).get("y") if w.status is StepStatus.SUCCEEDED else None for w in self.items]}
                gathered = True
            elif isinstance(a, CompleteStep):
                w = self.steps[a.step_id]
                assert w.work_status is GenerationStatus.COMPLETED
                w.status, w.outputs = StepStatus.SUCCEEDED, a.outputs
            elif isinstance(a, RetryStep):
                w = self.steps[a.step_id]
                w.status, w.next_attempt_at = StepStatus.WAITING_RETRY, a.at
            elif isinstance(a, ExpireWork):
                self.steps[a.step_id].work_status = GenerationStatus.TIMEOUT
            elif isinstance(a, SkipStep | FailStep | CancelStep):
                self.end_step(a)
            elif isinstance(a, FinishRun):
                self.finish = a
                self.status = a.status
        flying = sum(1 for w in self.items if w.status in (StepStatus.RUNNING, StepStatus.WAITING_RETRY))
        assert flying <= self.spec.concurrency, f"{flying} items in flight, concurrency {self.spec.concurrency}"
        return gathered

    def start_item(self, a: StartStep) -> None:
        w = self.items[a.item or 0]
        assert self.steps["m"].status is StepStatus.RUNNING and w.status in OPEN
        if w.status is StepStatus.PENDING:
            earlier = [i for i, x in enumerate(self.items) if x.status is StepStatus.PENDING and i < (a.item or 0)]
            assert not earlier, "items start in index order"
            assert a.attempt == 1
        elif w.status is StepStatus.WAITING_RETRY:
            assert w.next_attempt_at is not None and self.now >= w.next_attempt_at, "a retry started early"
            assert a.attempt == w.attempt + 1
        else:
            assert a.using_fallback and not w.using_fallback and w.work_status is not None and w.work_status.terminal
            assert a.attempt == w.attempt + 1
        value = w.value
        assert a.inputs == {"x": value.get("p") if self.job.steps[0].input_mappings[0].path else value}
        w.status, w.attempt, w.tool_id, w.using_fallback = StepStatus.RUNNING, a.attempt, a.tool_id, a.using_fallback
        w.started_at, w.work_status, w.work_outputs, w.work_error = self.now, GenerationStatus.PROCESSING, None, None

    def end_step(self, a: SkipStep | FailStep | CancelStep) -> None:
        w = self.steps[a.step_id]
        assert not w.status.terminal
        if a.step_id == "m" and self.opened and not isinstance(a, CancelStep):
            if w.status is StepStatus.RUNNING:
                assert len(self.items) - self.failed < self.required(), "the map step gave up while minSuccess was reachable"
        w.status = {SkipStep: StepStatus.SKIPPED, FailStep: StepStatus.FAILED, CancelStep: StepStatus.CANCELLED}[type(a)]
        w.skipped_by_error = isinstance(a, SkipStep) and a.by_error
        if a.step_id == "m":  # the engine closes its open items and stops their work
            for item in self.items:
                if item.status in OPEN:
                    item.status = StepStatus.CANCELLED

    def check_end(self) -> None:
        assert self.finish is not None
        m = self.steps["m"]
        if self.finish.status is RunStatus.COMPLETED:
            assert m.status is StepStatus.SUCCEEDED and self.failed == 0
        if m.status is StepStatus.SUCCEEDED and self.failed and self.finish.status not in (RunStatus.CANCELLED,):
            assert self.finish.status in (RunStatus.PARTIALLY_COMPLETED, RunStatus.FAILED)
        if m.status is StepStatus.SUCCEEDED:
            assert self.succeeded >= self.required()
            if self.finish.status in (RunStatus.COMPLETED, RunStatus.PARTIALLY_COMPLETED):
                assert self.finish.outputs.get("ys") == m.outputs["y"]  # type: ignore[index]
        handling = self.job.error_handling_for(self.job.steps[0])
        budget = 1 + (handling.max_attempts - 1 if handling.strategy is ErrorStrategy.RETRY else 0) + (
            1 if ErrorStrategy.FALLBACK in (handling.strategy, handling.then) else 0)
        assert all(w.attempt <= budget for w in self.items), "an item used more attempts than its handling allows"


@SETTINGS
@given(scenarios(), st.integers(0, 2**32 - 1))
def test_map_steps_keep_their_rules_in_every_simulated_run(scenario: Scenario, seed: int) -> None:
    Sim(scenario, random.Random(seed)).run()


def test_a_thousand_items_run_to_the_end_with_the_planner_seeing_only_a_window() -> None:
    items = [{"p": i} for i in range(1000)]
    job = JobDefinition.model_validate({
        "jobId": "big", "inputSchema": {"xs": {"type": "json"}},
        "steps": [{"stepId": "m", "toolId": "t", "map": {"over": {"sourceJobInput": "xs"}, "concurrency": 8},
                   "inputMappings": [{"sourceItem": True, "targetInputName": "x"}]}, {"stepId": "side", "toolId": "t"}],
        "outputSchema": {"ys": {"type": "json", "sourceStepId": "m", "sourceOutputName": "y"}},
    })
    sim = Sim(Scenario(job, TOOLS, {"xs": items}, None),
              random.Random(7))
    seen: list[int] = []
    original = sim.map_view

    def watched() -> MapView | None:
        view = original()
        if view is not None:
            seen.append(len(view.active) + len(view.waiting))
        return view

    sim.map_view = watched  # type: ignore[method-assign]
    sim.report = lambda w: setattr(w, "work_status", GenerationStatus.COMPLETED) or setattr(w, "work_outputs", {"y": 1})  # type: ignore[method-assign, func-returns-value]
    sim.run()
    assert sim.finish is not None and sim.finish.status is RunStatus.COMPLETED and sim.succeeded == 1000
    assert max(seen) <= 16  # in flight + pending shown: twice the concurrency at most, whatever the item count
