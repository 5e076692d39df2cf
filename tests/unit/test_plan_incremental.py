"""The planner deciding only the steps a transition touches (``RunView.touched``) against deciding
every step.

After a backend reports the end of some steps' work, the engine gives the planner those steps as
``touched``; it decides them and what follows (successors, fan-in readiness, skips that cascade,
the run's end) and leaves the rest alone. Anything else that is due — a retry, a timeout, a
question's expiry, the deadline — comes through the run's timer, which the engine then decides in
full. So:

- with nothing due at the time of the call but the touched steps' ends, the incremental call says
  exactly what a full one says (timers aside);
- the run's timer is never later than the earliest thing due in the run (a ``Wake`` of an
  incremental call keeps an earlier timer), so nothing due is missed;
- whole runs simulated this way keep the step semantics the full planner's simulation checks
  (``test_plan_properties``) and finish.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.unit.test_plan_properties import EPS, MAX_CALLS, SETTINGS, Scenario, Simulation, scenarios

from toolweave.engine.plan import (
    Action,
    CompleteStep,
    FinishRun,
    RetryStep,
    RunView,
    SkipStep,
    StartStep,
    StepView,
    Wake,
    decide,
)
from toolweave.model.definitions import JobDefinition
from toolweave.model.status import GenerationStatus, RunStatus, StepStatus


def _without_wake(actions: list[Action]) -> list[Action]:
    return [a for a in actions if not isinstance(a, Wake)]


def _wake(actions: list[Action]) -> Wake | None:
    return next((a for a in actions if isinstance(a, Wake)), None)


class IncrementalSimulation(Simulation):
    """``Simulation`` as the engine runs it: a report of some steps' ends is decided from those
    steps; a timer that falls due (``self.timer``, the run's one ``advance`` task) is decided in
    full. Each incremental call is compared with a full one on the same state."""

    def __init__(self, scenario: Scenario, rng: random.Random) -> None:
        super().__init__(scenario, rng)
        self.touched: set[str] = set()
        self.timer: float | None = None
        self.compared = 0

    def due_untouched(self) -> bool:
        """Something other than the touched steps' ends is due now (the timer's business)."""
        for sid, s in self.steps.items():
            if sid in self.touched:
                continue
            if s.status is StepStatus.WAITING_RETRY and (s.next_attempt_at or 0.0) <= self.now:
                return True
            if s.status is StepStatus.READY:
                return True
            timeout = self.timeout(sid)
            if s.in_flight and timeout is not None and s.started_at is not None and s.started_at + timeout <= self.now:
                return True
        return False

    def earliest_due(self) -> float | None:
        """The earliest time at which something in the run falls due (the full planner's reasons)."""
        found: list[float] = []
        if self.deadline_at is not None:
            found.append(self.deadline_at)
        for sid, s in self.steps.items():
            if s.status is StepStatus.WAITING_RETRY and s.next_attempt_at is not None:
                found.append(s.next_attempt_at)
            timeout = self.timeout(sid)
            if s.in_flight and timeout is not None and s.started_at is not None:
                found.append(s.started_at + timeout)
        return min(found) if found else None

    def run(self) -> None:
        while self.finish is None:
            assert self.calls < MAX_CALLS, f"no FinishRun after {MAX_CALLS} decide calls"
            if self.sc.cancel_at is not None and self.calls == self.sc.cancel_at:
                self.cancel_requested = True
            full_view = self.run_view()
            if self.touched and not self.cancel_requested:
                # as the engine calls it: every step's status given apart from the views (which it
                # makes only for the steps the planner reads)
                statuses = {sid: v.status for sid, v in full_view.steps.items()}
                view = replace(full_view, touched=frozenset(self.touched), statuses=statuses)
                actions = decide(view, self.now)
                assert decide(view, self.now) == actions, "decide gave different actions for the same input"
                assert decide(replace(view, statuses=None), self.now) == actions, "the statuses given apart changed it"
                if not self.due_untouched():
                    full = decide(full_view, self.now)
                    assert _without_wake(actions) == _without_wake(full), (actions, full)
                    self.compared += 1
                wake = _wake(actions)
                if wake is not None:
                    assert wake.keep_earlier
                    self.timer = wake.at if self.timer is None else min(self.timer, wake.at)
            else:
                actions = decide(full_view, self.now)
                wake = _wake(actions)
                if wake is not None:
                    assert not wake.keep_earlier
                    self.timer = wake.at
            self.calls += 1
            self.touched = set()
            self.apply(actions)
            if self.finish is None:
                earliest = self.earliest_due()
                if earliest is not None:  # nothing due is missed: the timer comes first
                    assert self.timer is not None and self.timer <= earliest + EPS, (self.timer, earliest)
                self.environment(actions)
        assert decide(self.run_view(), self.now + 1000.0) == []

    def environment(self, actions: list[Action]) -> None:
        if any(s.status is StepStatus.READY for s in self.steps.values()):
            return  # their evaluations are back: the engine decides the run in full with them
        in_flight = [sid for sid, s in self.steps.items() if s.in_flight]
        assert in_flight or self.timer is not None, "the run stalled: nothing in flight and no timer"
        if in_flight and (self.timer is None or self.rng.random() < 0.75):
            reported = self.rng.sample(in_flight, self.rng.randint(1, len(in_flight)))
            for sid in reported:
                self.report(sid)
            self.touched = set(reported)
            self.now += self.rng.choice([0.0, 0.0, 0.5, 1.0, 3.0])
        else:
            assert self.timer is not None
            self.now = max(self.now, self.timer)
            self.timer = None  # the advance task is taken; the full call sets the next one


@SETTINGS
@given(scenario=scenarios(max_steps=8), rng=st.randoms(use_true_random=False))
def test_deciding_from_the_touched_steps_matches_deciding_every_step(scenario: Scenario, rng: random.Random) -> None:
    sim = IncrementalSimulation(scenario, rng)
    sim.run()
    assert sim.finish is not None
    cut_short = sim.cancel_requested or (sim.deadline_at is not None and sim.now >= sim.deadline_at)
    clean = not sim.failed_steps and not sim.skipped_by_error and not cut_short
    assert (sim.finish.status is RunStatus.COMPLETED) == clean
    for s in sim.steps.values():
        assert s.history.count(StepStatus.SUCCEEDED) <= 1


# --- a fan-out and its fan-in, case by case --------------------------------------------------------

def fan(width: int, **branch: Any) -> JobDefinition:
    return JobDefinition.model_validate({
        "jobId": "fan",
        "steps": [
            {"stepId": "root", "toolId": "t"},
            *({"stepId": f"b{i}", "toolId": "t", "dependencies": ["root"], **branch} for i in range(width)),
            {"stepId": "join", "toolId": "t", "dependencies": [f"b{i}" for i in range(width)],
             "inputMappings": [{"sourceStepId": f"b{i}", "sourceOutputName": "n", "targetInputName": f"n{i}"}
                               for i in range(width)]},
        ],
    })


def view_of(job: JobDefinition, steps: dict[str, StepView], touched: set[str] | None) -> RunView:
    """(Without the tool's definition, an attempt's inputs are taken as resolved.)"""
    return RunView("run_fan", RunStatus.RUNNING, job, {}, steps, touched=None if touched is None else frozenset(touched))


def done(sid: str, n: int) -> StepView:
    return StepView(sid, StepStatus.SUCCEEDED, attempt=1, tool_id="t", outputs={"n": n})


def ended(sid: str, n: int) -> StepView:
    return StepView(sid, StepStatus.RUNNING, attempt=1, tool_id="t", started_at=0.0,
                    work_status=GenerationStatus.COMPLETED, work_outputs={"n": n})


def running(sid: str) -> StepView:
    return StepView(sid, StepStatus.RUNNING, attempt=1, tool_id="t", started_at=0.0,
                    work_status=GenerationStatus.PROCESSING)


@pytest.mark.parametrize("batch", [1, 2, 4])
def test_the_join_starts_once_whatever_order_the_branches_finish_in(batch: int) -> None:
    """Every order of four branches, reported one, two or four at a time: each call completes
    exactly the reported branches, and the join starts in the call that ends the last one, with
    every branch's output — never earlier, never twice."""
    width = 4
    job = fan(width)
    for order in itertools.permutations(range(width)):
        steps = {"root": done("root", 0), **{f"b{i}": running(f"b{i}") for i in range(width)},
                 "join": StepView("join")}
        starts = 0
        for at in range(0, width, batch):
            reported = [f"b{i}" for i in order[at:at + batch]]
            for sid in reported:
                steps[sid] = ended(sid, int(sid[1:]) * 10)
            actions = decide(view_of(job, dict(steps), set(reported)), 1.0)
            assert _without_wake(actions) == _without_wake(decide(view_of(job, dict(steps), None), 1.0))
            assert {a.step_id for a in actions if isinstance(a, CompleteStep)} == set(reported)
            for sid in reported:
                steps[sid] = done(sid, int(sid[1:]) * 10)
            joins = [a for a in actions if isinstance(a, StartStep)]
            last = at + batch >= width
            assert len(joins) == (1 if last else 0), (order, at, actions)
            if joins:
                starts += 1
                assert joins[0].step_id == "join"
                assert joins[0].inputs == {f"n{i}": i * 10 for i in range(width)}
        assert starts == 1


def test_a_skipped_branch_skips_what_maps_it_and_the_condition_after_it_sees_the_skip() -> None:
    """A branch that fails under ``skip``: the step that maps its output is skipped (cascading to the
    step after it), and a step whose condition reads the skipped branch's status starts."""
    job = JobDefinition.model_validate({
        "jobId": "skips",
        "errorHandlingStrategy": "skip",
        "steps": [
            {"stepId": "a", "toolId": "t"},
            {"stepId": "uses_a", "toolId": "t",
             "inputMappings": [{"sourceStepId": "a", "sourceOutputName": "n", "targetInputName": "n"}]},
            {"stepId": "after_uses_a", "toolId": "t",
             "inputMappings": [{"sourceStepId": "uses_a", "sourceOutputName": "n", "targetInputName": "n"}]},
            {"stepId": "if_a_skipped", "toolId": "t", "dependencies": ["a"], "condition": "steps.a.status == 'skipped'"},
            {"stepId": "if_a_succeeded", "toolId": "t", "dependencies": ["a"],
             "condition": "steps.a.status == 'succeeded'"},
            {"stepId": "other", "toolId": "t"},
        ],
    })
    steps = {
        "a": StepView("a", StepStatus.RUNNING, attempt=1, tool_id="t", started_at=0.0, work_status=GenerationStatus.FAILED,
                      work_error={"message": "no", "retryable": False}),
        "uses_a": StepView("uses_a"), "after_uses_a": StepView("after_uses_a"), "if_a_skipped": StepView("if_a_skipped"),
        "if_a_succeeded": StepView("if_a_succeeded"), "other": running("other"),
    }
    actions = decide(view_of(job, steps, {"a"}), 1.0)
    assert actions == decide(view_of(job, steps, None), 1.0)
    skipped = [a.step_id for a in actions if isinstance(a, SkipStep)]
    assert skipped == ["a", "uses_a", "after_uses_a", "if_a_succeeded"]
    assert [a.step_id for a in actions if isinstance(a, StartStep)] == ["if_a_skipped"]
    assert not any(isinstance(a, FinishRun) for a in actions)  # "other" still runs


def test_one_branch_retried_leaves_the_others_and_the_join_waits_for_it() -> None:
    job = fan(3, errorHandling={"strategy": "retry", "maxAttempts": 3, "backoffSeconds": 1.0})
    steps = {"root": done("root", 0), "b0": done("b0", 0), "b2": running("b2"), "join": StepView("join"),
             "b1": StepView("b1", StepStatus.RUNNING, attempt=1, tool_id="t", started_at=0.0,
                            work_status=GenerationStatus.FAILED, work_error={"message": "busy", "retryable": True})}
    actions = decide(view_of(job, steps, {"b1"}), 2.0)
    retry = [a for a in actions if isinstance(a, RetryStep)]
    assert [a.step_id for a in retry] == ["b1"] and retry[0].next_attempt == 2
    wake = _wake(actions)
    assert wake is not None and wake.keep_earlier and wake.at == retry[0].at
    assert not any(isinstance(a, StartStep | CompleteStep) for a in actions)
    # b2 ends: the join still waits for b1's retry
    steps["b1"] = StepView("b1", StepStatus.WAITING_RETRY, attempt=1, tool_id="t", next_attempt_at=retry[0].at)
    steps["b2"] = ended("b2", 20)
    actions = decide(view_of(job, steps, {"b2"}), 2.1)
    assert [type(a) for a in actions] == [CompleteStep]
    # the timer: b1 starts again (a full call), ends, and the join starts with every output
    steps["b2"] = done("b2", 20)
    actions = decide(view_of(job, steps, None), retry[0].at)
    assert [(type(a), a.step_id) for a in _without_wake(actions)] == [(StartStep, "b1")]
    steps["b1"] = ended("b1", 10)
    actions = decide(view_of(job, steps, {"b1"}), retry[0].at + 1)
    assert [(type(a), getattr(a, "step_id", None)) for a in _without_wake(actions)] == [
        (CompleteStep, "b1"), (StartStep, "join")]
    assert actions[1].inputs == {"n0": 0, "n1": 10, "n2": 20}  # type: ignore[union-attr]


@pytest.mark.parametrize("width", [256, 1024])
def test_a_wide_fan_out_finishes_with_every_branch_and_the_join_once(width: int) -> None:
    """Every branch of a wide fan-out reported in a shuffled order, a few at a time: every branch
    completes once, the join starts once (after the last one), and then the run finishes."""
    job = fan(width)
    rng = random.Random(width)
    steps = {"root": done("root", 0), **{f"b{i}": running(f"b{i}") for i in range(width)}, "join": StepView("join")}
    order = [f"b{i}" for i in range(width)]
    rng.shuffle(order)
    completed: list[str] = []
    joins = 0
    while order:
        reported = order[:rng.randint(1, 8)]
        order = order[len(reported):]
        for sid in reported:
            steps[sid] = ended(sid, int(sid[1:]))
        actions = decide(view_of(job, dict(steps), set(reported)), 1.0)
        completed += [a.step_id for a in actions if isinstance(a, CompleteStep)]
        joins += sum(1 for a in actions if isinstance(a, StartStep) and a.step_id == "join")
        for sid in reported:
            steps[sid] = done(sid, int(sid[1:]))
        assert not any(isinstance(a, FinishRun) for a in actions)
    assert sorted(completed) == sorted(f"b{i}" for i in range(width)) and joins == 1
    steps["join"] = ended("join", 0)
    actions = decide(view_of(job, dict(steps), {"join"}), 2.0)
    assert [type(a) for a in actions] == [CompleteStep, FinishRun]
