"""Which steps a fork runs again (pure)."""

from __future__ import annotations

from typing import Any

from toolweave.engine.replay import job_inputs_read, steps_to_run_again
from toolweave.model.definitions import JobDefinition, Step

OK = ("succeeded", False)


def diamond() -> JobDefinition:
    """a(prompt) → b(a, style) → d ; a → c(template of job.size) → d ; e(note) alone; f(condition on job.flag)."""
    return JobDefinition.model_validate({
        "jobId": "diamond",
        "inputSchema": {"prompt": {"type": "string"}, "style": {"type": "string"}, "size": {"type": "integer"},
                        "note": {"type": "string"}, "flag": {"type": "boolean"}},
        "steps": [
            {"stepId": "a", "toolId": "t", "inputMappings": [{"sourceJobInput": "prompt", "targetInputName": "x"}]},
            {"stepId": "b", "toolId": "t", "inputMappings": [
                {"sourceStepId": "a", "sourceOutputName": "y", "targetInputName": "x"},
                {"sourceJobInput": "style", "targetInputName": "z"}]},
            {"stepId": "c", "toolId": "t", "dependencies": ["a"],
             "inputMappings": [{"template": "{{ job.size * 2 }}", "targetInputName": "x"}]},
            {"stepId": "d", "toolId": "t", "inputMappings": [
                {"sourceStepId": "b", "sourceOutputName": "y", "targetInputName": "x"},
                {"sourceStepId": "c", "sourceOutputName": "y", "targetInputName": "z"}]},
            {"stepId": "e", "toolId": "t", "inputMappings": [{"sourceJobInput": "note", "targetInputName": "x"}]},
            {"stepId": "f", "toolId": "t", "condition": "job.flag", "inputMappings": [{"value": 1, "targetInputName": "x"}]},
        ],
    })


def all_ok(job: JobDefinition, **overrides: tuple[str, bool]) -> dict[str, tuple[str, bool]]:
    return {s.step_id: overrides.get(s.step_id, OK) for s in job.steps}


def again(job: JobDefinition, outcomes: dict[str, tuple[str, bool]], **kw: Any) -> list[str]:
    kw.setdefault("from_step", None)
    kw.setdefault("changed_inputs", [])
    return sorted(steps_to_run_again(job, outcomes, **kw))


def test_from_a_step_runs_it_and_everything_downstream() -> None:
    job = diamond()
    assert again(job, all_ok(job), from_step="a") == ["a", "b", "c", "d"]
    assert again(job, all_ok(job), from_step="b") == ["b", "d"]
    assert again(job, all_ok(job), from_step="d") == ["d"]
    assert again(job, all_ok(job), from_step="e") == ["e"]


def test_a_changed_input_runs_its_readers_and_their_descendants() -> None:
    job = diamond()
    assert again(job, all_ok(job), changed_inputs=["style"]) == ["b", "d"]
    assert again(job, all_ok(job), changed_inputs=["size"]) == ["c", "d"]  # read by a template
    assert again(job, all_ok(job), changed_inputs=["flag"]) == ["f"]  # read by a condition
    assert again(job, all_ok(job), changed_inputs=["note"], from_step="b") == ["b", "d", "e"]
    assert again(job, all_ok(job)) == []  # nothing asked: nothing runs again


def test_steps_that_did_not_end_well_run_again_and_skips_by_condition_are_kept() -> None:
    job = diamond()
    failed = all_ok(job, b=("failed", False), d=("cancelled", False))
    assert again(job, failed) == ["b", "d"]
    skipped = all_ok(job, f=("skipped", False))
    assert again(job, skipped) == []
    assert again(job, all_ok(job, c=("skipped", True))) == ["c", "d"]  # an error skipped past
    assert again(job, {"a": OK}) == ["b", "c", "d", "e", "f"]  # no outcome recorded: run


def test_a_template_reading_job_dynamically_counts_as_reading_every_input() -> None:
    step = Step.model_validate({"stepId": "s", "toolId": "t", "inputMappings": [
        {"template": "{{ job[job.which] }}", "targetInputName": "x"}]})
    assert job_inputs_read(step) is None
    plain = Step.model_validate({"stepId": "s", "toolId": "t", "inputMappings": [
        {"template": "{{ job.a }} {{ job['b'] }}", "targetInputName": "x"}, {"value": 3, "targetInputName": "y"}]})
    assert job_inputs_read(plain) == {"a", "b"}
