"""Fork and replay on real stores: a new run of a finished run's version that reuses every step it
need not run again; another account's run, a running run, an unknown step and bad inputs are refused."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from tests.integration.test_engine import app, job, register, run_all, steps_by_id

from toolweave.app import App, BadRequest, Conflict, NotFound
from toolweave.inputs import InputError

__all__ = ["app"]  # the fixture


def two_branches(version: str = "1") -> Any:
    """base(value) → double ; note_step(note) alone ; flaky(n) after base."""
    return job({
        "jobId": "branches",
        "version": version,
        "inputSchema": {"value": {"type": "integer", "default": 1}, "note": {"type": "string", "default": "a"},
                        "n": {"type": "integer", "default": 0}},
        "outputSchema": {
            "doubled": {"type": "integer", "sourceStepId": "double", "sourceOutputName": "value"},
            "note": {"type": "string", "sourceStepId": "noted", "sourceOutputName": "note"},
        },
        "steps": [
            {"stepId": "base", "toolId": "test.instant", "inputMappings": [{"sourceJobInput": "value", "targetInputName": "value"}]},
            {"stepId": "double", "toolId": "test.instant",
             "inputMappings": [{"sourceStepId": "base", "sourceOutputName": "value", "targetInputName": "value"}]},
            {"stepId": "noted", "toolId": "test.instant",
             "inputMappings": [{"sourceJobInput": "note", "targetInputName": "note"}]},
            {"stepId": "flaky", "toolId": "test.fail_n_times", "dependencies": ["base"],
             "inputMappings": [{"sourceJobInput": "n", "targetInputName": "n"},
                               {"value": False, "targetInputName": "retryable"}]},
        ],
    })


def generated_steps(run: dict[str, Any]) -> list[str]:
    return sorted(g["stepId"] for g in run["generations"])


async def test_fork_from_a_step_reuses_what_is_upstream_and_links_to_the_origin(app: App) -> None:
    register(app, two_branches())
    origin_id = await app.submit("branches", {"value": 5}, account_id="acme")
    await run_all(app)
    origin = await app.get_run(origin_id)
    assert origin["status"] == "completed"

    fork_id = await app.fork(origin_id, "acme", from_step="double")
    await run_all(app)
    fork = await app.get_run(fork_id, "acme")
    assert fork["status"] == "completed" and fork["forkedFromRunId"] == origin_id and fork["forkedFromStep"] == "double"
    assert fork["version"] == origin["version"] and fork["finalOutputs"] == origin["finalOutputs"]
    assert generated_steps(fork) == ["double"]  # only the step asked for ran; nothing else was paid for again
    steps = steps_by_id(fork)
    assert {sid: s["reusedFromRunId"] for sid, s in steps.items()} == {
        "base": origin_id, "double": None, "noted": origin_id, "flaky": origin_id,
    }
    assert steps["base"]["outputs"] == steps_by_id(origin)["base"]["outputs"]
    types = [e["type"] for e in await app.events(fork_id)]
    assert types[:2] == ["run.created", "run.forked"] and types[-1] == "run.completed"

    # a fork of the fork points reused steps at the run where they actually ran
    again_id = await app.fork(fork_id, "acme", from_step="noted")
    await run_all(app)
    again = steps_by_id(await app.get_run(again_id))
    assert again["base"]["reusedFromRunId"] == origin_id and again["double"]["reusedFromRunId"] == fork_id


async def test_a_changed_input_runs_only_its_readers_again(app: App) -> None:
    register(app, two_branches())
    origin_id = await app.submit("branches", {"value": 5, "note": "first"}, account_id="acme")
    await run_all(app)
    fork_id = await app.fork(origin_id, "acme", inputs={"note": "second"})
    await run_all(app)
    fork = await app.get_run(fork_id)
    assert fork["status"] == "completed" and fork["finalOutputs"] == {"doubled": 7, "note": "second"}
    assert fork["jobInputs"]["note"] == "second" and fork["jobInputs"]["value"] == 5
    assert generated_steps(fork) == ["noted"]
    # text from the command line is coerced like any input
    coerced_id = await app.fork(origin_id, "acme", inputs={"value": "10"})
    await run_all(app)
    coerced = await app.get_run(coerced_id)
    assert coerced["finalOutputs"]["doubled"] == 12 and generated_steps(coerced) == ["base", "double", "flaky"]


async def test_a_failed_run_forked_with_a_fixed_input_runs_the_failed_step_and_reuses_the_rest(app: App) -> None:
    register(app, two_branches())
    origin_id = await app.submit("branches", {"n": 5}, account_id="acme")
    await run_all(app)
    origin = await app.get_run(origin_id)
    assert origin["status"] == "failed"
    fork_id = await app.fork(origin_id, "acme", inputs={"n": 0})
    await run_all(app)
    fork = await app.get_run(fork_id)
    assert fork["status"] == "completed"
    ran = generated_steps(fork)
    # flaky reads n; steps the origin never finished (cancelled when flaky failed) run too
    reused = {sid for sid, s in steps_by_id(fork).items() if s["reusedFromRunId"] == origin_id}
    assert "flaky" in ran and "base" in reused and not set(ran) & reused
    assert {sid for sid, s in steps_by_id(origin).items() if s["status"] == "succeeded"} <= reused | set(ran)


async def test_a_fork_runs_the_version_the_origin_pinned(app: App) -> None:
    register(app, two_branches("1"))
    origin_id = await app.submit("branches", {}, account_id="acme")
    await run_all(app)
    v2 = two_branches("2")
    v2.steps.pop(2)  # version 2 has no "noted" step
    v2.output_schema.pop(1)
    register(app, v2)
    fork_id = await app.fork(origin_id, "acme", from_step="noted")
    await run_all(app)
    fork = await app.get_run(fork_id)
    assert fork["version"] == "1" and fork["status"] == "completed" and generated_steps(fork) == ["noted"]


async def test_forks_that_cannot_be_are_refused_and_create_nothing(app: App, tmp_path: Path) -> None:
    register(app, two_branches())
    done_id = await app.submit("branches", {}, account_id="acme")
    await run_all(app)
    gate = tmp_path / "gate"
    slow_id = await app.submit("test.slow_async", {"seconds": 600, "gate": str(gate)}, account_id="acme")
    before = (await app.list_runs(None)).items

    with pytest.raises(NotFound):
        await app.fork(done_id, "mallory", from_step="base")
    with pytest.raises(NotFound):
        await app.fork("run_nothing", "acme", from_step="base")
    with pytest.raises(BadRequest) as unknown:
        await app.fork(done_id, "acme", from_step="nope")
    assert unknown.value.field == "fromStep" and "base, double, noted, flaky" in unknown.value.message
    with pytest.raises(Conflict, match="nothing in it would run again"):
        await app.fork(done_id, "acme")
    with pytest.raises(Conflict, match="nothing in it would run again"):
        await app.fork(done_id, "acme", inputs={"note": "a"})  # the same value: nothing changed
    with pytest.raises(InputError) as bad:
        await app.fork(done_id, "acme", inputs={"value": "many", "colour": "red"})
    assert {p.field for p in bad.value.problems} == {"value", "colour"}
    with pytest.raises(Conflict, match="still"):
        await app.fork(slow_id, "acme", from_step="test.slow_async")
    assert (await app.list_runs(None)).items == before
    await app.cancel(slow_id)
    await run_all(app)


async def test_two_forks_of_one_run_at_once_are_two_runs(app: App) -> None:
    register(app, two_branches())
    origin_id = await app.submit("branches", {}, account_id="acme")
    await run_all(app)
    first, second = await asyncio.gather(
        app.fork(origin_id, "acme", from_step="double"), app.fork(origin_id, "acme", from_step="double")
    )
    await run_all(app)
    assert first != second
    for run_id in (first, second):
        run = await app.get_run(run_id)
        assert run["status"] == "completed" and generated_steps(run) == ["double"]
    origin = await app.get_run(origin_id)
    assert origin["status"] == "completed" and len(origin["generations"]) == 4  # the origin is left as it was
