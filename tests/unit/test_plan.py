"""The pure planner, rule by rule (DESIGN.md, "Step semantics").

Each test builds a ``RunView`` by hand, calls ``decide`` once and checks the actions.

Readings chosen where DESIGN.md is ambiguous (a demanding user's reading):

- a dependency named only in ``dependencies`` (no mapping reads it) that was skipped or failed
  does not skip the step: only a *mapped* source without ``default`` does;
- a condition that cannot be evaluated (e.g. it reads an output a skipped step never produced)
  is an error of the step, handled by its error strategy (halt by default);
- ``completed`` means no step failed and no error was skipped past; a declared output left
  unresolved because its step's condition was false is not an error;
- with an error skipped past, the run is ``partially_completed`` when at least one output
  resolved, else ``failed``;
- a halting failure starts nothing in the same call and cancels every unfinished step;
- when a run ends early (halt, cancel, deadline), work that already completed is recorded as
  succeeded rather than cancelled: a retry of the run reuses it and never pays for it twice;
- the run deadline and a cancel request win over anything else seen in the same call (a step
  whose work completed is still recorded, but the run ends failed / cancelled).
"""

from __future__ import annotations

import copy
import time
from dataclasses import replace
from typing import Any

import pytest

from toolweave.engine import plan
from toolweave.engine.evaluate import StepEvaluation, evaluate_step
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
    resolve_job_outputs,
    retry_delay,
    topological_order,
)
from toolweave.engine.plan_rules import SENT_GRACE_SECONDS
from toolweave.model.definitions import JobDefinition, ToolDefinition
from toolweave.model.status import GenerationStatus, RunStatus, StepStatus

WIDE = {
    "kind": "artifact",
    "sha256": "ab" * 32,
    "mimeType": "image/png",
    "size": 10,
    "width": 4096,
    "height": 10,
}
NARROW = {**WIDE, "sha256": "cd" * 32, "width": 512}


# --- the planner as the engine plays it ------------------------------------------------------------


def decide(run: RunView, now: float) -> list[Action]:
    """``plan.decide``; a step it sends to be evaluated (its condition, its templates) is evaluated
    here, in this process, as the worker does in its evaluator processes, and the planner decides
    again with the answer (on the view the earlier actions made), until nothing is left to evaluate.
    Returns every call's actions but the ``Evaluate`` ones (and only the last call's ``Wake``), so a
    case reads as one turn of the engine."""
    done: list[Action] = []
    for _ in range(10):
        actions = plan.decide(run, now)
        evaluating = [a for a in actions if isinstance(a, Evaluate)]
        if not evaluating:
            return done + actions
        done += [a for a in actions if not isinstance(a, Evaluate | Wake)]
        run = _evaluated(run, actions, evaluating, now)
    raise AssertionError("the planner keeps asking for evaluations")


def _evaluated(run: RunView, actions: list[Action], evaluating: list[Evaluate], now: float) -> RunView:
    """The view after ``actions``, with the evaluations they asked for."""
    steps = dict(run.steps)
    status = run.status
    for a in actions:
        if isinstance(a, StartRun):
            status = RunStatus.RUNNING
        elif isinstance(a, CompleteStep):
            steps[a.step_id] = StepView(a.step_id, StepStatus.SUCCEEDED, attempt=steps[a.step_id].attempt, outputs=a.outputs)
        elif isinstance(a, SkipStep | FailStep | CancelStep):
            done = {SkipStep: StepStatus.SKIPPED, FailStep: StepStatus.FAILED, CancelStep: StepStatus.CANCELLED}[type(a)]
            steps[a.step_id] = StepView(a.step_id, done, skipped_by_error=getattr(a, "by_error", False))
        elif isinstance(a, StartStep):
            steps[a.step_id] = StepView(a.step_id, StepStatus.RUNNING, attempt=a.attempt, tool_id=a.tool_id,
                                        started_at=now, work_status=GenerationStatus.PENDING)
        elif isinstance(a, Evaluate):
            steps[a.step_id] = StepView(a.step_id, StepStatus.READY, attempt=a.attempt, tool_id=a.tool_id,
                                        using_fallback=a.using_fallback)
    by_id = {s.step_id: s for s in run.job.steps}
    evaluations = {}
    for a in evaluating:
        answer = evaluate_step({"step": by_id[a.step_id].dump(), "attempt": a.attempt, "job": run.inputs,
                                "steps": a.steps, "condition_seconds": 1.0, "template_seconds": 1.0})
        evaluations[a.step_id] = StepEvaluation.of(a.step_id, a.attempt, answer)
    return replace(run, status=status, steps=steps, evaluations=evaluations)


# --- builders ----------------------------------------------------------------------------------


def make_job(*steps: dict[str, Any], **fields: Any) -> JobDefinition:
    return JobDefinition.model_validate({"jobId": "j", "steps": list(steps), **fields})


def st(step_id: str, tool: str | None = "t", **fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"stepId": step_id, **fields}
    if tool is not None and "jobId" not in fields:
        data["toolId"] = tool
    return data


def src(step_id: str, output: str = "out", target: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "sourceStepId": step_id,
        "sourceOutputName": output,
        "targetInputName": target or step_id,
        **extra,
    }


def pending(sid: str) -> StepView:
    return StepView(sid)


def done(sid: str, **outputs: Any) -> StepView:
    return StepView(sid, StepStatus.SUCCEEDED, attempt=1, tool_id="t", outputs=outputs or {"out": 1})


def skipped(sid: str, *, by_error: bool = False) -> StepView:
    return StepView(sid, StepStatus.SKIPPED, skipped_by_error=by_error, reason="skipped")


def running(
    sid: str,
    *,
    attempt: int = 1,
    tool: str | None = "t",
    work: GenerationStatus | None = GenerationStatus.PROCESSING,
    outputs: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    started_at: float | None = 0.0,
    fallback: bool = False,
) -> StepView:
    return StepView(
        sid,
        StepStatus.RUNNING,
        attempt=attempt,
        tool_id=tool,
        using_fallback=fallback,
        started_at=started_at,
        work_status=work,
        work_outputs=outputs,
        work_error=error,
    )


def finished(sid: str, **outputs: Any) -> StepView:
    """Running, and its generation just completed."""
    return running(sid, work=GenerationStatus.COMPLETED, outputs=outputs or {"out": 1})


def crashed(sid: str, *, retryable: bool = True, attempt: int = 1, **kw: Any) -> StepView:
    """Running, and its generation just failed."""
    error = {"message": "boom", "retryable": retryable, "code": "backend"}
    return running(sid, work=GenerationStatus.FAILED, error=error, attempt=attempt, **kw)


def view(
    job: JobDefinition,
    *steps: StepView,
    status: RunStatus = RunStatus.RUNNING,
    inputs: dict[str, Any] | None = None,
    tools: dict[str, ToolDefinition] | None = None,
    cancel: bool = False,
    deadline: float | None = None,
) -> RunView:
    given = {s.step_id: s for s in steps}
    views = {s.step_id: given.get(s.step_id, pending(s.step_id)) for s in job.steps}
    return RunView(
        run_id="run_1",
        status=status,
        job=job,
        inputs=inputs or {},
        steps=views,
        tools=tools or {},
        cancel_requested=cancel,
        deadline_at=deadline,
    )


def tool(tool_id: str, timeout: float | None = None) -> ToolDefinition:
    return ToolDefinition.model_validate({"toolId": tool_id, "service": "builtin", "timeoutSeconds": timeout})


def of(actions: list[Any], kind: type) -> list[Any]:
    return [a for a in actions if isinstance(a, kind)]


def started(actions: list[Any]) -> list[str]:
    return [a.step_id for a in of(actions, StartStep)]


def finish(actions: list[Any]) -> FinishRun:
    found = of(actions, FinishRun)
    assert len(found) == 1, actions
    return found[0]


# --- readiness, branches, fan-in ---------------------------------------------------------------


def test_a_pending_run_is_started_with_its_root_steps_only() -> None:
    job = make_job(st("a"), st("b", inputMappings=[src("a")]))
    actions = decide(view(job, status=RunStatus.QUEUED), 0.0)
    assert isinstance(actions[0], StartRun)
    assert started(actions) == ["a"]
    assert of(actions, StartStep)[0].attempt == 1


def test_a_step_waits_while_a_dependency_is_running() -> None:
    job = make_job(st("a"), st("b", inputMappings=[src("a")]))
    assert decide(view(job, running("a")), 1.0) == []


def test_independent_branches_start_in_parallel() -> None:
    job = make_job(st("a"), st("b", inputMappings=[src("a")]), st("c", inputMappings=[src("a")]), st("d"))
    actions = decide(view(job, done("a")), 0.0)
    assert sorted(started(actions)) == ["b", "c", "d"]


def test_fan_in_waits_for_every_dependency() -> None:
    job = make_job(st("a"), st("b"), st("c", inputMappings=[src("a"), src("b")]))
    assert started(decide(view(job, done("a"), running("b")), 1.0)) == []


def test_fan_in_starts_in_the_call_that_sees_the_last_dependency_finish() -> None:
    job = make_job(st("a"), st("b"), st("c", inputMappings=[src("a"), src("b")]))
    actions = decide(view(job, done("a", out="A"), finished("b", out="B")), 1.0)
    assert actions[0] == CompleteStep("b", {"out": "B"})
    (start,) = of(actions, StartStep)
    assert start.step_id == "c"
    assert start.inputs == {"a": "A", "b": "B"}


def test_an_explicit_dependency_is_waited_for() -> None:
    job = make_job(st("a"), st("b", dependencies=["a"]))
    assert started(decide(view(job, running("a")), 1.0)) == []
    assert started(decide(view(job, done("a")), 1.0)) == ["b"]


def test_a_skipped_explicit_dependency_does_not_skip_the_step() -> None:
    """Only a *mapped* source without default propagates a skip; an ordering-only dependency does not."""
    job = make_job(st("a"), st("b", dependencies=["a"]))
    assert started(decide(view(job, skipped("a", by_error=True)), 1.0)) == ["b"]


def test_inputs_come_from_job_inputs_outputs_paths_values_and_templates() -> None:
    job = make_job(
        st("a"),
        st(
            "b",
            inputMappings=[
                {"sourceJobInput": "prompt", "targetInputName": "text"},
                src("a", "meta", "seed", path="seeds[1]"),
                src("a", "out", "image"),
                {"value": 4, "targetInputName": "scale"},
                {"template": "{{ job.prompt }}, {{ steps.a.outputs.meta.name }}", "targetInputName": "t"},
            ],
        ),
        inputSchema={"prompt": {"type": "string"}},
    )
    a = done("a", out=WIDE, meta={"seeds": [1, 2], "name": "x"})
    (start,) = of(decide(view(job, a, inputs={"prompt": "cat"}), 0.0), StartStep)
    assert start.inputs == {"text": "cat", "seed": 2, "image": WIDE, "scale": 4, "t": "cat, x"}


def test_topological_order_takes_the_step_declared_first_among_those_ready() -> None:
    job = make_job(st("c", inputMappings=[src("b")]), st("b"), st("a"))
    # b is the only one ready at first; then c (declared before a) and a are: c goes first
    assert topological_order(job) == ["b", "c", "a"]


def test_a_completed_generation_completes_its_step_with_a_copy_of_its_outputs() -> None:
    job = make_job(st("a"))
    outputs = {"out": WIDE}
    actions = decide(view(job, running("a", work=GenerationStatus.COMPLETED, outputs=outputs)), 1.0)
    assert actions[0] == CompleteStep("a", outputs)
    assert actions[0].outputs is not outputs


# --- conditions --------------------------------------------------------------------------------


def test_a_false_condition_skips_the_step_with_its_reason() -> None:
    job = make_job(st("a", condition="job.n > 3"), inputSchema={"n": {"type": "integer"}})
    actions = decide(view(job, inputs={"n": 1}), 0.0)
    assert actions[0] == SkipStep("a", "condition is false: job.n > 3")
    assert finish(actions).status is RunStatus.COMPLETED


def test_a_true_condition_on_job_inputs_runs_the_step() -> None:
    job = make_job(st("a", condition="job.n > 3"), inputSchema={"n": {"type": "integer"}})
    assert started(decide(view(job, inputs={"n": 5}), 0.0)) == ["a"]


@pytest.mark.parametrize(("image", "runs"), [(NARROW, True), (WIDE, False)])
def test_a_condition_reads_artifact_metadata_of_earlier_outputs(image: dict[str, Any], runs: bool) -> None:
    job = make_job(
        st("gen"),
        st("up", condition="steps.gen.outputs.image.width < 2048", inputMappings=[src("gen", "image")]),
    )
    actions = decide(view(job, done("gen", image=image)), 0.0)
    assert started(actions) == (["up"] if runs else [])
    assert bool(of(actions, SkipStep)) is not runs


def test_a_condition_reads_the_status_of_an_earlier_step() -> None:
    job = make_job(st("a"), st("b", dependencies=["a"], condition="steps.a.status == 'skipped'"))
    assert started(decide(view(job, skipped("a")), 0.0)) == ["b"]
    actions = decide(view(job, done("a")), 0.0)
    assert of(actions, SkipStep)[0].step_id == "b"


def test_a_condition_that_cannot_be_evaluated_is_a_step_error_halting_by_default() -> None:
    job = make_job(st("a"), st("b", dependencies=["a"], condition="steps.a.outputs.image.width < 2048"))
    actions = decide(view(job, skipped("a")), 0.0)
    assert of(actions, FailStep)[0].step_id == "b"
    assert "condition could not be evaluated" in of(actions, FailStep)[0].reason
    assert finish(actions).status is RunStatus.FAILED


def test_a_condition_error_follows_the_step_strategy() -> None:
    job = make_job(
        st("a"),
        st("b", dependencies=["a"], condition="steps.a.outputs.x > 1", errorHandling={"strategy": "skip"}),
    )
    actions = decide(view(job, skipped("a")), 0.0)
    (skip,) = of(actions, SkipStep)
    assert skip.by_error and skip.step_id == "b"
    assert finish(actions).status is RunStatus.FAILED  # the only sink was lost to an error


def test_a_condition_error_does_not_start_the_fallback_tool() -> None:
    """Regression: with ``strategy: fallback`` the fallback tool was started when the condition
    could not be evaluated, running the step without its condition ever holding."""
    handling = {"strategy": "fallback", "fallbackToolId": "t2", "then": "skip"}
    job = make_job(
        st("a"), st("b", dependencies=["a"], condition="steps.a.outputs.x > 1", errorHandling=handling)
    )
    actions = decide(view(job, skipped("a")), 0.0)
    assert started(actions) == []
    (skip,) = [a for a in of(actions, SkipStep) if a.step_id == "b"]
    assert skip.by_error and "condition could not be evaluated" in skip.reason


def test_mapping_availability_is_checked_before_the_condition() -> None:
    """The design's example: an upscale whose source was skipped is skipped, not a condition error."""
    job = make_job(
        st("gen"),
        st("up", condition="steps.gen.outputs.image.width < 2048", inputMappings=[src("gen", "image")]),
    )
    actions = decide(view(job, skipped("gen")), 0.0)
    (skip,) = of(actions, SkipStep)
    assert not skip.by_error and "gen" in skip.reason


# --- skip propagation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source", [skipped("a"), skipped("a", by_error=True), StepView("a", StepStatus.FAILED)]
)
def test_a_step_whose_mapped_source_did_not_succeed_is_skipped_with_the_reason(source: StepView) -> None:
    job = make_job(st("a"), st("b", inputMappings=[src("a", target="img")]))
    actions = decide(view(job, source), 0.0)
    (skip,) = of(actions, SkipStep)
    assert skip.step_id == "b" and not skip.by_error
    assert "'img'" in skip.reason and "'a'" in skip.reason
    assert started(actions) == []


def test_a_step_whose_mapped_source_was_skipped_runs_with_the_mapping_default() -> None:
    job = make_job(st("a"), st("b", inputMappings=[src("a", target="img", default="fallback.png")]))
    (start,) = of(decide(view(job, skipped("a")), 0.0), StartStep)
    assert start.inputs == {"img": "fallback.png"}


def test_a_default_is_copied_not_shared() -> None:
    job = make_job(st("a"), st("b", inputMappings=[src("a", target="xs", default=[1])]))
    (start,) = of(decide(view(job, skipped("a")), 0.0), StartStep)
    start.inputs["xs"].append(2)
    assert job.steps[1].input_mappings[0].default == [1]


def test_a_template_reading_a_skipped_step_skips_the_step() -> None:
    job = make_job(
        st("a"), st("b", inputMappings=[{"template": "{{ steps.a.outputs.out }}", "targetInputName": "t"}])
    )
    (skip,) = of(decide(view(job, skipped("a")), 0.0), SkipStep)
    assert skip.step_id == "b" and "template" in skip.reason


def test_a_skip_cascades_through_a_chain_in_one_call() -> None:
    job = make_job(
        st("a", errorHandling={"strategy": "skip"}),
        st("b", inputMappings=[src("a")]),
        st("c", inputMappings=[src("b")]),
    )
    actions = decide(view(job, crashed("a", retryable=False)), 0.0)
    assert [(a.step_id, a.by_error) for a in of(actions, SkipStep)] == [
        ("a", True),
        ("b", False),
        ("c", False),
    ]
    assert finish(actions).status is RunStatus.FAILED


# --- halt --------------------------------------------------------------------------------------


def test_halt_is_the_default_it_fails_the_run_and_cancels_running_siblings() -> None:
    job = make_job(st("a"), st("b"), st("c", inputMappings=[src("a")]))
    actions = decide(view(job, crashed("a", retryable=True), running("b")), 1.0)
    assert actions[0] == FailStep("a", "boom", {"message": "boom", "retryable": True, "code": "backend"})
    assert CancelStep("b", "step a failed", was_running=True) in actions
    assert CancelStep("c", "step a failed", was_running=False) in actions
    done_ = finish(actions)
    assert done_.status is RunStatus.FAILED
    assert done_.error is not None and done_.error["step_id"] == "a" and "boom" in done_.error["message"]
    assert started(actions) == []


def test_the_job_level_strategy_applies_to_steps_without_their_own() -> None:
    job = make_job(st("a"), st("b"), errorHandlingStrategy="skip")
    actions = decide(view(job, crashed("a"), done("b")), 1.0)
    assert of(actions, SkipStep)[0].by_error
    assert finish(actions).status is RunStatus.PARTIALLY_COMPLETED


def test_halt_starts_nothing_in_the_call_that_sees_the_failure() -> None:
    """Regression: ``a`` (earlier in order) used to be started and then cancelled in the same call,
    which left its new generation and dispatch task behind (the cancel only knew the old row)."""
    job = make_job(st("a"), st("b"))
    actions = decide(view(job, pending("a"), crashed("b")), 1.0)
    assert started(actions) == []
    assert CancelStep("a", "step b failed", was_running=False) in actions
    assert finish(actions).status is RunStatus.FAILED


def test_halt_does_not_start_a_retry_that_fell_due_in_the_same_call() -> None:
    job = make_job(st("a", errorHandling={"strategy": "retry"}), st("b"))
    waiting = StepView("a", StepStatus.WAITING_RETRY, attempt=1, tool_id="t", next_attempt_at=1.0)
    actions = decide(view(job, waiting, crashed("b")), 5.0)
    assert started(actions) == []
    assert CancelStep("a", "step b failed", was_running=False) in actions


def test_halt_keeps_work_of_a_sibling_that_already_completed() -> None:
    """Regression: ``b``'s finished (paid) generation used to be cancelled and its outputs lost, so a
    retry of the run paid for it again."""
    job = make_job(st("a"), st("b"), st("c"))
    actions = decide(view(job, crashed("a"), finished("b", out="B"), running("c")), 1.0)
    assert CompleteStep("b", {"out": "B"}) in actions
    assert [a.step_id for a in of(actions, CancelStep)] == ["c"]
    assert finish(actions).status is RunStatus.FAILED


# --- skip strategy -----------------------------------------------------------------------------


def test_skip_strategy_records_the_error_and_the_run_goes_on() -> None:
    job = make_job(st("a", errorHandling={"strategy": "skip"}), st("b"))
    actions = decide(view(job, crashed("a", retryable=True), running("b")), 1.0)
    (skip,) = of(actions, SkipStep)
    assert skip.by_error and skip.error is not None and skip.error["message"] == "boom"
    assert "boom" in skip.reason
    assert not of(actions, FinishRun) and not of(actions, CancelStep)


# --- retry -------------------------------------------------------------------------------------


RETRY = {"strategy": "retry", "maxAttempts": 3, "backoffSeconds": 10, "maxBackoffSeconds": 25}


def test_a_retryable_error_schedules_a_retry_with_jittered_backoff() -> None:
    job = make_job(st("a", errorHandling=RETRY))
    actions = decide(view(job, crashed("a", attempt=1)), 100.0)
    (retry,) = of(actions, RetryStep)
    assert retry.next_attempt == 2
    assert 105.0 <= retry.at <= 110.0
    assert retry.error is not None and retry.error["retryable"]
    assert Wake(retry.at) in actions
    assert not of(actions, FinishRun)


def test_a_retry_waits_at_least_what_the_backend_asked_for_up_to_an_hour() -> None:
    job = make_job(st("a", errorHandling=RETRY))
    for asked, earliest in ((42.5, 142.5), (3.0, 105.0), (10**9, 100.0 + 3600.0), (-5, 105.0), ("soon", 105.0)):
        failed = running("a", work=GenerationStatus.FAILED, attempt=1,
                         error={"message": "slow down", "retryable": True, "code": "rate_limited",
                                "retry_after_seconds": asked})
        (retry,) = of(decide(view(job, failed), 100.0), RetryStep)
        if isinstance(asked, float) and asked > 10:
            assert retry.at == earliest
        elif asked == 10**9:
            assert retry.at == earliest
        else:
            assert 105.0 <= retry.at <= 110.0  # the step's own backoff


def test_a_waiting_retry_starts_only_when_due_with_the_next_attempt_and_same_tool() -> None:
    job = make_job(st("a", errorHandling=RETRY))
    waiting = StepView("a", StepStatus.WAITING_RETRY, attempt=1, tool_id="t", next_attempt_at=107.0)
    assert decide(view(job, waiting), 106.0) == [Wake(107.0)]
    (start,) = of(decide(view(job, waiting), 107.0), StartStep)
    assert (start.attempt, start.tool_id, start.using_fallback) == (2, "t", False)


def test_retry_backoff_doubles_up_to_the_cap_and_stays_within_half_to_full_delay() -> None:
    job = make_job(st("a", errorHandling={**RETRY, "maxAttempts": 6}))
    nominal = [10.0, 20.0, 25.0, 25.0, 25.0]
    for attempt, expected in enumerate(nominal, start=1):
        (retry,) = of(decide(view(job, crashed("a", attempt=attempt)), 0.0), RetryStep)
        assert expected / 2 <= retry.at <= expected
        assert retry.at == retry_delay("run_1", "a", attempt, 10.0, 25.0)


def test_retry_jitter_is_deterministic_and_differs_between_runs() -> None:
    delays = {retry_delay(f"run_{i}", "a", 1, 8.0, 60.0) for i in range(20)}
    assert len(delays) > 1 and all(4.0 <= d <= 8.0 for d in delays)
    assert retry_delay("r", "a", 2, 8.0, 60.0) == retry_delay("r", "a", 2, 8.0, 60.0)


def test_a_non_retryable_error_is_not_retried_and_follows_then() -> None:
    job = make_job(st("a", errorHandling={**RETRY, "then": "skip"}), st("b"))
    actions = decide(view(job, crashed("a", retryable=False), done("b")), 0.0)
    assert not of(actions, RetryStep)
    assert of(actions, SkipStep)[0].by_error


def test_exhausted_retries_follow_then_halt_by_default() -> None:
    job = make_job(st("a", errorHandling=RETRY))
    actions = decide(view(job, crashed("a", attempt=3)), 0.0)
    assert not of(actions, RetryStep)
    assert of(actions, FailStep)[0].step_id == "a"
    assert finish(actions).status is RunStatus.FAILED


def test_exhausted_retries_follow_then_skip() -> None:
    job = make_job(st("a", errorHandling={**RETRY, "then": "skip"}), st("b"))
    actions = decide(view(job, crashed("a", attempt=3), done("b")), 0.0)
    assert of(actions, SkipStep)[0].by_error
    assert finish(actions).status is RunStatus.PARTIALLY_COMPLETED


def test_exhausted_retries_follow_then_fallback() -> None:
    job = make_job(st("a", errorHandling={**RETRY, "then": "fallback", "fallbackToolId": "t2"}))
    (start,) = of(decide(view(job, crashed("a", attempt=3)), 0.0), StartStep)
    assert (start.tool_id, start.attempt, start.using_fallback) == ("t2", 4, True)


def test_max_attempts_one_means_no_retry() -> None:
    job = make_job(st("a", errorHandling={**RETRY, "maxAttempts": 1}))
    assert finish(decide(view(job, crashed("a")), 0.0)).status is RunStatus.FAILED


def test_failed_work_without_an_error_counts_as_retryable() -> None:
    job = make_job(st("a", errorHandling=RETRY))
    actions = decide(view(job, running("a", work=GenerationStatus.FAILED)), 0.0)
    assert of(actions, RetryStep)


def test_work_cancelled_at_the_backend_is_not_retried() -> None:
    job = make_job(st("a", errorHandling=RETRY))
    actions = decide(view(job, running("a", work=GenerationStatus.CANCELLED)), 0.0)
    assert not of(actions, RetryStep)
    assert finish(actions).status is RunStatus.FAILED


# --- fallback ----------------------------------------------------------------------------------


FALLBACK = {"strategy": "fallback", "fallbackToolId": "t2", "then": "skip"}


def test_fallback_starts_the_other_tool_with_the_same_inputs() -> None:
    job = make_job(st("a", errorHandling=FALLBACK, inputMappings=[{"value": 7, "targetInputName": "x"}]))
    actions = decide(view(job, crashed("a", retryable=False)), 0.0)
    (start,) = of(actions, StartStep)
    assert (start.tool_id, start.attempt, start.using_fallback, start.inputs) == ("t2", 2, True, {"x": 7})


def test_a_failed_fallback_follows_then() -> None:
    job = make_job(st("a", errorHandling=FALLBACK), st("b"))
    actions = decide(view(job, crashed("a", attempt=2, tool="t2", fallback=True), done("b")), 0.0)
    assert started(actions) == []
    assert of(actions, SkipStep)[0].by_error


def test_a_fallback_whose_inputs_cannot_be_resolved_ends() -> None:
    """Regression: a mapping error while starting the fallback started the fallback again,
    recursing until RecursionError."""
    job = make_job(
        st(
            "a",
            errorHandling=FALLBACK,
            inputMappings=[{"template": "{{ job.missing }}", "targetInputName": "x"}],
        )
    )
    actions = decide(view(job), 0.0)
    (skip,) = of(actions, SkipStep)
    assert skip.by_error and "could not be resolved" in skip.reason
    assert started(actions) == []


def test_a_mapping_error_is_not_retried() -> None:
    job = make_job(
        st("a", errorHandling=RETRY, inputMappings=[{"template": "{{ job.nope }}", "targetInputName": "x"}])
    )
    actions = decide(view(job), 0.0)
    assert not of(actions, RetryStep)
    assert finish(actions).status is RunStatus.FAILED


# --- timeouts and the run deadline -------------------------------------------------------------


def test_a_started_step_carries_its_timeout_deadline_and_a_wake() -> None:
    job = make_job(st("a", timeoutSeconds=30))
    actions = decide(view(job), 100.0)
    assert of(actions, StartStep)[0].deadline_at == 130.0
    assert Wake(130.0) in actions


def test_the_tool_timeout_applies_when_the_step_has_none() -> None:
    job = make_job(st("a"))
    actions = decide(view(job, tools={"t": tool("t", timeout=5)}), 100.0)
    assert of(actions, StartStep)[0].deadline_at == 105.0


def test_a_running_step_wakes_the_planner_at_its_timeout() -> None:
    job = make_job(st("a", timeoutSeconds=30))
    assert decide(view(job, running("a", started_at=100.0)), 110.0) == [Wake(130.0)]


def test_a_step_past_its_timeout_expires_its_work_and_the_timeout_is_retryable() -> None:
    job = make_job(st("a", timeoutSeconds=30, errorHandling=RETRY))
    actions = decide(view(job, running("a", started_at=100.0)), 130.0)
    assert actions[0] == ExpireWork("a")
    (retry,) = of(actions, RetryStep)
    assert retry.error is not None and retry.error["code"] == "timeout" and retry.error["retryable"]


def test_a_step_whose_submit_was_sent_is_left_to_its_worker_past_its_timeout() -> None:
    """Its request was sent (marked) and no outcome recorded: a retry now could send it again. The
    worker submitting it records what became of it; the planner looks again after the grace."""
    job = make_job(st("a", timeoutSeconds=30, errorHandling=RETRY))
    sending = replace(running("a", started_at=100.0, work=GenerationStatus.PENDING), work_sending=True)
    assert decide(view(job, sending), 130.0) == [Wake(130.0 + SENT_GRACE_SECONDS)]


def test_a_sent_submit_that_never_recorded_its_outcome_is_not_retried() -> None:
    job = make_job(st("a", timeoutSeconds=30, errorHandling=RETRY))
    sending = replace(running("a", started_at=100.0, work=GenerationStatus.PENDING), work_sending=True)
    actions = decide(view(job, sending), 130.0 + SENT_GRACE_SECONDS)
    assert actions[0] == ExpireWork("a") and not of(actions, RetryStep)
    (failed,) = of(actions, FailStep)
    assert failed.error is not None and failed.error["code"] == "unknown_outcome" and not failed.error["retryable"]
    assert failed.error["details"] == {"cause": "timeout", "maybePaid": True}


def test_a_timeout_reported_by_the_backend_is_marked_as_a_timeout() -> None:
    job = make_job(st("a"))
    actions = decide(view(job, running("a", work=GenerationStatus.TIMEOUT, error={"message": "slow"})), 0.0)
    assert of(actions, FailStep)[0].error == {"message": "slow", "code": "timeout"}


def test_the_run_deadline_fails_the_run_and_cancels_unfinished_steps() -> None:
    job = make_job(st("a"), st("b", inputMappings=[src("a")]))
    actions = decide(view(job, running("a"), deadline=50.0), 50.0)
    assert CancelStep("a", "the run passed its deadline", was_running=True) in actions
    assert CancelStep("b", "the run passed its deadline", was_running=False) in actions
    done_ = finish(actions)
    assert done_.status is RunStatus.FAILED and done_.error is not None and done_.error["code"] == "deadline"


def test_the_run_deadline_is_a_wake_time() -> None:
    job = make_job(st("a"))
    assert decide(view(job, running("a"), deadline=50.0), 10.0) == [Wake(50.0)]


# --- cancellation ------------------------------------------------------------------------------


def test_cancelling_cancels_running_and_waiting_steps_and_ends_cancelled() -> None:
    job = make_job(st("a"), st("b", errorHandling=RETRY), st("c"), st("d", inputMappings=[src("a")]))
    waiting = StepView("b", StepStatus.WAITING_RETRY, attempt=1, tool_id="t", next_attempt_at=99.0)
    actions = decide(view(job, running("a"), waiting, done("c"), cancel=True), 1.0)
    assert {(a.step_id, a.was_running) for a in of(actions, CancelStep)} == {
        ("a", True),
        ("b", False),
        ("d", False),
    }
    assert finish(actions).status is RunStatus.CANCELLED
    assert started(actions) == []


def test_cancelling_keeps_work_that_already_completed() -> None:
    job = make_job(st("a"), st("b"))
    actions = decide(view(job, finished("a", out="A"), running("b"), cancel=True), 1.0)
    assert actions[0] == CompleteStep("a", {"out": "A"})
    assert [a.step_id for a in of(actions, CancelStep)] == ["b"]
    assert finish(actions).status is RunStatus.CANCELLED


def test_the_run_deadline_keeps_work_that_already_completed_but_still_fails_the_run() -> None:
    job = make_job(st("a"))
    actions = decide(view(job, finished("a", out="A"), deadline=5.0), 5.0)
    assert actions[0] == CompleteStep("a", {"out": "A"})
    assert finish(actions).status is RunStatus.FAILED


def test_a_run_cancelled_before_it_started_ends_cancelled() -> None:
    job = make_job(st("a"))
    actions = decide(view(job, status=RunStatus.QUEUED, cancel=True), 0.0)
    assert isinstance(actions[0], StartRun)
    assert finish(actions).status is RunStatus.CANCELLED


@pytest.mark.parametrize("status", [s for s in RunStatus if s.terminal])
def test_a_finished_run_yields_no_actions(status: RunStatus) -> None:
    job = make_job(st("a"))
    assert decide(view(job, crashed("a"), status=status, cancel=True), 0.0) == []


# --- nested jobs -------------------------------------------------------------------------------


def test_a_nested_job_step_starts_the_child_job() -> None:
    job = make_job(st("a", None, jobId="child", inputMappings=[{"value": 1, "targetInputName": "x"}]))
    (start,) = of(decide(view(job), 0.0), StartStep)
    assert (start.job_id, start.tool_id, start.inputs) == ("child", None, {"x": 1})


def test_a_nested_job_completes_with_the_child_run_outputs() -> None:
    job = make_job(st("a", None, jobId="child"), st("b", inputMappings=[src("a")]))
    child = running("a", tool=None, work=GenerationStatus.COMPLETED, outputs={"out": "from child"})
    actions = decide(view(job, child), 0.0)
    assert actions[0] == CompleteStep("a", {"out": "from child"})
    assert of(actions, StartStep)[0].inputs == {"a": "from child"}


def test_a_failed_nested_job_is_retried_as_a_new_child_run() -> None:
    job = make_job(st("a", None, jobId="child", errorHandling={**RETRY, "backoffSeconds": 0}))
    child = running("a", tool=None, work=GenerationStatus.FAILED, error={"message": "x", "retryable": True})
    actions = decide(view(job, child), 0.0)
    (retry,) = of(actions, RetryStep)
    waiting = StepView("a", StepStatus.WAITING_RETRY, attempt=1, next_attempt_at=retry.at)
    (start,) = of(decide(view(job, waiting), retry.at), StartStep)
    assert (start.job_id, start.attempt) == ("child", 2)


# --- final status and outputs ------------------------------------------------------------------


def test_a_run_with_no_error_completes_with_its_declared_outputs() -> None:
    job = make_job(
        st("gen"),
        st("up", inputMappings=[src("gen", "image")]),
        outputSchema={"upscaled": {"type": "image", "sourceStepId": "up", "sourceOutputName": "image"}},
    )
    actions = decide(view(job, done("gen", image=NARROW), finished("up", image=WIDE)), 0.0)
    assert finish(actions) == FinishRun(RunStatus.COMPLETED, {"upscaled": WIDE}, None)


def test_a_condition_skip_is_not_an_error_and_the_run_completes() -> None:
    job = make_job(
        st("gen"),
        st("up", condition="steps.gen.outputs.image.width < 2048", inputMappings=[src("gen", "image")]),
        outputSchema={
            "image": {"type": "image", "sourceStepId": "gen", "sourceOutputName": "image"},
            "upscaled": {"type": "image", "sourceStepId": "up", "sourceOutputName": "image"},
        },
    )
    actions = decide(view(job, finished("gen", image=WIDE)), 0.0)
    assert finish(actions) == FinishRun(RunStatus.COMPLETED, {"image": WIDE}, None)


def test_an_error_skipped_past_with_an_output_left_is_partially_completed() -> None:
    job = make_job(st("a", errorHandling={"strategy": "skip"}), st("b"))
    actions = decide(view(job, skipped("a", by_error=True), finished("b", out=2)), 0.0)
    assert finish(actions) == FinishRun(RunStatus.PARTIALLY_COMPLETED, {"out": 2}, None)


def test_an_error_skipped_past_with_no_output_left_is_failed() -> None:
    job = make_job(st("a", errorHandling={"strategy": "skip"}))
    done_ = finish(decide(view(job, crashed("a")), 0.0))
    assert done_.status is RunStatus.FAILED and done_.outputs == {}
    assert done_.error is not None and "lost" in done_.error["message"]


def test_without_an_output_schema_sink_outputs_are_merged_and_clashes_prefixed() -> None:
    job = make_job(st("a"), st("b", inputMappings=[src("a")]), st("c", inputMappings=[src("a")]))
    steps = {"a": done("a", out=0), "b": done("b", out=1, extra=3), "c": done("c", out=2)}
    assert resolve_job_outputs(job, steps) == {"b.out": 1, "extra": 3, "c.out": 2}


def test_a_declared_output_may_follow_a_path_and_find_its_single_sink() -> None:
    job = make_job(
        st("a"),
        st("b", inputMappings=[src("a")]),
        outputSchema={"first": {"type": "json", "sourceOutputName": "items", "path": "[0].name"}},
    )
    steps = {"a": done("a"), "b": done("b", items=[{"name": "n0"}])}
    assert resolve_job_outputs(job, steps) == {"first": "n0"}


# --- retry of a finished run -------------------------------------------------------------------


def test_a_retried_run_reuses_succeeded_outputs_and_reruns_only_the_reset_steps() -> None:
    """After ``retry``, the engine resets failed / skipped-by-error / cancelled steps to pending
    and keeps succeeded ones; the planner must not start a succeeded step again and must feed
    the reset steps from the kept outputs."""
    job = make_job(
        st("a"),
        st("b", inputMappings=[src("a")], errorHandling={"strategy": "skip"}),
        st("c", inputMappings=[src("b")]),
        st("d", inputMappings=[src("a")]),
    )
    rv = view(job, done("a", out="A"), pending("b"), pending("c"), done("d", out="D"))
    actions = decide(rv, 0.0)
    assert [(a.step_id, a.inputs, a.attempt) for a in of(actions, StartStep)] == [("b", {"a": "A"}, 1)]
    rv = view(job, done("a", out="A"), finished("b", out="B"), pending("c"), done("d", out="D"))
    actions = decide(rv, 1.0)
    assert started(actions) == ["c"]
    assert of(actions, StartStep)[0].inputs == {"b": "B"}


# --- purity ------------------------------------------------------------------------------------


def test_decide_is_pure_and_does_not_touch_its_input() -> None:
    job = make_job(
        st("a"),
        st("b", inputMappings=[src("a", "out", "x", path="k")]),
        st("c", inputMappings=[src("a")], errorHandling=RETRY),
    )
    rv = view(job, finished("a", out={"k": [1, 2]}), crashed("c"))
    before = copy.deepcopy(rv)
    first = decide(rv, 3.0)
    assert decide(rv, 3.0) == first
    assert rv == before
    assert first  # something happened


# --- speed (reported, not asserted) ------------------------------------------------------------


def _per_call_us(rv: RunView, now: float, budget: float = 0.2) -> float:
    """Mean wall time of one call, over as many calls as fit in ``budget`` seconds (at least 20)."""
    decide(rv, now)
    calls, start = 0, time.perf_counter()
    while calls < 20 or time.perf_counter() - start < budget:
        decide(rv, now)
        calls += 1
    return (time.perf_counter() - start) / calls * 1e6


def test_report_decide_speed(capsys: pytest.CaptureFixture[str]) -> None:
    chain = make_job(st("a"), st("b", inputMappings=[src("a")]), st("c", inputMappings=[src("b")]))
    fan = make_job(
        st("root"),
        *[
            st(f"m{i}", inputMappings=[src("root")], condition="steps.root.outputs.out.width < 2048")
            for i in range(4)
        ],
        st("join", inputMappings=[src(f"m{i}", target=f"i{i}") for i in range(4)]),
    )
    plain_fan = make_job(
        st("root"),
        *[st(f"m{i}", inputMappings=[src("root")]) for i in range(4)],
        st("join", inputMappings=[src(f"m{i}", target=f"i{i}") for i in range(4)]),
    )
    figures = {
        "3-step chain, middle step finishing": _per_call_us(view(chain, done("a"), finished("b")), 1.0),
        "3-step chain, all waiting": _per_call_us(view(chain, done("a"), running("b")), 1.0),
        "1->4->1 fan-out, root finishing (4 conditions, 4 starts)": _per_call_us(
            view(fan, finished("root", out=NARROW)), 1.0
        ),
        "1->4->1 fan-out, root finishing, no conditions (4 starts)": _per_call_us(
            view(plain_fan, finished("root", out=NARROW)), 1.0
        ),
        "1->4->1 fan-in, last branch finishing (join starts)": _per_call_us(
            view(fan, done("root", out=NARROW), *[done(f"m{i}") for i in range(3)], finished("m3")), 1.0
        ),
    }
    with capsys.disabled():
        for name, us in figures.items():
            print(f"\ndecide(): {name}: {us:.1f} µs per call", end="")
        print()


# --- the tool's contract inside a job ------------------------------------------------------------


def contract_tool() -> ToolDefinition:
    return ToolDefinition.model_validate({
        "toolId": "t", "service": "comfydeploy",
        "inputSchema": {
            "width": {"type": "integer", "default": 1024, "minimum": 256, "maximum": 2048},
            "style": {"type": "enum", "enum": ["Film", "Anime"], "default": "Film"},
            "seed": {"type": "seed"},
        },
    })


def test_a_step_s_inputs_are_coerced_defaulted_and_given_a_seed_like_a_direct_run() -> None:
    job = make_job(st("a", inputMappings=[{"template": "{{ job.w * 2 }}", "targetInputName": "width"},
                                          {"value": "anime", "targetInputName": "style"}]))
    [start] = of(decide(view(job, inputs={"w": 600}, tools={"t": contract_tool()}), 100.0), StartStep)
    seed = start.inputs.pop("seed")
    assert start.inputs == {"width": 1200, "style": "Anime"}
    assert isinstance(seed, int) and seed >= 0
    # the planner stays deterministic: the same attempt draws the same seed; another run another
    [again] = of(decide(view(job, inputs={"w": 600}, tools={"t": contract_tool()}), 100.0), StartStep)
    assert again.inputs["seed"] == seed


def test_a_value_the_tool_refuses_fails_the_step_with_an_input_error_and_is_not_retried() -> None:
    job = make_job(st("a", inputMappings=[{"value": 4999, "targetInputName": "width"}],
                      errorHandling={"strategy": "retry", "maxAttempts": 3}))
    actions = decide(view(job, tools={"t": contract_tool()}), 100.0)
    assert of(actions, StartStep) == [] and of(actions, RetryStep) == []
    [fail] = of(actions, FailStep)
    assert fail.error["code"] == "invalid_input" and fail.error["retryable"] is False
    assert fail.error["fields"] == [{"field": "width", "message": "must be at most 2048 (got 4999)"}]
    assert "tool 't' refused its inputs: width: must be at most 2048 (got 4999)" in fail.reason


def test_a_fallback_tool_is_held_to_its_own_contract() -> None:
    small = ToolDefinition.model_validate({"toolId": "small", "service": "builtin",
                                           "inputSchema": {"width": {"type": "integer", "maximum": 512}}})
    wide = ToolDefinition.model_validate({"toolId": "wide", "service": "builtin",
                                          "inputSchema": {"width": {"type": "integer", "maximum": 8192}}})
    job = make_job(st("a", tool="small", inputMappings=[{"value": 4999, "targetInputName": "width"}],
                      errorHandling={"strategy": "fallback", "fallbackToolId": "wide"}))
    [start] = of(decide(view(job, tools={"small": small, "wide": wide}), 100.0), StartStep)
    assert (start.tool_id, start.using_fallback, start.inputs) == ("wide", True, {"width": 4999})
