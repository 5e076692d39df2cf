"""No run is ever stranded (issue 10, item 8).

A step with ``errorHandling: retry`` whose ComfyUI server restarted stayed ``waiting_retry`` for
good: on SQLite the advance task created in the transaction that deleted the poll task got the poll
task's id, and the worker's ``finish(<poll id>)`` then deleted the advance task. Task ids are now
never reused, a task is finished only by the claim that holds it, and a sweep repairs any run that
nothing would move.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.fakes.comfyui_server import Case, FakeComfyUI, sample
from tests.helpers.invariants import assert_no_stranded_runs
from tests.helpers.worker import running_worker, work_until_done

from toolweave.app import App
from toolweave.engine import sweep
from toolweave.engine.work import Outcome
from toolweave.model.definitions import JobDefinition, ToolDefinition
from toolweave.model.records import RunUpdate
from toolweave.model.status import GenerationStatus, TaskKind
from toolweave.services.base import ServiceError
from toolweave.settings import ComfyServer, Settings
from toolweave.store import tasks as tasks_q
from toolweave.store.db import Store, Tx


def test_a_task_id_is_never_reused_and_only_its_claim_finishes_it(store: Store) -> None:
    """The reproduction with the store alone: poll task 1 claimed; the transaction that deletes it
    creates an advance task; the poll's holder finishing its claim must leave the advance task."""
    now = time.time()
    store.run_sync(lambda tx: tasks_q.enqueue(tx, TaskKind.POLL, run_id="run_a", ref_id="gen_a", now=now))
    [poll] = store.run_sync(tasks_q.claim, "worker-1", 1, now, 30.0)

    def poll_finds_the_end(tx: Tx) -> None:
        tasks_q.delete_for(tx, "gen_a", (TaskKind.POLL,))
        tasks_q.enqueue(tx, TaskKind.ADVANCE, run_id="run_a", ref_id="run_a", now=now, at=now + 5)

    store.run_sync(poll_finds_the_end)  # (a queued task's id is not read back: it is 0 in the Task)
    [advance] = store.read_sync(lambda tx: tx.all("SELECT task_id, kind FROM tasks"))
    assert advance.kind == "advance" and advance.task_id != poll.task_id
    assert store.run_sync(tasks_q.finish, poll.claim) is False
    left = store.read_sync(lambda tx: tx.all("SELECT task_id, kind FROM tasks"))
    assert [(r.task_id, r.kind) for r in left] == [(advance.task_id, "advance")]


def test_a_claim_that_lost_its_lease_cannot_finish_or_reschedule_the_task(store: Store) -> None:
    now = time.time()
    store.run_sync(lambda tx: tasks_q.enqueue(tx, TaskKind.DISPATCH, run_id="run_a", ref_id="gen_a", now=now))
    [slow] = store.run_sync(tasks_q.claim, "worker-1", 1, now, 1.0)
    [taken_over] = store.run_sync(tasks_q.claim, "worker-2", 1, now + 2.0, 30.0)  # worker-1's lease expired
    assert taken_over.task_id == slow.task_id and taken_over.token != slow.token
    assert store.run_sync(tasks_q.finish, slow.claim) is False
    assert store.run_sync(tasks_q.reschedule, slow.claim, now + 100) is False
    assert store.run_sync(tasks_q.put_back, slow.claim, now + 100) is False
    row = store.read_sync(lambda tx: tx.one("SELECT lease_owner, attempts FROM tasks"))
    assert row is not None and (row.lease_owner, row.attempts) == ("worker-2", 2)
    assert store.run_sync(tasks_q.finish, taken_over.claim) is True
    assert store.read_sync(lambda tx: tx.all("SELECT task_id FROM tasks")) == []


# --- the run that never ended: a retry after the ComfyUI server restarted ----------------------


@pytest.fixture
async def comfy() -> AsyncIterator[FakeComfyUI]:
    fake = await FakeComfyUI().start()
    yield fake
    await fake.stop()


def invert_tool() -> ToolDefinition:
    return ToolDefinition.model_validate(
        {
            "toolId": "invert",
            "service": "comfyui",
            "inputSchema": {"color": {"type": "integer", "default": 1}},
            "outputSchema": {"image": {"type": "image"}},
            "metadata": {
                "workflow": sample("run1_invert.json")["request"]["prompt"],
                "inputMap": {"color": {"node": "1", "input": "color"}},
            },
        }
    )


async def test_a_retry_after_the_comfyui_server_restarted_runs_to_the_end(
    db_url: str, tmp_path: Path, comfy: FakeComfyUI
) -> None:
    app = App(Settings(
        home=tmp_path / "home", database_url=db_url, comfyui_servers=[ComfyServer("local", comfy.base_url, 1)],
        http_timeout_seconds=5.0, sweep_seconds=0,  # the sweep would hide the bug this test is about
    ))
    try:
        for definition in (invert_tool(), JobDefinition.model_validate({
            "jobId": "retried",
            "steps": [{"stepId": "invert", "toolId": "invert",
                       "errorHandling": {"strategy": "retry", "maxAttempts": 2, "backoffSeconds": 0.2}}],
        })):
            assert app.registry.register(definition) == []
        comfy.script(Case.success(hold=True), Case.success())
        run_id = await app.submit("retried", {}, account_id="acme")
        async with running_worker(app):
            first = (await app.get_run(run_id))["generations"][0]["generationId"]
            await comfy.wait_running(first)
            await comfy.restart()  # the held prompt is lost: the next poll says so, retryably
            # the poll of a websocket-followed prompt is 30 s away: let that time pass
            app.store.run_sync(lambda tx: tx.q("UPDATE tasks SET available_at = 0 WHERE kind = 'poll' AND lease_owner IS NULL"))
            run = await app.wait(run_id, timeout=60)
        assert run["status"] == "completed", run
        assert [g["status"] for g in run["generations"]] == ["failed", "completed"]
        assert run["generations"][0]["error"]["code"] == "lost"
        assert_no_stranded_runs(app.store)
    finally:
        await app.aclose()


# --- the invariant and the sweep ---------------------------------------------------------------


def slow_job(job_id: str = "slow", seconds: float = 0.2) -> JobDefinition:
    return JobDefinition.model_validate({"jobId": job_id, "steps": [{
        "stepId": "wait", "toolId": "test.slow_async",
        "inputMappings": [{"value": seconds, "targetInputName": "seconds"}],
    }]})


@pytest.fixture
async def app(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[App]:
    monkeypatch.setenv("TOOLWEAVE_TEST_STATE", str(tmp_path / "state"))
    monkeypatch.setenv("TOOLWEAVE_TEST_LEDGER", str(tmp_path / "ledger"))
    instance = App(Settings(home=tmp_path / "home", database_url=db_url, test_tools=True, sweep_seconds=0))
    assert instance.registry.register(slow_job()) == []
    assert instance.registry.register(slow_job("slower", 3.0)) == []
    yield instance
    await instance.aclose()


def strand(app: App, run_id: str) -> None:
    """Lose every task of the run, as the id-reuse bug did."""
    app.store.run_sync(lambda tx: tx.q("DELETE FROM tasks WHERE run_id = :id", {"id": run_id}))


async def test_a_lost_poll_is_found_by_the_invariant_and_repaired_by_the_sweep(
    app: App, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_id = await app.submit("slower", {}, account_id="acme")
    await app.make_worker(1).run_until_idle(1.0)  # submitted: a processing generation and its poll
    assert (await app.get_run(run_id))["generations"][0]["status"] == "processing"
    assert_no_stranded_runs(app.store)
    strand(app, run_id)
    assert app.store.read_sync(sweep.stranded) == [run_id]

    with caplog.at_level(logging.WARNING, logger="toolweave.sweep"):
        [repair] = await sweep.sweep(app.store, app.engine, time.time())
    assert repair.run_id == run_id and repair.requeued[0].startswith("poll gen_") and repair.moved
    assert f"run {run_id} was stranded" in caplog.text
    assert_no_stranded_runs(app.store)
    await app.make_worker(1).run_until_idle(10)
    assert (await app.get_run(run_id))["status"] == "completed"
    assert await sweep.sweep(app.store, app.engine, time.time()) == []  # nothing more to repair


async def test_a_lost_dispatch_is_made_again_as_a_recovering_one_and_never_paid_twice(
    app: App, tmp_path: Path
) -> None:
    run_id = await app.submit("slow", {}, account_id="acme")
    items, _ = await app.store.tx(app.engine.claim_tx, "doomed-worker", 1, time.time())
    [(_task, work)] = items
    await app.services["builtin"].submit(work.context(None))  # the backend has it; the record is lost
    strand(app, run_id)
    [repair] = await sweep.sweep(app.store, app.engine, time.time())
    assert repair.requeued == [f"dispatch {work.generation_id}"]
    await app.make_worker(1).run_until_idle(10)
    run = await app.get_run(run_id)
    assert run["status"] == "completed" and len(run["generations"]) == 1
    ledger = tmp_path / "ledger"
    assert (ledger / "submissions.log").read_text().split() == [work.generation_id]
    assert (ledger / "reattached.log").read_text().split() == [work.generation_id]


async def test_a_retry_that_lost_its_timer_is_woken_by_the_worker_s_own_sweep(app: App) -> None:
    """The issue's run: a step ``waiting_retry`` with an empty tasks table. A worker running with a
    short sweep period finds it and the retry goes ahead."""
    assert app.registry.register(JobDefinition.model_validate({"jobId": "flaky", "steps": [{
        "stepId": "f", "toolId": "test.fail_n_times", "inputMappings": [{"value": 1, "targetInputName": "n"}],
        "errorHandling": {"strategy": "retry", "maxAttempts": 2, "backoffSeconds": 0.1},
    }]})) == []
    run_id = await app.submit("flaky", {}, account_id="acme")
    items, _ = await app.store.tx(app.engine.claim_tx, "w", 1, time.time())
    [(_task, work)] = items
    with pytest.raises(ServiceError) as failure:  # the first attempt fails; its retry is scheduled
        await app.services["builtin"].submit(work.context(None))
    update = RunUpdate(status=GenerationStatus.FAILED, error=failure.value.info())
    await app.store.tx(app.engine.record_submissions_tx, [Outcome(work, None, update, 0, 0, None)], time.time(), None)
    assert (await app.get_run(run_id))["stepStatuses"][0]["status"] == "waiting_retry"
    strand(app, run_id)
    assert app.store.read_sync(sweep.stranded) == [run_id]
    run = await work_until_done(app, run_id, slots=1, sweep_seconds=0.2)
    assert run["status"] == "completed"
    assert run["stepStatuses"][0]["attempt"] == 2
