"""Two workers, each with its own store connections (as two processes have), recording the branches
of the same fan-out runs at once: on PostgreSQL their transactions lock the same run rows, with the
batch's writes sent as one statement per table (``store/multirow.py``) and the claim and the
runs it starts in one statement each. No transition may be lost or made twice: every step runs
once, every join starts once after all its branches, every run completes, nothing is stranded."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.helpers.invariants import assert_no_stranded_runs

from toolweave.app import App
from toolweave.model.definitions import JobDefinition
from toolweave.settings import Settings

BRANCHES = 6
RUNS = 40


def _fan_out() -> JobDefinition:
    steps: list[dict[str, Any]] = [
        {"stepId": "root", "toolId": "test.instant", "inputMappings": [{"sourceJobInput": "value", "targetInputName": "value"}]}
    ]
    steps += [
        {"stepId": f"b{i}", "toolId": "test.instant",
         "inputMappings": [{"sourceStepId": "root", "sourceOutputName": "value", "targetInputName": "value"}]}
        for i in range(BRANCHES)
    ]
    steps.append({
        "stepId": "join", "toolId": "test.instant", "dependencies": [f"b{i}" for i in range(BRANCHES)],
        "inputMappings": [{"sourceStepId": f"b{BRANCHES - 1}", "sourceOutputName": "value", "targetInputName": "value"}],
    })
    return JobDefinition.model_validate({
        "jobId": "wide", "inputSchema": {"value": {"type": "integer", "default": 0}},
        "outputSchema": {"value": {"type": "integer", "sourceStepId": "join", "sourceOutputName": "value"}},
        "steps": steps,
    })


@pytest.fixture
async def apps(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[list[App]]:
    monkeypatch.setenv("TOOLWEAVE_TEST_STATE", str(tmp_path / "state"))
    made = [App(Settings(home=tmp_path / "home", database_url=db_url, test_tools=True)) for _ in range(2)]
    for app in made:
        assert app.registry.register(_fan_out()) == []
    yield made
    for app in made:
        await app.aclose()


async def test_two_workers_recording_branches_of_the_same_runs_lose_no_transition(apps: list[App]) -> None:
    first = apps[0]
    submitted = await first.submit_many("wide", [{"value": i} for i in range(RUNS)], account_id="acme")
    run_ids = [s.run_id for s in submitted]
    assert all(run_ids)
    # few slots each: a run's branches beyond a worker's free slots are queued, and the other
    # worker claims them, so both record branches of the same runs
    workers = [app.make_worker(3, idle_poll_seconds=0.05) for app in apps]
    runners = [asyncio.create_task(w.run()) for w in workers]
    try:
        runs = [await first.wait(run_id, timeout=120) for run_id in run_ids]
    finally:
        for w in workers:
            w.stop()
        await asyncio.gather(*runners)
    assert {r["status"] for r in runs} == {"completed"}
    assert [r["finalOutputs"]["value"] for r in runs] == [i + 3 for i in range(RUNS)]  # each step adds one

    def rows(tx: Any) -> dict[str, Any]:
        return {
            "generations": tx.all("SELECT run_id, step_id, status FROM generations"),
            "events": tx.all("SELECT run_id, type, step_id, event_id FROM events ORDER BY event_id"),
            "tasks": tx.all("SELECT task_id FROM tasks"),
        }

    found = first.store.read_sync(rows)
    per_step = Counter((g.run_id, g.step_id) for g in found["generations"])
    assert set(per_step.values()) == {1}, "a step ran twice"
    assert len(per_step) == RUNS * (BRANCHES + 2)
    assert {g.status for g in found["generations"]} == {"completed"}
    assert found["tasks"] == []
    for run_id in run_ids:
        events = [e for e in found["events"] if e.run_id == run_id]
        kinds = [e.type for e in events]
        assert kinds.count("step.succeeded") == BRANCHES + 2
        assert kinds.count("run.started") == 1 and kinds.count("run.completed") == 1
        assert kinds[-1] == "run.completed"
        join_started = next(i for i, e in enumerate(events) if e.type == "step.started" and e.step_id == "join")
        branch_done = [i for i, e in enumerate(events) if e.type == "step.succeeded" and e.step_id.startswith("b")]
        assert max(branch_done) < join_started
    assert_no_stranded_runs(first.store)
