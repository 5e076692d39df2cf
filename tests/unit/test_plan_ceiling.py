"""The planner and a run's cost ceiling (``RunView.budget``): a step whose estimate would take the
run past it is not started, and the run ends with the reason."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from tests.unit.test_plan import done, finished, make_job, running, src, st, view

from toolweave.engine import plan
from toolweave.engine.plan import Budget, FinishRun, SkipStep, StartStep
from toolweave.model.definitions import JobDefinition
from toolweave.model.status import RunStatus


def chain3() -> JobDefinition:
    return make_job(st("a"), st("b", inputMappings=[src("a")]), st("c", inputMappings=[src("b")]))


def budget(ceiling: str, spent: str = "0", each: str = "1") -> Budget:
    return Budget(Decimal(ceiling), Decimal(spent), {"a": Decimal(each), "b": Decimal(each), "c": Decimal(each)})


def test_a_step_within_the_ceiling_starts() -> None:
    actions = plan.decide(replace(view(chain3()), budget=budget("3")), 0.0)
    assert [a.step_id for a in actions if isinstance(a, StartStep)] == ["a"]


def test_a_step_that_would_cross_the_ceiling_is_not_started_and_the_run_ends_partially() -> None:
    job = chain3()
    # a and b cost 1 each (spent 2); c's estimate 1 would make 3 > 2.5
    run = replace(view(job, done("a"), finished("b")), budget=budget("2.5", spent="2"))
    actions = plan.decide(run, 0.0)
    assert not [a for a in actions if isinstance(a, StartStep)]
    skip = next(a for a in actions if isinstance(a, SkipStep))
    assert skip.step_id == "c" and skip.by_error and skip.error is not None
    assert skip.error["code"] == "cost_ceiling"
    final = next(a for a in actions if isinstance(a, FinishRun))
    assert final.status is RunStatus.FAILED  # nothing of its one output (c's) resolved
    assert final.error is not None and "cost ceiling 2.5" in final.error["message"]


def test_the_reason_is_on_a_partially_completed_run() -> None:
    job = make_job(st("a"), st("b"), outputSchema={"a": {"type": "integer", "sourceStepId": "a", "sourceOutputName": "out"},
                                                   "b": {"type": "integer", "sourceStepId": "b", "sourceOutputName": "out"}})
    run = replace(view(job, finished("a")), budget=Budget(Decimal("1.5"), Decimal("1"), {"a": Decimal(1), "b": Decimal(1)}))
    actions = plan.decide(run, 0.0)
    final = next(a for a in actions if isinstance(a, FinishRun))
    assert final.status is RunStatus.PARTIALLY_COMPLETED
    assert final.outputs == {"a": 1}
    assert final.error is not None and final.error["code"] == "cost_ceiling"


def test_work_under_way_counts_against_the_ceiling() -> None:
    # a and b run in parallel; a is under way (estimated 1, not yet charged): b (1) would make 2 > 1.5
    job = make_job(st("a"), st("b"))
    run = replace(view(job, running("a")), budget=Budget(Decimal("1.5"), Decimal(0), {"a": Decimal(1), "b": Decimal(1)}))
    actions = plan.decide(run, 0.0)
    assert [a.step_id for a in actions if isinstance(a, SkipStep)] == ["b"]


def test_two_steps_started_together_both_count() -> None:
    job = make_job(st("a"), st("b"))
    run = replace(view(job), budget=Budget(Decimal("1"), Decimal(0), {"a": Decimal(1), "b": Decimal(1)}))
    actions = plan.decide(run, 0.0)
    assert [a.step_id for a in actions if isinstance(a, StartStep)] == ["a"]
    assert [a.step_id for a in actions if isinstance(a, SkipStep)] == ["b"]


def test_without_a_ceiling_nothing_changes() -> None:
    job = make_job(st("a"), st("b"))
    assert plan.decide(view(job), 0.0) == plan.decide(replace(view(job), budget=None), 0.0)
