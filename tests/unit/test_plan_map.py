"""The planner's rules for map steps and collected lists, case by case.

Readings chosen (a demanding user's reading of issue 14):

- a map step opens when it is ready: its list is resolved once; a list that is not a list, or is
  longer than ``maxItems``, is an error of the step (its error strategy, never a fallback: another
  tool would not fix the list);
- at most ``concurrency`` items are in flight (running or waiting for a retry); pending items start
  in index order as places free up;
- error handling applies per item (retry with backoff, fallback); an item whose attempts are
  exhausted has failed (its outputs are null);
- ``minSuccess`` (default: every item) decides the step: as soon as it can no longer be reached
  the step ends with an error (skipped past under ``skip``, else failed, which halts the run) and
  its items in flight are stopped; when every item has ended and enough succeeded, the step
  succeeds — and a run whose map step tolerated failed items ends ``partially_completed``;
- the steps after a map step wait for its outputs to be gathered (the engine decides again).
"""

from __future__ import annotations

import copy
from typing import Any

from tests.unit.test_plan import done, make_job, pending, skipped, st

from toolweave.engine.evaluate import evaluate_step
from toolweave.engine.plan import (
    CancelStep,
    CompleteMap,
    Evaluate,
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
    StepEvaluation,
    StepView,
    Wake,
    decide,
    retry_delay,
)
from toolweave.engine.plan_rules import SENT_GRACE_SECONDS
from toolweave.model.definitions import JobDefinition, ToolDefinition
from toolweave.model.status import GenerationStatus, RunStatus, StepStatus

TOOLS = {
    t: ToolDefinition.model_validate({"toolId": t, "service": "builtin", "inputSchema": {
        "x": {"type": "json"}, "note": {"type": "string"}, "images": {"type": "json"}}})
    for t in ("t", "fb")
}


def map_step(sid: str = "m", *, over: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    spec = {"over": over or {"sourceJobInput": "xs"}, **fields.pop("map", {})}
    mappings = fields.pop("inputMappings", [{"sourceItem": True, "targetInputName": "x"}])
    return st(sid, map=spec, inputMappings=mappings, **fields)


def job_with(*steps: dict[str, Any], **fields: Any) -> JobDefinition:
    fields.setdefault("inputSchema", {"xs": {"type": "json"}})
    return make_job(*steps, **fields)


def view(job: JobDefinition, steps: dict[str, StepView], inputs: dict[str, Any] | None = None, **kw: Any) -> RunView:
    return RunView(
        "run_1", kw.pop("status", RunStatus.RUNNING), job, inputs or {}, steps, tools=TOOLS, **kw
    )


def item(index: int, value: Any = None, *, status: StepStatus = StepStatus.RUNNING, attempt: int = 1,
         work: GenerationStatus | None = GenerationStatus.PROCESSING, **kw: Any) -> ItemView:
    return ItemView(index, status, value=value, attempt=attempt, tool_id=kw.pop("tool_id", "t"),
                    started_at=kw.pop("started_at", 0.0), work_status=work, **kw)


def mapping(total: int, *, succeeded: int = 0, failed: int = 0, active: list[ItemView] | None = None,
            waiting: list[int] | None = None, values: list[Any] | None = None) -> StepView:
    values = values if values is not None else list(range(total))
    return StepView(
        "m", StepStatus.RUNNING, attempt=1, tool_id="t",
        map=MapView(total, succeeded, failed, active or [], [ItemView(i, value=values[i]) for i in waiting or []]),
    )


def of(kind: type, actions: list[Any]) -> list[Any]:
    return [a for a in actions if isinstance(a, kind)]


# --- opening -----------------------------------------------------------------------------------


def test_a_ready_map_step_opens_its_list_and_starts_as_many_items_as_its_concurrency() -> None:
    job = job_with(map_step(map={"concurrency": 2}, inputMappings=[
        {"sourceItem": True, "targetInputName": "x"},
        {"template": "{{ index }}: {{ item }} {{ job.xs | length }}", "targetInputName": "note"},
    ]))
    actions = decide(view(job, {"m": pending("m")}, {"xs": ["a", "b", "c"]}, status=RunStatus.QUEUED), 10.0)
    assert isinstance(actions[0], StartRun)
    assert of(OpenMap, actions) == [OpenMap("m", ["a", "b", "c"])]
    starts = of(StartStep, actions)
    assert [(s.item, s.attempt, s.tool_id, s.inputs) for s in starts] == [
        (0, 1, "t", {"x": "a", "note": "0: a 3"}),
        (1, 1, "t", {"x": "b", "note": "1: b 3"}),
    ]
    assert not of(FinishRun, actions)


def test_an_empty_list_completes_the_step_at_once_and_the_run_waits_for_the_gathered_outputs() -> None:
    job = job_with(map_step(), st("after", inputMappings=[{"sourceStepId": "m", "sourceOutputName": "y", "targetInputName": "x"}]))
    actions = decide(view(job, {"m": pending("m"), "after": pending("after")}, {"xs": []}), 1.0)
    assert of(OpenMap, actions) == [OpenMap("m", [])] and of(CompleteMap, actions) == [CompleteMap("m")]
    # the next step needs the gathered outputs: it starts on the next decision, not in this one
    assert not of(StartStep, actions) and not of(FinishRun, actions) and not of(SkipStep, actions)


def test_a_list_that_is_not_a_list_is_an_error_of_the_step_naming_its_source() -> None:
    job = job_with(map_step())
    for value, kind in (("abc", "text ('abc')"), ({"a": 1}, "an object"), (3, "a number")):
        actions = decide(view(job, {"m": pending("m")}, {"xs": value}), 1.0)
        fail = of(FailStep, actions)
        assert fail and f"maps over job input 'xs', which is {kind}, not a list" in fail[0].reason
        assert of(FinishRun, actions)[0].status is RunStatus.FAILED and not of(OpenMap, actions)
    missing = decide(view(job, {"m": pending("m")}, {}), 1.0)
    assert "which the run did not give" in of(FailStep, missing)[0].reason


def test_a_list_longer_than_max_items_fails_and_a_skip_strategy_skips_past_it() -> None:
    job = job_with(map_step(map={"maxItems": 3}))
    actions = decide(view(job, {"m": pending("m")}, {"xs": list(range(4))}), 1.0)
    assert "maps over 4 items; it takes at most 3 (map.maxItems)" in of(FailStep, actions)[0].reason
    skipping = job_with(map_step(map={"maxItems": 3}, errorHandling={"strategy": "fallback", "fallbackToolId": "fb", "then": "skip"}))
    actions = decide(view(skipping, {"m": pending("m")}, {"xs": list(range(4))}), 1.0)
    assert of(SkipStep, actions)[0].by_error and not of(StartStep, actions)  # no fallback for a bad list


def test_a_map_over_a_skipped_step_is_skipped_and_one_over_an_earlier_maps_output_runs() -> None:
    job = job_with(st("a"), map_step(over={"sourceStepId": "a", "sourceOutputName": "out"}))
    actions = decide(view(job, {"a": skipped("a"), "m": pending("m")}), 1.0)
    assert "it maps over output 'out' of step 'a', and step 'a' was skipped" in of(SkipStep, actions)[0].reason
    actions = decide(view(job, {"a": done("a", out=[{"p": 1}, {"p": 2}]), "m": pending("m")}), 1.0)
    assert [s.inputs for s in of(StartStep, actions)] == [{"x": {"p": 1}}, {"x": {"p": 2}}]


def test_a_path_into_the_item_and_a_bad_one_fails_only_that_item() -> None:
    job = job_with(map_step(map={"minSuccess": 1}, inputMappings=[{"sourceItem": True, "path": "prompt", "targetInputName": "x"}]))
    actions = decide(view(job, {"m": pending("m")}, {"xs": [{"prompt": "cat"}, {"other": 1}]}), 1.0)
    assert [(s.item, s.inputs) for s in of(StartStep, actions)] == [(0, {"x": "cat"})]
    failed = of(FinishItem, actions)
    assert [(f.item, f.succeeded) for f in failed] == [(1, False)]
    assert "there is no key 'prompt'" in failed[0].error["message"]
    assert not of(FailStep, actions)  # one success suffices


# --- templates that loop: evaluated item by item outside the planner ---------------------------

LOOPING = "{% for c in item %}{{ c }}{% endfor %}!"  # a loop: its cost is the item's, so the user's


def evaluated_open(job: JobDefinition, inputs: dict[str, Any], budget: float = 1.0) -> list[Any]:
    """The map step ``m`` is first sent to be evaluated; the actions once its evaluation is back."""
    first = decide(view(job, {"m": pending("m")}, inputs), 1.0)
    [ask] = of(Evaluate, first)
    assert ask.attempt == 1 and not of(OpenMap, first) and not of(StartStep, first)
    answer = evaluate_step({"step": job.step("m").dump(), "attempt": 1, "job": inputs, "steps": ask.steps,
                            "condition_seconds": budget, "template_seconds": budget})
    ready = StepView("m", StepStatus.READY, attempt=1, tool_id="t")
    return decide(view(job, {"m": ready}, inputs, evaluations={"m": StepEvaluation.of("m", 1, answer)}), 2.0)


def test_a_map_step_whose_template_loops_is_evaluated_item_by_item_before_it_opens() -> None:
    job = job_with(map_step(map={"concurrency": 2}, inputMappings=[{"template": LOOPING, "targetInputName": "note"}]))
    actions = evaluated_open(job, {"xs": ["ab", "cd", "ef"]})
    [opened] = of(OpenMap, actions)
    assert opened.items == ["ab", "cd", "ef"]
    assert opened.evaluated == [{"inputs": {"note": "ab!"}}, {"inputs": {"note": "cd!"}}, {"inputs": {"note": "ef!"}}]
    assert [(s.item, s.inputs) for s in of(StartStep, actions)] == [(0, {"note": "ab!"}), (1, {"note": "cd!"})]


def test_an_item_past_its_template_budget_fails_alone_with_evaluation_budget() -> None:
    slow = "{% for a in item %}{% for b in item %}{% for c in item %}{% endfor %}{% endfor %}{% endfor %}{{ item | length }}"
    job = job_with(map_step(map={"minSuccess": 1}, inputMappings=[{"template": slow, "targetInputName": "note"}]))
    actions = evaluated_open(job, {"xs": ["ab", list(range(400))]}, budget=0.05)
    assert [(s.item, s.inputs) for s in of(StartStep, actions)] == [(0, {"note": "2"})]
    [failed] = of(FinishItem, actions)
    assert failed.item == 1 and not failed.succeeded
    assert failed.error["code"] == "evaluation_budget" and failed.error["retryable"] is False
    assert "item 1" in failed.error["message"] and "template_budget_ms" in failed.error["message"]
    assert not of(FailStep, actions)  # one success suffices


def test_a_pending_or_retried_item_starts_with_the_inputs_evaluated_when_the_map_opened() -> None:
    job = job_with(map_step(map={"concurrency": 1}, inputMappings=[{"template": LOOPING, "targetInputName": "note"}],
                            errorHandling={"strategy": "retry", "maxAttempts": 2}))
    retried = item(0, "ab", status=StepStatus.WAITING_RETRY, next_attempt_at=5.0, work=None, inputs={"note": "ab!"})
    m = StepView("m", StepStatus.RUNNING, attempt=1, tool_id="t", map=MapView(2, active=[retried]))
    actions = decide(view(job, {"m": m}, {"xs": ["ab", "cd"]}), 6.0)
    assert [(s.item, s.attempt, s.inputs) for s in of(StartStep, actions)] == [(0, 2, {"note": "ab!"})]
    waiting = ItemView(1, value="cd", inputs={"note": "cd!"})
    m = StepView("m", StepStatus.RUNNING, attempt=1, tool_id="t", map=MapView(2, succeeded=1, waiting=[waiting]))
    actions = decide(view(job, {"m": m}, {"xs": ["ab", "cd"]}), 7.0)
    assert [(s.item, s.inputs) for s in of(StartStep, actions)] == [(1, {"note": "cd!"})]
    # an item the evaluator could not resolve fails; one that was never evaluated is not resolved here
    broken = ItemView(1, value="cd", inputs_error={"message": "boom", "retryable": False, "code": None})
    never = ItemView(1, value="cd")
    for pending_item, message in ((broken, "boom"), (never, "were not evaluated")):
        m = StepView("m", StepStatus.RUNNING, attempt=1, tool_id="t", map=MapView(2, succeeded=1, waiting=[pending_item]))
        actions = decide(view(job, {"m": m}, {"xs": ["ab", "cd"]}), 7.0)
        assert not of(StartStep, actions) and message in of(FinishItem, actions)[0].error["message"]


# --- items in flight ---------------------------------------------------------------------------


def test_a_finished_item_frees_a_place_for_the_next_pending_one() -> None:
    job = job_with(map_step(map={"concurrency": 2}))
    m = mapping(5, succeeded=1, active=[item(1, work=GenerationStatus.COMPLETED, work_outputs={"y": 10}),
                                        item(2)], waiting=[3, 4])
    actions = decide(view(job, {"m": m}), 5.0)
    assert of(FinishItem, actions) == [FinishItem("m", 1, True, {"y": 10})]
    assert [(s.item, s.inputs) for s in of(StartStep, actions)] == [(3, {"x": 3})]
    assert not of(CompleteMap, actions)


def test_never_more_items_in_flight_than_the_concurrency_counting_retries() -> None:
    job = job_with(map_step(map={"concurrency": 2}))
    m = mapping(4, active=[item(0, status=StepStatus.WAITING_RETRY, next_attempt_at=50.0, work=None), item(1)], waiting=[2, 3])
    actions = decide(view(job, {"m": m}), 5.0)
    assert not of(StartStep, actions)
    assert of(Wake, actions) == [Wake(50.0)]


def test_a_retryable_item_failure_is_retried_with_backoff_then_started_again() -> None:
    job = job_with(map_step(errorHandling={"strategy": "retry", "maxAttempts": 2, "backoffSeconds": 4}))
    m = mapping(2, active=[item(0, work=GenerationStatus.FAILED, work_error={"message": "503", "retryable": True}), item(1)])
    actions = decide(view(job, {"m": m}), 10.0)
    retry = of(RetryStep, actions)
    assert len(retry) == 1 and retry[0].item == 0 and retry[0].next_attempt == 2
    assert retry[0].at == 10.0 + retry_delay("run_1", "m[0]", 1, 4.0, 60.0)
    assert of(Wake, actions) == [Wake(retry[0].at)]
    due = mapping(2, active=[item(0, status=StepStatus.WAITING_RETRY, next_attempt_at=retry[0].at, work=None), item(1)])
    later = decide(view(job, {"m": due}), retry[0].at)
    assert [(s.item, s.attempt) for s in of(StartStep, later)] == [(0, 2)]
    # the second failure exhausts the attempts: the item fails, and with it (every item must succeed) the step
    exhausted = mapping(2, active=[item(0, attempt=2, work=GenerationStatus.FAILED, work_error={"message": "503", "retryable": True}), item(1)])
    final = decide(view(job, {"m": exhausted}), 30.0)
    assert of(FinishItem, final) == [FinishItem("m", 0, False, None, {"message": "503", "retryable": True})]
    fail = of(FailStep, final)[0]
    assert fail.reason == "1 of 2 items of step 'm' failed (item 0: 503); at least 2 must succeed"
    assert of(FinishRun, final)[0].status is RunStatus.FAILED and not of(StartStep, final)


def test_a_failed_item_falls_back_to_the_fallback_tool_once() -> None:
    job = job_with(map_step(errorHandling={"strategy": "fallback", "fallbackToolId": "fb"}))
    m = mapping(1, active=[item(0, "v", work=GenerationStatus.FAILED, work_error={"message": "no"})])
    actions = decide(view(job, {"m": m}), 1.0)
    assert [(s.item, s.tool_id, s.using_fallback, s.attempt, s.inputs) for s in of(StartStep, actions)] == [
        (0, "fb", True, 2, {"x": "v"})
    ]
    again = mapping(1, active=[item(0, "v", attempt=2, tool_id="fb", using_fallback=True,
                                    work=GenerationStatus.FAILED, work_error={"message": "no"})])
    assert of(FailStep, decide(view(job, {"m": again}), 2.0))


def test_an_item_past_its_timeout_expires_and_counts_as_a_failed_attempt() -> None:
    job = job_with(map_step(timeoutSeconds=5, map={"minSuccess": 0}))
    m = mapping(2, active=[item(0, started_at=0.0), item(1, started_at=3.0)])
    actions = decide(view(job, {"m": m}), 6.0)
    assert of(ExpireWork, actions) == [ExpireWork("m", item=0)]
    assert of(FinishItem, actions)[0].error["code"] == "timeout"
    assert of(Wake, actions) == [Wake(8.0)]  # item 1's timeout


def test_an_item_whose_submit_was_sent_is_left_to_its_worker_past_its_timeout() -> None:
    job = job_with(map_step(timeoutSeconds=5, map={"minSuccess": 0}))
    m = mapping(1, active=[item(0, started_at=0.0, work=GenerationStatus.PENDING, work_sending=True)])
    assert not of(ExpireWork, decide(view(job, {"m": m}), 6.0))
    actions = decide(view(job, {"m": m}), 5.0 + SENT_GRACE_SECONDS)
    assert of(ExpireWork, actions) == [ExpireWork("m", item=0)]
    assert of(FinishItem, actions)[0].error["code"] == "unknown_outcome"


def test_min_success_tolerates_failures_and_the_run_ends_partially_completed() -> None:
    job = job_with(map_step(map={"minSuccess": "50%"}), outputSchema={"ys": {"type": "json", "sourceStepId": "m", "sourceOutputName": "y"}})
    m = mapping(4, succeeded=2, failed=1, active=[item(3, work=GenerationStatus.FAILED, work_error={"message": "x"})])
    actions = decide(view(job, {"m": m}), 1.0)
    assert of(FinishItem, actions)[0].succeeded is False
    assert of(CompleteMap, actions) == [CompleteMap("m")] and not of(FinishRun, actions)
    gathered = StepView("m", StepStatus.SUCCEEDED, attempt=1, outputs={"y": [1, None, 2, None]}, map=MapView(4, 2, 2))
    final = decide(view(job, {"m": gathered}), 2.0)
    assert of(FinishRun, final) == [FinishRun(RunStatus.PARTIALLY_COMPLETED, {"ys": [1, None, 2, None]}, None)]
    clean = StepView("m", StepStatus.SUCCEEDED, attempt=1, outputs={"y": [1, 2]}, map=MapView(2, 2, 0))
    assert of(FinishRun, decide(view(job, {"m": clean}), 2.0))[0].status is RunStatus.COMPLETED


def test_once_min_success_cannot_be_reached_the_step_ends_at_once_and_skip_skips_past_it() -> None:
    job = job_with(map_step(map={"minSuccess": 3}, errorHandling={"strategy": "skip"}), st("free"))
    m = mapping(4, failed=1, active=[item(1, work=GenerationStatus.FAILED, work_error={"message": "bad"}), item(2)], waiting=[3])
    actions = decide(view(job, {"m": m, "free": pending("free")}), 1.0)
    skip = of(SkipStep, actions)
    assert skip and skip[0].step_id == "m" and skip[0].by_error
    assert "2 of 4 items of step 'm' failed (item 1: bad); at least 3 must succeed" in skip[0].reason
    assert [s.step_id for s in of(StartStep, actions)] == ["free"]  # no new item; the run goes on


def test_cancelling_keeps_items_whose_work_completed_and_cancels_the_map_step() -> None:
    job = job_with(map_step())
    m = mapping(3, active=[item(0, work=GenerationStatus.COMPLETED, work_outputs={"y": 1}), item(1)], waiting=[2])
    actions = decide(view(job, {"m": m}, cancel_requested=True), 1.0)
    assert of(FinishItem, actions) == [FinishItem("m", 0, True, {"y": 1})]
    assert of(CancelStep, actions) == [CancelStep("m", "the run was cancelled", was_running=True)]
    assert of(FinishRun, actions)[0].status is RunStatus.CANCELLED and not of(StartStep, actions)


def test_a_halt_elsewhere_starts_no_item_and_cancels_the_map_step() -> None:
    job = job_with(st("a"), map_step())
    steps = {"a": StepView("a", StepStatus.RUNNING, attempt=1, tool_id="t", started_at=0.0,
                           work_status=GenerationStatus.FAILED, work_error={"message": "boom"}),
             "m": mapping(3, active=[item(0, work=GenerationStatus.COMPLETED, work_outputs={"y": 1})], waiting=[1, 2])}
    actions = decide(view(job, steps), 1.0)
    assert not of(StartStep, actions)
    assert of(FinishItem, actions) == [FinishItem("m", 0, True, {"y": 1})]
    assert CancelStep("m", "step a failed", was_running=True) in actions


def test_decide_is_pure_for_map_steps() -> None:
    job = job_with(map_step(map={"concurrency": 3}))
    run = view(job, {"m": mapping(6, active=[item(0)], waiting=[1, 2, 3])})
    before = copy.deepcopy(run)
    assert decide(run, 1.0) == decide(run, 1.0) and run == before


# --- collect -----------------------------------------------------------------------------------


def test_collect_gathers_several_outputs_into_a_list_and_skips_when_one_is_missing() -> None:
    grid = st("grid", inputMappings=[{"targetInputName": "images", "collect": [
        {"sourceStepId": "a", "sourceOutputName": "out"},
        {"sourceStepId": "b", "sourceOutputName": "out", "default": None},
        {"value": "static"},
        {"sourceJobInput": "xs"},
    ]}])
    job = job_with(st("a"), st("b"), grid)
    actions = decide(view(job, {"a": done("a", out=1), "b": done("b", out=2), "grid": pending("grid")}, {"xs": [9]}), 1.0)
    assert of(StartStep, actions)[0].inputs == {"images": [1, 2, "static", [9]]}
    with_default = decide(view(job, {"a": done("a", out=1), "b": skipped("b"), "grid": pending("grid")}), 1.0)
    assert of(StartStep, with_default)[0].inputs == {"images": [1, None, "static", None]}
    without = decide(view(job, {"a": skipped("a"), "b": done("b"), "grid": pending("grid")}), 1.0)
    assert "needs output 'out' of step 'a', which was skipped" in of(SkipStep, without)[0].reason
