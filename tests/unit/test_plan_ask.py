"""Ask steps in the pure planner and the answer checks (``engine.asking``): asking, waiting,
answers, the timeout's default answer, rejection, and answers that do not fit."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from toolweave.engine import plan
from toolweave.engine.asking import AnswerError, build_question, check_answer, default_answer, outputs_of
from toolweave.engine.plan import (
    AskStep,
    CancelStep,
    CompleteStep,
    ExpireQuestion,
    FailStep,
    FinishRun,
    RunView,
    SetWaiting,
    SkipStep,
    StartStep,
    StepView,
    Wake,
)
from toolweave.model.asking import AskSpec
from toolweave.model.definitions import JobDefinition
from toolweave.model.status import GenerationStatus, RunStatus, StepStatus

NOW = 1_000_000.0
IMAGES = [{"kind": "artifact", "sha256": f"{i:x}" * 64, "mimeType": "image/png", "size": 1} for i in range(1, 5)]


def pick_job(ask: dict[str, Any] | None = None, **step: Any) -> JobDefinition:
    return JobDefinition.model_validate({
        "jobId": "pick",
        "steps": [
            {"stepId": "gen", "toolId": "test.instant"},
            {"stepId": "pick", "ask": {"kind": "choose", "question": "Which one?", "timeout": "1h", **(ask or {})},
             "inputMappings": [{"sourceStepId": "gen", "sourceOutputName": "images", "targetInputName": "candidates"}],
             **step},
            {"stepId": "after", "toolId": "test.instant",
             "inputMappings": [{"sourceStepId": "pick", "sourceOutputName": "chosenIndexes", "targetInputName": "note",
                                "path": "[0]"}]},
        ],
    })


def view(job: JobDefinition, status: RunStatus = RunStatus.RUNNING, **steps: StepView) -> RunView:
    views = {s.step_id: steps.get(s.step_id, StepView(s.step_id)) for s in job.steps}
    return RunView(run_id="run_1", status=status, job=job, inputs={}, steps=views)


def gen_done() -> StepView:
    return StepView("gen", StepStatus.SUCCEEDED, attempt=1, outputs={"images": IMAGES})


def waiting(job: JobDefinition, answer: dict[str, Any] | None = None, by: str | None = "acme") -> StepView:
    step = job.step("pick")
    assert step is not None and step.ask is not None
    question = build_question(step.ask, {"candidates": IMAGES})
    assert isinstance(question, dict)
    return StepView("pick", StepStatus.WAITING_INPUT, attempt=1, started_at=NOW, question=question,
                    answer=answer, answered_by=by if answer is not None else None)


def test_a_ready_ask_step_asks_and_the_run_waits_until_its_timeout() -> None:
    job = pick_job()
    actions = plan.decide(view(job, gen=gen_done()), NOW)
    ask = next(a for a in actions if isinstance(a, AskStep))
    assert ask.question["candidates"] == IMAGES and ask.question["kind"] == "choose"
    assert ask.expires_at == NOW + 3600
    assert SetWaiting(True) in actions and Wake(NOW + 3600) in actions
    assert not any(isinstance(a, StartStep) for a in actions)


def test_a_waiting_step_without_an_answer_only_waits() -> None:
    job = pick_job()
    actions = plan.decide(view(job, RunStatus.WAITING_INPUT, gen=gen_done(), pick=waiting(job)), NOW + 10)
    assert actions == [Wake(NOW + 3600)]


def test_an_answer_completes_the_step_and_its_choice_feeds_the_next_step() -> None:
    job = pick_job()
    answer = {"decision": "approve", "chosen": [2]}
    actions = plan.decide(view(job, RunStatus.WAITING_INPUT, gen=gen_done(), pick=waiting(job, answer)), NOW + 10)
    done = next(a for a in actions if isinstance(a, CompleteStep))
    assert done.outputs["chosen"] == IMAGES[2] and done.outputs["chosenIndexes"] == [2]
    assert done.outputs["approved"] is True and done.outputs["answeredBy"] == "acme"
    start = next(a for a in actions if isinstance(a, StartStep))
    assert start.step_id == "after" and start.inputs["note"] == 2
    assert SetWaiting(False) in actions


def test_the_timeout_answers_with_the_default_action() -> None:
    job = pick_job({"onTimeout": "approve", "minChoices": 1})
    actions = plan.decide(view(job, RunStatus.WAITING_INPUT, gen=gen_done(), pick=waiting(job)), NOW + 3600)
    assert ExpireQuestion("pick", {"decision": "approve", "chosen": [0]}) in actions
    done = next(a for a in actions if isinstance(a, CompleteStep))
    assert done.outputs["chosen"] == IMAGES[0] and done.outputs["timedOut"] is True and done.outputs["answeredBy"] is None


def test_a_timeout_that_rejects_fails_the_run() -> None:
    job = pick_job()
    actions = plan.decide(view(job, RunStatus.WAITING_INPUT, gen=gen_done(), pick=waiting(job)), NOW + 3601)
    fail = next(a for a in actions if isinstance(a, FailStep))
    assert fail.error is not None and fail.error["code"] == "ask_timeout"
    assert isinstance(actions[-1], FinishRun) and actions[-1].status is RunStatus.FAILED


def test_a_rejection_ends_the_run_or_continues_for_a_condition_to_branch_on() -> None:
    job = pick_job()
    rejected = {"decision": "reject", "comment": "all blurry"}
    actions = plan.decide(view(job, RunStatus.WAITING_INPUT, gen=gen_done(), pick=waiting(job, rejected)), NOW)
    fail = next(a for a in actions if isinstance(a, FailStep))
    assert fail.reason == "rejected by acme: all blurry"
    assert CancelStep("after", "step pick failed") in actions
    assert isinstance(actions[-1], FinishRun) and actions[-1].status is RunStatus.FAILED

    branching = pick_job({"onReject": "continue"})
    actions = plan.decide(view(branching, RunStatus.WAITING_INPUT, gen=gen_done(), pick=waiting(branching, rejected)), NOW)
    done = next(a for a in actions if isinstance(a, CompleteStep))
    assert done.outputs["approved"] is False and done.outputs["chosen"] is None

    skipping = pick_job(errorHandling={"strategy": "skip"})
    actions = plan.decide(view(skipping, RunStatus.WAITING_INPUT, gen=gen_done(), pick=waiting(skipping, rejected)), NOW)
    assert any(isinstance(a, SkipStep) and a.step_id == "pick" and a.by_error for a in actions)


def test_cancelling_a_waiting_run_cancels_the_waiting_step() -> None:
    job = pick_job()
    run = view(job, RunStatus.WAITING_INPUT, gen=gen_done(), pick=waiting(job))
    actions = plan.decide(RunView(**{**run.__dict__, "cancel_requested": True}), NOW)
    assert CancelStep("pick", "the run was cancelled", was_running=False) in actions
    assert isinstance(actions[-1], FinishRun) and actions[-1].status is RunStatus.CANCELLED


def test_too_few_candidates_fail_the_step_with_a_clear_reason() -> None:
    job = pick_job({"minChoices": 2, "maxChoices": 3})
    gen = StepView("gen", StepStatus.SUCCEEDED, attempt=1, outputs={"images": [IMAGES[0]]})
    actions = plan.decide(view(job, gen=gen), NOW)
    fail = next(a for a in actions if isinstance(a, FailStep))
    assert "there are 1 candidates; at least 2 are needed (minChoices)" in fail.reason


def test_a_step_after_a_running_branch_keeps_the_run_waiting_while_the_question_is_open() -> None:
    job = pick_job()
    running = StepView("gen", StepStatus.RUNNING, attempt=1, work_status=GenerationStatus.PROCESSING)
    assert SetWaiting(True) not in plan.decide(view(job, gen=running), NOW)


# --- answers -----------------------------------------------------------------------------------------


def spec(**fields: Any) -> AskSpec:
    return AskSpec.model_validate({"question": "?", **fields})


def test_answers_are_checked_against_their_question_naming_every_wrong_field() -> None:
    choose = spec(kind="choose", maxChoices=2)
    question = build_question(choose, {"candidates": ["a", "b", "c"]})
    assert isinstance(question, dict)
    assert check_answer(choose, question, {"chosen": [2, 0]}) == {"decision": "approve", "chosen": [2, 0]}
    assert check_answer(choose, question, {"decision": "reject"}) == {"decision": "reject"}
    cases: list[tuple[Any, set[str]]] = [
        ("yes", {"answer"}),
        ({}, {"decision"}),
        ({"chosen": [7]}, {"chosen[0]"}),
        ({"chosen": [0, 0]}, {"chosen[1]"}),
        ({"chosen": [0, 1, 2]}, {"chosen"}),
        ({"chosen": "x; DROP TABLE runs"}, {"chosen"}),
        ({"chosen": [True]}, {"chosen[0]"}),
        ({"decision": "maybe", "extra": 1}, {"decision", "extra"}),
        ({"decision": "reject", "chosen": [0]}, {"chosen"}),
        ({"chosen": [0], "values": {"a": 1}, "comment": 5}, {"values", "comment"}),
        ({"chosen": [0], "comment": "nul \x00 and \ud800"}, {"comment"}),
    ]
    for body, fields in cases:
        with pytest.raises(AnswerError) as caught:
            check_answer(choose, question, body)
        assert {p.field for p in caught.value.problems} == fields, (body, caught.value.problems)


def test_an_edit_answer_is_merged_over_the_prefilled_values_and_coerced() -> None:
    edit = spec(kind="edit", fields={"prompt": {"type": "string", "required": True},
                                     "steps": {"type": "integer", "minimum": 1, "maximum": 50, "default": 20}})
    question = build_question(edit, {"prompt": "a cat", "image": IMAGES[0]})
    assert isinstance(question, dict)
    assert question["values"] == {"prompt": "a cat", "steps": 20} and question["shown"] == {"image": IMAGES[0]}
    answer = check_answer(edit, question, {"values": {"steps": "30"}})
    assert answer == {"decision": "approve", "values": {"prompt": "a cat", "steps": 30}}
    with pytest.raises(AnswerError) as caught:
        check_answer(edit, question, {"values": {"steps": 500, "colour": "red"}})
    assert {p.field for p in caught.value.problems} == {"values.steps", "values.colour"}
    assert outputs_of(edit, question, answer, "acme")["values"] == {"prompt": "a cat", "steps": 30}
    assert default_answer(spec(kind="edit", onTimeout="approve", fields={"n": {"type": "integer", "required": True}}),
                          {"values": {"n": None}})["decision"] == "reject"


def test_approve_questions_need_an_explicit_decision() -> None:
    approve = spec(kind="approve")
    with pytest.raises(AnswerError):
        check_answer(approve, {"kind": "approve"}, {})
    assert check_answer(approve, {}, {"decision": "approve", "comment": " fine "}) == {"decision": "approve", "comment": "fine"}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "edit"}, "an edit question needs fields"),
        ({"kind": "approve", "fields": {"a": {"type": "string"}}}, "fields apply to an edit question"),
        ({"kind": "choose", "minChoices": 3, "maxChoices": 2}, "minChoices (3) is more than maxChoices (2)"),
        ({"kind": "choose", "timeout": "200d"}, "at most 90 days"),
        ({"kind": "choose", "timeout": "soon"}, "a duration is a number of seconds"),
        ({"kind": "edit", "fields": {"img": {"type": "image"}}}, "field 'img' is image"),
        ({"kind": "approve", "approvers": [""]}, "an approver is an account id"),
        ({"kind": "ask-me"}, "kind"),
    ],
)
def test_bad_ask_fields_are_refused_with_a_clear_problem(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        spec(**fields)
    assert message in str(caught.value)


# --- any answer at all -------------------------------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)
KEYS = st.sampled_from(["decision", "chosen", "values", "comment", "x"])


@settings(max_examples=300, deadline=None)
@given(body=JSON | st.dictionaries(KEYS, JSON, max_size=4), kind=st.sampled_from(["approve", "edit", "choose"]))
def test_any_answer_is_taken_or_refused_naming_fields_never_an_error(body: Any, kind: str) -> None:
    fields = {"fields": {"n": {"type": "integer", "minimum": 0, "maximum": 9}, "s": {"type": "string"}}} if kind == "edit" else {}
    ask = spec(kind=kind, maxChoices=2, **fields)
    question = build_question(ask, {"candidates": ["a", "b", "c"], "n": 1, "s": "x"})
    assert isinstance(question, dict)
    try:
        answer = check_answer(ask, question, body)
    except AnswerError as exc:
        assert exc.problems and all(p.field and p.message for p in exc.problems)
        return
    assert answer["decision"] in ("approve", "reject")
    outputs = outputs_of(ask, question, answer, "acme")
    assert outputs["approved"] is (answer["decision"] == "approve")
