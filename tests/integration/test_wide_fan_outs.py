"""Fan-outs and fan-ins on real stores (SQLite and PostgreSQL) with a real worker: the planner
decides only the steps a transition touches (``RunView.touched``), so these check that no
transition forgets a step — every branch recorded, the join started once with every branch's
output, skips and conditions after a skipped branch, a retried branch, branches reported by
polls (one transition each) as well as by group commit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.helpers.invariants import assert_no_stranded_runs

from toolweave.app import App
from toolweave.model.definitions import JobDefinition
from toolweave.settings import Settings


@pytest.fixture
async def app(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[App]:
    monkeypatch.setenv("TOOLWEAVE_TEST_STATE", str(tmp_path / "state"))
    monkeypatch.setenv("TOOLWEAVE_TEST_LEDGER", str(tmp_path / "ledger"))
    instance = App(Settings(home=tmp_path / "home", database_url=db_url, test_tools=True))
    yield instance
    await instance.aclose()


def register(app: App, data: dict[str, Any]) -> None:
    problems = app.registry.register(JobDefinition.model_validate(data))
    assert problems == [], [str(p) for p in problems]


async def run_all(app: App, timeout: float = 60.0) -> None:
    worker = app.make_worker(8)
    await worker.run_until_idle(timeout)


def by_id(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["stepId"]: s for s in run["stepStatuses"]}


def join_of(width: int, output: str = "value") -> dict[str, Any]:
    """A join that reads every branch's output (a template) and passes it on as its note."""
    note = ",".join(f"{{{{ steps.b{i}.outputs.{output} }}}}" for i in range(width))
    return {"stepId": "join", "toolId": "test.instant", "dependencies": [f"b{i}" for i in range(width)],
            "inputMappings": [{"value": 0, "targetInputName": "value"}, {"template": note, "targetInputName": "note"}]}


async def test_a_256_wide_fan_out_records_every_branch_and_joins_once(app: App) -> None:
    width = 256
    register(app, {
        "jobId": "wide",
        "steps": [
            {"stepId": "root", "toolId": "test.instant", "inputMappings": [{"value": 0, "targetInputName": "value"}]},
            *({"stepId": f"b{i}", "toolId": "test.instant", "dependencies": ["root"],
               "inputMappings": [{"value": i, "targetInputName": "value"}]} for i in range(width)),
            join_of(width),
        ],
    })
    run_ids = [await app.submit("wide", {}, account_id="acme") for _ in range(2)]
    await run_all(app)
    for run_id in run_ids:
        run = await app.get_run(run_id)
        assert run["status"] == "completed", run["error"]
        steps = by_id(run)
        assert all(steps[f"b{i}"]["status"] == "succeeded" for i in range(width))
        assert [steps[f"b{i}"]["outputs"]["value"] for i in range(width)] == [i + 1 for i in range(width)]
        join = steps["join"]
        assert join["status"] == "succeeded" and join["attempt"] == 1
        assert join["startedAt"] >= max(steps[f"b{i}"]["finishedAt"] for i in range(width))
        assert len(run["generations"]) == width + 2 and all(g["status"] == "completed" for g in run["generations"])
        assert join["outputs"]["note"] == ",".join(str(i + 1) for i in range(width))
        types = [e["type"] for e in await app.events(run_id)]
        assert types.count("step.started") == width + 2 and types.count("step.succeeded") == width + 2
        assert types[-1] == "run.completed"
    assert_no_stranded_runs(app.store)


@pytest.mark.parametrize("width", [5, 10])  # 10: more steps than a transition reads all of (FEW_STEPS)
async def test_branches_finishing_in_reverse_order_with_one_retried_join_with_every_output(app: App, width: int) -> None:
    """The branches sleep so that they end last-first; one fails twice and is retried: the join
    waits for it and starts once, with every branch's output."""
    branches = [
        {"stepId": f"b{i}", "toolId": "test.sleep", "dependencies": ["root"],
         "inputMappings": [{"value": 0.02 * (width - i), "targetInputName": "seconds"}]}
        for i in range(width)
    ]
    branches[2] = {"stepId": "b2", "toolId": "test.fail_n_times", "dependencies": ["root"],
                   "inputMappings": [{"value": 2, "targetInputName": "n"}, {"value": "b2", "targetInputName": "key"}],
                   "errorHandling": {"strategy": "retry", "maxAttempts": 3, "backoffSeconds": 0.05}}
    join = join_of(width, output="slept")
    join["inputMappings"][1]["template"] = join["inputMappings"][1]["template"].replace("b2.outputs.slept", "b2.outputs.attempts")
    register(app, {
        "jobId": "fan_retry",
        "steps": [{"stepId": "root", "toolId": "test.instant", "inputMappings": [{"value": 0, "targetInputName": "value"}]},
                  *branches, join],
    })
    run_id = await app.submit("fan_retry", {}, account_id="acme")
    await run_all(app)
    run = await app.get_run(run_id)
    assert run["status"] == "completed", run["error"]
    steps = by_id(run)
    assert steps["b2"]["attempt"] == 3 and steps["join"]["attempt"] == 1
    assert steps["join"]["startedAt"] >= max(steps[f"b{i}"]["finishedAt"] for i in range(width))
    note = by_id(run)["join"]["outputs"]["note"]
    parts = note.split(",")
    assert len(parts) == width and parts[2] == "3" and all(float(p) > 0 for p in parts)
    types = [e["type"] for e in await app.events(run_id)]
    assert types.count("step.retry_scheduled") == 2
    assert [e["stepId"] for e in await app.events(run_id) if e["type"] == "step.started"].count("join") == 1
    assert_no_stranded_runs(app.store)


@pytest.mark.parametrize("others", [0, 6])  # 6: more steps than a transition reads all of (FEW_STEPS)
async def test_a_skipped_branch_skips_what_maps_it_and_a_condition_after_it_sees_the_skip(app: App, others: int) -> None:
    """(``others``: more branches of the root, which nothing reads: with them a transition reads
    the rows of the steps it touches and of those after them, and every other step's status.)"""
    padding = [{"stepId": f"p{i}", "toolId": "test.instant", "dependencies": ["root"],
                "inputMappings": [{"value": i, "targetInputName": "value"}]} for i in range(others)]
    register(app, {
        "jobId": "fan_skip",
        "steps": [
            {"stepId": "root", "toolId": "test.instant", "inputMappings": [{"value": 0, "targetInputName": "value"}]},
            {"stepId": "broken", "toolId": "test.fail_n_times", "dependencies": ["root"],
             "inputMappings": [{"value": 5, "targetInputName": "n"}, {"value": False, "targetInputName": "retryable"}],
             "errorHandling": {"strategy": "skip"}},
            {"stepId": "ok", "toolId": "test.sleep", "dependencies": ["root"],
             "inputMappings": [{"value": 0.05, "targetInputName": "seconds"}]},
            {"stepId": "uses_broken", "toolId": "test.instant",
             "inputMappings": [{"sourceStepId": "broken", "sourceOutputName": "attempts", "targetInputName": "value"}]},
            {"stepId": "after_uses_broken", "toolId": "test.instant",
             "inputMappings": [{"sourceStepId": "uses_broken", "sourceOutputName": "value", "targetInputName": "value"}]},
            {"stepId": "if_skipped", "toolId": "test.instant", "dependencies": ["broken", "ok"],
             "condition": "steps.broken.status == 'skipped'", "inputMappings": [{"value": 7, "targetInputName": "value"}]},
            {"stepId": "if_succeeded", "toolId": "test.instant", "dependencies": ["broken"],
             "condition": "steps.broken.status == 'succeeded'", "inputMappings": [{"value": 7, "targetInputName": "value"}]},
            *padding,
        ],
    })
    run_id = await app.submit("fan_skip", {}, account_id="acme")
    await run_all(app)
    run = await app.get_run(run_id)
    statuses = {sid: s["status"] for sid, s in by_id(run).items()}
    assert statuses == {"root": "succeeded", "broken": "skipped", "ok": "succeeded", "uses_broken": "skipped",
                        "after_uses_broken": "skipped", "if_skipped": "succeeded", "if_succeeded": "skipped",
                        **{f"p{i}": "succeeded" for i in range(others)}}
    assert run["status"] == "partially_completed"
    assert_no_stranded_runs(app.store)


@pytest.mark.parametrize("width", [4, 10])
async def test_branches_reported_by_polls_one_at_a_time_join_once(app: App, width: int) -> None:
    """Asynchronous branches end by their polls, each its own transition of the run."""
    register(app, {
        "jobId": "fan_async",
        "steps": [
            {"stepId": "root", "toolId": "test.instant", "inputMappings": [{"value": 0, "targetInputName": "value"}]},
            *({"stepId": f"b{i}", "toolId": "test.slow_async", "dependencies": ["root"],
               "inputMappings": [{"value": 0.05 * i, "targetInputName": "seconds"},
                                 {"value": f"n{i}", "targetInputName": "note"}]} for i in range(width)),
            join_of(width, output="note"),
        ],
    })
    run_id = await app.submit("fan_async", {}, account_id="acme")
    await run_all(app)
    run = await app.get_run(run_id)
    assert run["status"] == "completed", run["error"]
    note = by_id(run)["join"]["outputs"]["note"]
    assert note == ",".join(f"n{i}" for i in range(width))
    assert sum(1 for g in run["generations"] if g["stepId"] == "join") == 1
    assert_no_stranded_runs(app.store)
