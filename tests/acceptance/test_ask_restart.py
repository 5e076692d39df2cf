"""A run waiting for a person survives its worker: real ``toolweave worker`` processes, killed with
SIGKILL while runs wait. The question is asked once, no worker holds the run while it waits, an
answer given with no worker alive is taken up by the next one, and a timeout that falls due while
no worker runs answers with its default when one starts again (on both stores)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import yaml
from tests.acceptance.test_crash import WorkerProcess
from tests.helpers.invariants import assert_no_stranded_runs

from toolweave.app import App
from toolweave.settings import Settings


def job(job_id: str, **ask: object) -> dict[str, object]:
    return {
        "jobId": job_id,
        "steps": [
            {"stepId": "gen", "toolId": "test.instant", "map": {"over": {"value": [10, 20, 30]}},
             "inputMappings": [{"sourceItem": True, "targetInputName": "value"}]},
            {"stepId": "pick", "ask": {"kind": "choose", "question": "Which?", **ask},
             "inputMappings": [{"sourceStepId": "gen", "sourceOutputName": "value", "targetInputName": "candidates"}]},
            {"stepId": "after", "toolId": "test.instant",
             "inputMappings": [{"sourceStepId": "pick", "sourceOutputName": "chosen", "targetInputName": "value"}]},
        ],
    }


async def until(app: App, run_id: str, status: str, timeout: float = 60.0) -> dict[str, object]:
    deadline = time.time() + timeout
    while True:
        run = await app.get_run(run_id)
        if run["status"] == status:
            return run
        assert time.time() < deadline, f"run {run_id} is {run['status']}, not {status}"
        await asyncio.sleep(0.1)


async def test_waiting_runs_survive_killed_workers(db_url: str, tmp_path: Path) -> None:
    definitions = tmp_path / "defs"
    definitions.mkdir()
    (definitions / "pick.yaml").write_text(yaml.safe_dump(job("pick_slow", timeout="1h")))
    (definitions / "quick.yaml").write_text(yaml.safe_dump(job("pick_quick", timeout="3s", onTimeout="approve")))
    env = {
        **os.environ,
        "TOOLWEAVE_HOME": str(tmp_path / "home"),
        "TOOLWEAVE_DATABASE_URL": db_url,
        "TOOLWEAVE_DEFINITIONS": str(definitions),
        "TOOLWEAVE_TEST_TOOLS": "1",
        "TOOLWEAVE_SWEEP_SECONDS": "0",
    }
    logs = tmp_path / "logs"
    logs.mkdir()
    app = App(Settings(home=tmp_path / "home", database_url=db_url, definitions=[definitions], test_tools=True))
    worker = WorkerProcess(env, logs)
    try:
        worker.wait_ready()
        slow = await app.submit("pick_slow", {}, account_id="acme")
        quick = await app.submit("pick_quick", {}, account_id="acme")
        await until(app, slow, "waiting_input")
        await until(app, quick, "waiting_input")
        worker.kill()  # no worker now; the runs wait as rows
        leased = await app.store.read(lambda tx: tx.all("SELECT task_id FROM tasks WHERE lease_owner IS NOT NULL"))
        assert leased == []
        assert_no_stranded_runs(app.store)
        await app.answer(slow, "pick", "acme", {"chosen": [1]})  # answered while no worker runs
        await asyncio.sleep(3.5)  # the quick one's timeout falls due while no worker runs
        assert (await app.get_run(quick))["status"] == "waiting_input"

        worker = WorkerProcess(env, logs)
        worker.wait_ready()
        done = await until(app, slow, "completed")
        assert done["stepStatuses"][2]["outputs"]["value"] == 22  # the choice (21) fed the next step
        timed_out = await until(app, quick, "completed")
        assert timed_out["stepStatuses"][1]["outputs"]["timedOut"] is True
        assert timed_out["stepStatuses"][2]["outputs"]["value"] == 12  # the first candidate
        for run_id in (slow, quick):
            types = [e["type"] for e in await app.events(run_id)]
            assert types.count("step.waiting_input") == 1, types  # asked once, whatever the kills
    finally:
        worker.stop()
        await app.aclose()
