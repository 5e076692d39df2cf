"""Crash test: worker processes killed with SIGKILL at random moments lose nothing.

200 runs of a job whose steps wait on an asynchronous backend (``test.slow_async``, which accepts
client-chosen ids and writes every new submission to a ledger), two of them with a condition or a
template evaluated in the workers' evaluator processes (``evaluate`` tasks), are worked by two real
``toolweave worker`` processes; one of them is killed with SIGKILL and restarted at random
moments, at least 20 times. Afterwards:

- every run is terminal (and completed: nothing in the job fails on its own);
- every succeeded step's outputs are intact (the values each step computes are checked);
- no succeeded step was executed again (one generation and one start per step);
- no generation was submitted twice to the backend (the ledger has each generation once);
- no run was ever stranded: after every kill, and at the end, every unfinished run has something
  that will move it (``engine.sweep.stranded``). The workers' sweep is off, so that it cannot
  repair (and hide) a run the engine stranded.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from tests.helpers.invariants import assert_no_stranded_runs

from toolweave.app import App
from toolweave.settings import Settings

RUNS = 200
KILLS = 20
LEASE_SECONDS = 2.0

JOB = {
    "jobId": "crashy",
    "inputSchema": {"value": {"type": "integer", "required": True}},
    "outputSchema": {"value": {"type": "integer", "sourceStepId": "last", "sourceOutputName": "value"}},
    "steps": [
        {"stepId": "wait1", "toolId": "test.slow_async", "inputMappings": [{"value": 1.5, "targetInputName": "seconds"}]},
        # a condition and a template that loop: evaluated outside the transaction (``evaluate`` tasks)
        {"stepId": "add1", "toolId": "test.instant", "dependencies": ["wait1"],
         "condition": "[job.value].all(v, v >= 0)",
         "inputMappings": [{"sourceJobInput": "value", "targetInputName": "value"}]},
        {"stepId": "wait2", "toolId": "test.slow_async", "dependencies": ["add1"],
         "inputMappings": [{"value": 1.5, "targetInputName": "seconds"}]},
        {"stepId": "last", "toolId": "test.instant", "dependencies": ["wait2", "add1"],
         "inputMappings": [{"template": "{% for v in [steps.add1.outputs.value] %}{{ v }}{% endfor %}",
                            "targetInputName": "value"}]},
    ],
}


class WorkerProcess:
    """A real ``toolweave worker`` process with its own log."""

    count = 0

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        WorkerProcess.count += 1
        self.log = logs / f"worker-{WorkerProcess.count}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "toolweave.cli", "worker", "--slots", "4"],
            env=env,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.time() + timeout
        while "Ctrl-C stops it" not in self.log.read_text(errors="replace"):  # the ready line
            assert self.proc.poll() is None, self.log.read_text()
            assert time.time() < deadline, "worker did not start"
            time.sleep(0.05)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def unfinished(app: App) -> int:
    row = app.store.read_sync(
        lambda tx: tx.one("SELECT COUNT(*) AS n FROM runs WHERE status IN ('queued', 'running')")
    )
    return int(row.n)


@pytest.mark.slow
async def test_killed_workers_lose_nothing_and_pay_nothing_twice(db_url: str, tmp_path: Path) -> None:
    definitions = tmp_path / "defs"
    definitions.mkdir()
    (definitions / "crashy.yaml").write_text(yaml.safe_dump(JOB))
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    env = {
        **os.environ,
        "TOOLWEAVE_HOME": str(tmp_path / "home"),
        "TOOLWEAVE_DATABASE_URL": db_url,
        "TOOLWEAVE_DEFINITIONS": str(definitions),
        "TOOLWEAVE_TEST_TOOLS": "1",
        "TOOLWEAVE_TEST_LEDGER": str(ledger),
        "TOOLWEAVE_TEST_STATE": str(tmp_path / "state"),
        "TOOLWEAVE_LEASE_SECONDS": str(LEASE_SECONDS),
        "TOOLWEAVE_SWEEP_SECONDS": "0",
    }
    app = App(Settings(home=tmp_path / "home", database_url=db_url, definitions=[definitions], test_tools=True))
    try:
        run_ids: list[str] = []

        async def submit(count: int) -> None:
            for _ in range(min(count, RUNS - len(run_ids))):
                run_ids.append(await app.submit("crashy", {"value": len(run_ids)}, account_id="crash"))

        await submit(RUNS // (KILLS + 1))
        logs = tmp_path / "logs"
        logs.mkdir()
        rng = random.Random(20261129)
        workers = [WorkerProcess(env, logs), WorkerProcess(env, logs)]
        kills_with_work_in_flight = 0
        deadline = time.time() + 300
        try:
            for worker in workers:
                worker.wait_ready()
            # kill while there is work in flight: each victim has been working for a random while
            # new runs keep arriving while workers die, so every kill lands on work in flight
            while kills_with_work_in_flight < KILLS and time.time() < deadline:
                await submit(RUNS // (KILLS + 1))
                await asyncio.sleep(rng.uniform(0.3, 1.5))
                if not unfinished(app):
                    continue
                victim = rng.randrange(len(workers))
                workers[victim].kill()
                assert_no_stranded_runs(app.store)
                kills_with_work_in_flight += 1
                workers[victim] = WorkerProcess(env, logs)
                workers[victim].wait_ready()
            await submit(RUNS)
            while unfinished(app) and time.time() < deadline:
                await asyncio.sleep(0.25)
        finally:
            for worker in workers:
                worker.stop()
        reattached = ledger / "reattached.log"
        print(
            f"kills with work in flight: {kills_with_work_in_flight}; "
            f"re-attached submissions: {len(reattached.read_text().split()) if reattached.exists() else 0}"
        )
        assert kills_with_work_in_flight >= KILLS
        assert len(run_ids) == RUNS
        assert_no_stranded_runs(app.store)

        runs = [await app.get_run(run_id) for run_id in run_ids]
        statuses = Counter(r["status"] for r in runs)
        assert statuses == {"completed": RUNS}, (statuses, [r["error"] for r in runs if r["status"] == "failed"][:3])

        submitted = (ledger / "submissions.log").read_text().split()
        duplicates = [g for g, n in Counter(submitted).items() if n > 1]
        assert duplicates == [], f"generations submitted twice: {duplicates[:5]}"

        for i, run in enumerate(runs):
            steps = {s["stepId"]: s for s in run["stepStatuses"]}
            assert all(s["status"] == "succeeded" for s in steps.values())
            # outputs intact: each step's recorded outputs are the ones its generation produced
            assert steps["add1"]["outputs"]["value"] == i + 1
            assert steps["last"]["outputs"]["value"] == i + 2
            assert run["finalOutputs"] == {"value": i + 2}
            # nothing that succeeded ran again: one generation per step, started once
            assert all(len(s["generationIds"]) == 1 for s in steps.values()), steps
            generations = {g["generationId"]: g for g in run["generations"]}
            assert len(generations) == 4 and all(g["status"] == "completed" for g in generations.values())
            for step in steps.values():
                assert generations[step["generationId"]]["outputs"] == step["outputs"]
            starts = Counter(e["stepId"] for e in await app.events(run["jobRunId"]) if e["type"] == "step.started")
            assert set(starts.values()) == {1}, starts
        async_generations = {
            g["generationId"] for run in runs for g in run["generations"] if g["toolId"] == "test.slow_async"
        }
        assert set(submitted) == async_generations
    finally:
        await app.aclose()
