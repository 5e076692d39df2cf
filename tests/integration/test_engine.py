"""The engine end to end on real stores (SQLite and PostgreSQL) with a real worker and real tools."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from tests.helpers.invariants import assert_no_stranded_runs
from tests.helpers.worker import work_until_done

from toolweave import presence
from toolweave.app import App, Conflict, NotFound
from toolweave.inputs import InputError
from toolweave.model.definitions import JobDefinition, ToolDefinition
from toolweave.settings import Settings

REPOSITORY = Path(__file__).resolve().parents[2]


def chain(job_id: str = "chain", steps: int = 3, tool: str = "test.instant") -> JobDefinition:
    items: list[dict[str, Any]] = [
        {"stepId": "s1", "toolId": tool, "inputMappings": [{"sourceJobInput": "value", "targetInputName": "value"}]}
    ]
    for i in range(2, steps + 1):
        items.append(
            {
                "stepId": f"s{i}",
                "toolId": tool,
                "inputMappings": [{"sourceStepId": f"s{i - 1}", "sourceOutputName": "value", "targetInputName": "value"}],
            }
        )
    return JobDefinition.model_validate(
        {
            "jobId": job_id,
            "inputSchema": {"value": {"type": "integer", "default": 1}},
            "outputSchema": {"value": {"type": "integer", "sourceStepId": f"s{steps}", "sourceOutputName": "value"}},
            "steps": items,
        }
    )


def job(data: dict[str, Any]) -> JobDefinition:
    return JobDefinition.model_validate(data)


@pytest.fixture
async def app(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[App]:
    monkeypatch.setenv("TOOLWEAVE_TEST_STATE", str(tmp_path / "state"))
    monkeypatch.setenv("TOOLWEAVE_TEST_LEDGER", str(tmp_path / "ledger"))
    instance = App(Settings(home=tmp_path / "home", database_url=db_url, test_tools=True))
    yield instance
    await instance.aclose()


def register(app: App, *definitions: JobDefinition | ToolDefinition) -> None:
    for definition in definitions:
        problems = app.registry.register(definition)
        assert problems == [], [str(p) for p in problems]


async def run_all(app: App, timeout: float = 30.0) -> None:
    worker = app.make_worker(4)
    await worker.run_until_idle(timeout)


def steps_by_id(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["stepId"]: s for s in run["stepStatuses"]}


async def test_chain_passes_outputs_from_step_to_step(app: App) -> None:
    register(app, chain())
    run_id = await app.submit("chain", {"value": 5}, account_id="acme")
    await run_all(app)
    run = await app.get_run(run_id)
    assert run["status"] == "completed"
    assert run["finalOutputs"]["value"] == 8
    assert [s["status"] for s in run["stepStatuses"]] == ["succeeded"] * 3
    assert [g["status"] for g in run["generations"]] == ["completed"] * 3
    types = [e["type"] for e in await app.events(run_id)]
    assert types[0] == "run.created" and types[-1] == "run.completed"
    assert types.count("step.started") == 3 and types.count("step.succeeded") == 3


async def test_fan_out_runs_branches_in_parallel_and_fans_in(app: App) -> None:
    branches = [
        {"stepId": f"b{i}", "toolId": "test.sleep", "inputMappings": [{"value": 1.0, "targetInputName": "seconds"}],
         "dependencies": ["root"]}
        for i in range(4)
    ]
    register(
        app,
        job(
            {
                "jobId": "fan",
                "steps": [
                    {"stepId": "root", "toolId": "test.instant", "inputMappings": [{"value": 1, "targetInputName": "value"}]},
                    *branches,
                    {"stepId": "join", "toolId": "test.instant", "dependencies": [f"b{i}" for i in range(4)],
                     "inputMappings": [{"sourceStepId": "root", "sourceOutputName": "value", "targetInputName": "value"}]},
                ],
            }
        ),
    )
    run_id = await app.submit("fan", {}, account_id="acme")
    await run_all(app)
    run = await app.get_run(run_id)
    assert run["status"] == "completed"
    by_id = steps_by_id(run)
    branches = [by_id[f"b{i}"] for i in range(4)]
    # the four branches ran at the same time: each started before any of them finished
    assert max(b["startedAt"] for b in branches) < min(b["finishedAt"] for b in branches)
    assert all(b["finishedAt"] <= by_id["join"]["startedAt"] for b in branches)


async def test_retryable_failure_is_retried_then_succeeds(app: App) -> None:
    register(
        app,
        job(
            {
                "jobId": "flaky",
                "steps": [
                    {
                        "stepId": "f",
                        "toolId": "test.fail_n_times",
                        "inputMappings": [{"value": 2, "targetInputName": "n"}],
                        "errorHandling": {"strategy": "retry", "maxAttempts": 3, "backoffSeconds": 0.05},
                    }
                ],
            }
        ),
    )
    run_id = await app.submit("flaky", {}, account_id="acme")
    await run_all(app)
    run = await app.get_run(run_id)
    assert run["status"] == "completed", run
    step = steps_by_id(run)["f"]
    assert step["attempt"] == 3
    assert [g["status"] for g in run["generations"]] == ["failed", "failed", "completed"]
    types = [e["type"] for e in await app.events(run_id)]
    assert types.count("step.retry_scheduled") == 2


async def test_exhausted_retries_then_skip_gives_partial_completion(app: App) -> None:
    register(
        app,
        job(
            {
                "jobId": "partial",
                "steps": [
                    {"stepId": "ok", "toolId": "test.instant", "inputMappings": [{"value": 1, "targetInputName": "value"}]},
                    {
                        "stepId": "bad",
                        "toolId": "test.fail_n_times",
                        "inputMappings": [{"value": 9, "targetInputName": "n"}],
                        "errorHandling": {"strategy": "retry", "maxAttempts": 2, "backoffSeconds": 0.01, "then": "skip"},
                    },
                ],
            }
        ),
    )
    run_id = await app.submit("partial", {}, account_id="acme")
    await run_all(app)
    run = await app.get_run(run_id)
    assert run["status"] == "partially_completed"
    bad = steps_by_id(run)["bad"]
    assert bad["status"] == "skipped" and bad["attempt"] == 2
    assert "value" in run["finalOutputs"]


async def test_non_retryable_failure_halts_the_run_and_names_the_step(app: App) -> None:
    register(
        app,
        job(
            {
                "jobId": "halts",
                "steps": [
                    {
                        "stepId": "broken",
                        "toolId": "test.fail_n_times",
                        "inputMappings": [{"value": 5, "targetInputName": "n"}, {"value": False, "targetInputName": "retryable"}],
                        "errorHandling": {"strategy": "retry", "maxAttempts": 5, "backoffSeconds": 0.01},
                    },
                    {"stepId": "after", "toolId": "test.instant", "dependencies": ["broken"],
                     "inputMappings": [{"value": 1, "targetInputName": "value"}]},
                ],
            }
        ),
    )
    run_id = await app.submit("halts", {}, account_id="acme")
    await run_all(app)
    run = await app.get_run(run_id)
    assert run["status"] == "failed"
    assert "broken" in run["error"]["message"]
    by_id = steps_by_id(run)
    assert by_id["broken"]["attempt"] == 1  # not retried: the error is not retryable
    assert by_id["after"]["status"] == "cancelled"


async def test_false_condition_skips_and_dependents_use_mapping_defaults(app: App) -> None:
    register(
        app,
        job(
            {
                "jobId": "cond",
                "inputSchema": {"value": {"type": "integer", "required": True}},
                "steps": [
                    {"stepId": "first", "toolId": "test.instant",
                     "inputMappings": [{"sourceJobInput": "value", "targetInputName": "value"}]},
                    {"stepId": "big", "toolId": "test.instant", "condition": "steps.first.outputs.value > 100",
                     "inputMappings": [{"sourceStepId": "first", "sourceOutputName": "value", "targetInputName": "value"}]},
                    {"stepId": "uses_default", "toolId": "test.instant",
                     "inputMappings": [{"sourceStepId": "big", "sourceOutputName": "value", "targetInputName": "value",
                                        "default": -1}]},
                    {"stepId": "needs_big", "toolId": "test.instant",
                     "inputMappings": [{"sourceStepId": "big", "sourceOutputName": "value", "targetInputName": "value"}]},
                ],
            }
        ),
    )
    run_id = await app.submit("cond", {"value": "3"}, account_id="acme")
    await run_all(app)
    run = await app.get_run(run_id)
    by_id = steps_by_id(run)
    assert run["status"] == "completed"
    assert by_id["big"]["status"] == "skipped" and "condition" in by_id["big"]["reason"]
    assert by_id["uses_default"]["status"] == "succeeded" and by_id["uses_default"]["outputs"]["value"] == 0
    assert by_id["needs_big"]["status"] == "skipped" and "big" in by_id["needs_big"]["reason"]


async def test_asynchronous_step_waits_as_a_row_and_completes_by_polling(app: App) -> None:
    register(app, job({"jobId": "slow", "steps": [
        {"stepId": "wait", "toolId": "test.slow_async", "inputMappings": [{"value": 0.5, "targetInputName": "seconds"}]}]}))
    run_id = await app.submit("slow", {}, account_id="acme")
    worker = app.make_worker(2)
    task = asyncio.create_task(worker.run())
    try:
        deadline = time.time() + 20
        while True:
            run = await app.get_run(run_id)
            if run["generations"] and run["generations"][0]["platformSpecificRunId"]:
                break
            await asyncio.sleep(0.05)
        assert run["generations"][0]["status"] == "processing"
        # waiting is a row and a poll task, not a held slot: no dispatch task is left
        gen_id = run["generations"][0]["generationId"]
        kinds = app.store.run_sync(
            lambda tx: [r.kind for r in tx.all("SELECT kind FROM tasks WHERE ref_id = :g", {"g": gen_id})]
        )
        assert kinds == ["poll"]
        while run["status"] == "running" and time.time() < deadline:
            await asyncio.sleep(0.1)
            run = await app.get_run(run_id)
        assert run["status"] == "completed"
    finally:
        worker.stop()
        await task


async def test_cancel_stops_the_run_and_cancels_work_at_the_backend(app: App) -> None:
    register(app, job({"jobId": "slow", "steps": [
        {"stepId": "wait", "toolId": "test.slow_async", "inputMappings": [{"value": 60, "targetInputName": "seconds"}]},
        {"stepId": "after", "toolId": "test.instant", "dependencies": ["wait"],
         "inputMappings": [{"value": 1, "targetInputName": "value"}]}]}))
    run_id = await app.submit("slow", {}, account_id="acme")
    worker = app.make_worker(2)
    task = asyncio.create_task(worker.run())
    try:
        for _ in range(200):
            run = await app.get_run(run_id)
            if run["generations"] and run["generations"][0]["status"] == "processing":
                break
            await asyncio.sleep(0.05)
        with pytest.raises(NotFound):
            await app.cancel(run_id, account_id="someone-else")
        assert await app.cancel(run_id, account_id="acme") == "cancelled"
        await asyncio.sleep(0.5)
    finally:
        worker.stop()
        await task
    run = await app.get_run(run_id)
    assert run["status"] == "cancelled"
    assert [s["status"] for s in run["stepStatuses"]] == ["cancelled", "cancelled"]
    assert run["generations"][0]["status"] == "cancelled"
    builtin = app.services["builtin"]
    poll = await builtin.poll(_context_of(app, run))
    assert poll.status.value == "cancelled"  # the backend was told


def _context_of(app: App, run: dict[str, Any]) -> Any:
    from toolweave.services.base import GenerationContext

    gen = run["generations"][0]
    return GenerationContext(
        generation_id=gen["generationId"], run_id=run["jobRunId"], step_id=gen["stepId"], attempt=1,
        account_id="acme", tool=app.registry.tool(gen["toolId"]), inputs={},
        platform_run_id=gen["platformSpecificRunId"],
    )


async def test_retry_of_a_failed_run_reuses_succeeded_steps(app: App) -> None:
    register(app, job({"jobId": "again", "steps": [
        {"stepId": "first", "toolId": "test.instant", "inputMappings": [{"value": 1, "targetInputName": "value"}]},
        {"stepId": "second", "toolId": "test.fail_n_times", "dependencies": ["first"],
         "inputMappings": [{"value": 1, "targetInputName": "n"}, {"value": False, "targetInputName": "retryable"}]},
    ]}))
    run_id = await app.submit("again", {}, account_id="acme")
    await run_all(app)
    run = await app.get_run(run_id)
    assert run["status"] == "failed"
    first_generation = steps_by_id(run)["first"]["generationId"]
    with pytest.raises(NotFound):
        await app.retry(run_id, account_id="globex")
    await app.retry(run_id, account_id="acme")
    await run_all(app)
    run = await app.get_run(run_id)
    assert run["status"] == "completed", run
    by_id = steps_by_id(run)
    assert by_id["first"]["generationIds"] == [first_generation]  # not executed again
    assert len(by_id["second"]["generationIds"]) == 2
    with pytest.raises(Conflict):
        await app.retry(run_id, account_id="acme")  # a completed run is not retried


async def test_idempotency_key_returns_the_same_run(app: App) -> None:
    register(app, chain())
    first = await app.submit("chain", {"value": 1}, account_id="acme", idempotency_key="k1")
    again = await app.submit("chain", {"value": 1}, account_id="acme", idempotency_key="k1")
    other = await app.submit("chain", {"value": 1}, account_id="other", idempotency_key="k1")
    assert first == again != other


async def test_bad_inputs_name_every_field_and_store_nothing(app: App) -> None:
    register(app, chain())
    with pytest.raises(InputError) as caught:
        await app.submit("chain", {"value": "many", "extra": 1}, account_id="acme")
    fields = {p.field for p in caught.value.problems}
    assert fields == {"value", "extra"}
    page = await app.list_runs("acme")
    assert page.items == []


async def test_nested_job_runs_as_a_child_run(app: App) -> None:
    register(app, chain("inner", 2))
    register(app, job({"jobId": "outer", "steps": [
        {"stepId": "pre", "toolId": "test.instant", "inputMappings": [{"value": 10, "targetInputName": "value"}]},
        {"stepId": "nested", "jobId": "inner",
         "inputMappings": [{"sourceStepId": "pre", "sourceOutputName": "value", "targetInputName": "value"}]},
        {"stepId": "post", "toolId": "test.instant",
         "inputMappings": [{"sourceStepId": "nested", "sourceOutputName": "value", "targetInputName": "value"}]},
    ]}))
    run_id = await app.submit("outer", {}, account_id="acme")
    await run_all(app)
    run = await app.get_run(run_id)
    assert run["status"] == "completed", run
    assert run["finalOutputs"]["value"] == 14
    child_id = steps_by_id(run)["nested"]["childRunId"]
    child = await app.get_run(child_id)
    assert child["status"] == "completed" and child["parentRunId"] == run_id
    assert [r["jobRunId"] for r in (await app.list_runs("acme")).items] == [run_id]


async def test_step_timeout_times_out_the_generation(app: App) -> None:
    register(app, job({"jobId": "late", "steps": [
        {"stepId": "wait", "toolId": "test.slow_async", "timeoutSeconds": 0.5,
         "inputMappings": [{"value": 60, "targetInputName": "seconds"}]}]}))
    run_id = await app.submit("late", {}, account_id="acme")
    run = await work_until_done(app, run_id, timeout=15)
    assert run["status"] == "failed"
    assert run["generations"][0]["status"] == "timeout"
    assert "timed out" in run["error"]["message"]


async def test_cost_of_generations_adds_up_on_the_run(app: App) -> None:
    priced = ToolDefinition.model_validate(
        {
            **app.registry.tool("test.instant").dump(),
            "version": "2",
            "costingModel": {"rateSource": "static", "staticCost": {"amount": "0.0125"}},
        }
    )
    register(app, priced, chain("priced_chain", 3))
    run_id = await app.submit("priced_chain", {"value": 1}, account_id="acme")
    await run_all(app)
    run = await app.get_run(run_id)
    assert run["status"] == "completed"
    assert [g["costUsd"] for g in run["generations"]] == ["0.0125"] * 3
    assert Decimal(run["costUsd"]) == Decimal("0.0375")


async def test_a_repeated_or_late_update_changes_nothing(app: App) -> None:
    from toolweave.model.records import RunUpdate
    from toolweave.model.status import GenerationStatus

    register(app, chain("one", 1))
    run_id = await app.submit("one", {"value": 1}, account_id="acme")
    await run_all(app)
    run = await app.get_run(run_id)
    gen_id = run["generations"][0]["generationId"]
    before = await app.events(run_id)
    assert await app.apply_update(gen_id, RunUpdate(status=GenerationStatus.FAILED)) is False
    assert await app.apply_update(gen_id, RunUpdate(status=GenerationStatus.COMPLETED, outputs={"value": 99})) is False
    after = await app.get_run(run_id)
    assert after["finalOutputs"] == run["finalOutputs"] and after["status"] == "completed"
    assert await app.events(run_id) == before


async def test_runs_are_scoped_to_their_account(app: App) -> None:
    register(app, chain())
    mine = await app.submit("chain", {"value": 1}, account_id="acme")
    await app.submit("chain", {"value": 1}, account_id="globex")
    with pytest.raises(NotFound):
        await app.get_run(mine, account_id="globex")
    with pytest.raises(NotFound):
        await app.events(mine, account_id="globex")
    assert [r["jobRunId"] for r in (await app.list_runs("acme")).items] == [mine]


async def test_list_runs_pages_with_a_cursor(app: App) -> None:
    register(app, chain())
    ids = [await app.submit("chain", {"value": i}, account_id="acme") for i in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        page = await app.list_runs("acme", cursor=cursor, limit=2)
        seen.extend(r["jobRunId"] for r in page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == 5


async def test_a_submit_cut_short_by_a_crash_reattaches_instead_of_paying_twice(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker dies after the backend accepted the generation but before the platform run id
    was recorded: the next worker re-dispatches the same generation, flagged as recovering, and
    a backend that accepts client-chosen ids re-attaches to the run it already has."""
    ledger = tmp_path / "ledger"
    monkeypatch.setenv("TOOLWEAVE_TEST_LEDGER", str(ledger))
    monkeypatch.setenv("TOOLWEAVE_TEST_STATE", str(tmp_path / "state"))
    app = App(Settings(home=tmp_path / "home", database_url=db_url, test_tools=True, lease_seconds=0.5))
    try:
        register(app, job({"jobId": "slow", "steps": [
            {"stepId": "wait", "toolId": "test.slow_async", "inputMappings": [{"value": 0.3, "targetInputName": "seconds"}]}]}))
        run_id = await app.submit("slow", {}, account_id="acme")
        items, _next = await app.store.tx(app.engine.claim_tx, "doomed-worker", 1, time.time())
        [(task, work)] = items
        assert task.kind.value == "dispatch" and not work.recovering
        await app.services["builtin"].submit(work.context(None))  # the backend has it now...
        await asyncio.sleep(0.6)  # ...and the worker is gone: its lease runs out
        run = await app.get_run(run_id)
        assert run["generations"][0]["platformSpecificRunId"] is None
        run = await work_until_done(app, run_id)
        assert run["status"] == "completed"
        assert len(run["generations"]) == 1
        assert (ledger / "submissions.log").read_text().split() == [work.generation_id]
        assert (ledger / "reattached.log").read_text().split() == [work.generation_id]
        assert_no_stranded_runs(app.store)
    finally:
        await app.aclose()


async def test_a_media_url_on_the_private_network_is_refused(app: App) -> None:
    """A user's image URL must not make the server fetch from its own network (SSRF): refused at
    submit when the URL is given, and when the step runs when a template builds it."""
    register(app, job({"jobId": "shrink", "inputSchema": {"image": {"type": "image", "required": True}},
                       "steps": [{"stepId": "resize", "toolId": "image.resize", "inputMappings": [
                           {"sourceJobInput": "image", "targetInputName": "image"},
                           {"value": 10, "targetInputName": "width"}]}]}))
    with pytest.raises(InputError) as refused:
        await app.submit("shrink", {"image": "http://127.0.0.1:9/secret.png"}, account_id="acme")
    assert refused.value.problems[0].field == "image" and "private or local" in refused.value.problems[0].message
    register(app, job({"jobId": "grid_of", "inputSchema": {"host": {"type": "string", "required": True}},
                       "steps": [{"stepId": "resize", "toolId": "image.grid", "inputMappings": [
                           {"template": '["http://{{ job.host }}:9/secret.png"]', "targetInputName": "images"}]}]}))
    run_id = await app.submit("grid_of", {"host": "127.0.0.1"}, account_id="acme")
    await run_all(app)
    run = await app.get_run(run_id)
    assert run["status"] == "failed"
    assert "private or local address" in run["error"]["message"]
    assert run["generations"][0]["error"]["retryable"] is False


async def test_heavy_fan_out_with_constant_heartbeats_logs_no_errors(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    """Heartbeats, claims and group commits touch the same task and run rows all the time; on
    PostgreSQL a wrong lock order shows up as deadlocks (logged errors and lost work)."""
    steps: list[dict[str, Any]] = [
        {"stepId": "root", "toolId": "test.instant", "inputMappings": [{"value": 1, "targetInputName": "value"}]}
    ]
    steps += [
        {"stepId": f"b{i}", "toolId": "test.instant",
         "inputMappings": [{"sourceStepId": "root", "sourceOutputName": "value", "targetInputName": "value"}]}
        for i in range(4)
    ]
    steps.append({"stepId": "join", "toolId": "test.instant", "dependencies": [f"b{i}" for i in range(4)],
                  "inputMappings": [{"sourceStepId": "b0", "sourceOutputName": "value", "targetInputName": "value"}]})
    register(app, job({"jobId": "wide", "steps": steps}))
    run_ids = [await app.submit("wide", {}, account_id="acme") for _ in range(120)]
    worker = app.make_worker(8, heartbeat_seconds=0.002)
    with caplog.at_level("ERROR"):
        runner = asyncio.create_task(worker.run())
        try:
            for run_id in run_ids:
                await app.wait(run_id, timeout=120)
        finally:
            worker.stop()
            await runner
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == []
    statuses = {(await app.get_run(run_id))["status"] for run_id in run_ids}
    assert statuses == {"completed"}


class _LoopClocks:
    """Wall time and the loop thread's CPU time, moved by the test instead of by the machine."""

    def __init__(self) -> None:
        self.wall = 100.0
        self.cpu = 10.0

    def idle(self, seconds: float) -> None:
        self.wall += seconds

    def spin(self, seconds: float) -> None:
        self.wall += seconds
        self.cpu += seconds


async def test_a_worker_whose_loop_is_the_bottleneck_leaves_queued_work_to_others(app: App) -> None:
    """While the event loop's thread is busy all the time, more claimed tasks would only queue for
    it: the worker keeps two in hand and leaves the rest queued; once the loop is idle again it
    claims up to its free slots. The clocks are the test's, so a busy machine changes nothing."""
    from toolweave.engine.worker import BUSY_WINDOW_SECONDS, SATURATED_BUSY, SATURATED_IN_FLIGHT

    clocks = _LoopClocks()
    worker = app.make_worker(8, wall_clock=lambda: clocks.wall, cpu_clock=lambda: clocks.cpu)
    clocks.idle(BUSY_WINDOW_SECONDS * 1.5)
    assert worker.claimable() == 8
    clocks.spin(BUSY_WINDOW_SECONDS * 1.5)  # the loop's thread on the CPU the whole window
    assert worker.claimable() == SATURATED_IN_FLIGHT
    clocks.spin(BUSY_WINDOW_SECONDS / 2)  # a window not yet over keeps the last measure
    clocks.idle(BUSY_WINDOW_SECONDS / 4)
    assert worker.claimable() == SATURATED_IN_FLIGHT
    clocks.idle(BUSY_WINDOW_SECONDS * 1.5)
    assert worker.claimable() == 8
    # just under the threshold the loop still has room; just over it, it is the bottleneck
    clocks.spin(BUSY_WINDOW_SECONDS * (SATURATED_BUSY - 0.05))
    clocks.idle(BUSY_WINDOW_SECONDS * (1 - SATURATED_BUSY + 0.05))
    assert worker.claimable() == 8
    clocks.spin(BUSY_WINDOW_SECONDS * (SATURATED_BUSY + 0.05))
    clocks.idle(BUSY_WINDOW_SECONDS * (1 - SATURATED_BUSY - 0.05))
    assert worker.claimable() == SATURATED_IN_FLIGHT


async def test_a_saturated_worker_claims_only_what_it_keeps_in_hand(app: App) -> None:
    """The worker's own loop honours the rule: measured busy, it takes two of five queued runs and
    leaves three queued for other workers while those two are in its hands."""
    from toolweave.engine.worker import BUSY_WINDOW_SECONDS, SATURATED_IN_FLIGHT

    register(app, job({"jobId": "nap", "steps": [
        {"stepId": "s", "toolId": "test.sleep", "inputMappings": [{"value": 60, "targetInputName": "seconds"}]}]}))
    for _ in range(5):
        await app.submit("nap", {}, account_id="acme")
    clocks = _LoopClocks()
    worker = app.make_worker(8, wall_clock=lambda: clocks.wall, cpu_clock=lambda: clocks.cpu)
    clocks.spin(BUSY_WINDOW_SECONDS * 2)
    runner = asyncio.create_task(worker.run())

    async def tasks_by_kind_and_lease() -> dict[tuple[str, bool], int]:
        rows = await app.store.read(lambda tx: tx.all(
            "SELECT kind, lease_owner IS NOT NULL AS leased, COUNT(*) AS n FROM tasks GROUP BY kind, leased"))
        return {(row.kind, bool(row.leased)): row.n for row in rows}

    try:
        deadline = time.monotonic() + 60
        while (await tasks_by_kind_and_lease()).get(("dispatch", True), 0) < SATURATED_IN_FLIGHT:
            assert time.monotonic() < deadline, "the worker never started two steps"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # time for a wrong rule to claim more
        assert await tasks_by_kind_and_lease() == {
            ("dispatch", True): SATURATED_IN_FLIGHT, ("dispatch", False): 5 - SATURATED_IN_FLIGHT}
    finally:
        runner.cancel()
        for handler in list(worker._inflight):
            handler.cancel()
        await asyncio.gather(runner, *worker._inflight, return_exceptions=True)


async def test_recording_a_finished_run_claims_the_next_task_in_the_same_transaction(app: App) -> None:
    """A batch that ends runs frees their slots; the same transaction claims queued work into them,
    up to the room the worker gives it (its claim rule)."""
    from toolweave.engine.work import Outcome
    from toolweave.model.records import RunUpdate
    from toolweave.model.status import GenerationStatus

    register(app, chain("one", steps=1))
    first = await app.submit("one", {"value": 1}, account_id="acme")
    await app.submit("one", {"value": 2}, account_id="acme")
    await app.submit("one", {"value": 3}, account_id="acme")
    engine = app.engine
    items, _ = await app.store.tx(engine.claim_tx, "w", 1, time.time())
    ((_task, work),) = items
    assert work.run_id == first
    done = RunUpdate(status=GenerationStatus.COMPLETED, progress=1.0, outputs={"value": 2})

    def outcome(w: Any) -> Outcome:
        return Outcome(w, None, done, time.time(), time.time(), None)

    results, claimed = await app.store.tx(engine.record_and_claim_tx, [outcome(work)], time.time(), None, "w", 1)
    assert results == [([], False)]  # the run ended: no successor, its slot is free
    assert len(claimed) == 1 and claimed[0][1].run_id != first
    leased = await app.store.read(
        lambda tx: tx.one("SELECT lease_owner FROM tasks WHERE task_id = :id", {"id": claimed[0][0].task_id})
    )
    assert leased.lease_owner == "w"
    # no room (the worker holds what its rule allows): nothing is claimed
    _, none = await app.store.tx(engine.record_and_claim_tx, [outcome(claimed[0][1])], time.time(), None, "w", 0)
    assert none == []
    queued = await app.store.read(lambda tx: tx.one("SELECT COUNT(*) AS n FROM tasks WHERE lease_owner IS NULL"))
    assert queued.n == 1
    assert (await app.get_run(first))["status"] == "completed"


async def test_stop_wakes_an_idle_worker_at_once(app: App) -> None:
    """An idle worker waits for work up to ``idle_poll_seconds``; ``stop()`` must not sit that out
    (a CLI run's in-process worker is stopped as soon as its run ends)."""
    worker = app.make_worker(2, idle_poll_seconds=120.0, sweep_seconds=0)
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0.3)  # now waiting for work
    assert not task.done()
    worker.stop()
    await asyncio.wait_for(task, 30)  # far below the 120 s it would otherwise wait


async def test_a_submit_in_another_process_wakes_an_idle_worker(db_url: str, tmp_path: Path) -> None:
    """Wake-ups cross processes on both stores (NOTIFY on PostgreSQL, a datagram on SQLite): a
    worker waiting out a long idle poll starts a run another process submitted."""
    import subprocess
    import sys

    home = tmp_path / "home"
    app = App(Settings(home=home, database_url=db_url, test_tools=True))
    register(app, chain())
    worker = app.make_worker(2, idle_poll_seconds=600.0, sweep_seconds=0)
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.sleep(0.5)  # waiting for work
        script = (
            "import asyncio, sys\n"
            "from toolweave.app import App\nfrom toolweave.settings import Settings\n"
            "from tests.integration.test_engine import chain\n"
            "from pathlib import Path\napp = App(Settings(home=Path(sys.argv[1]), database_url=sys.argv[2], test_tools=True))\n"
            "app.registry.register(chain())\n"
            "async def main():\n"
            "    print(await app.submit('chain', {'value': 2}, account_id='acme'))\n"
            "    await app.aclose()\n"
            "asyncio.run(main())\n"
        )
        done = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-c", script, str(home), db_url], capture_output=True, text=True,
            timeout=120, cwd=REPOSITORY,
        )
        assert done.returncode == 0, done.stderr
        run = await app.wait(done.stdout.strip(), timeout=60)  # long before the 600 s idle poll
        assert run["status"] == "completed" and run["finalOutputs"] == {"value": 5}
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)
        await app.aclose()


async def test_a_run_stays_queued_until_a_worker_claims_it_and_says_why(app: App) -> None:
    """Submitted with no worker about, a run is ``queued`` (not ``running``) and says that no
    worker is running; the queue shows its step waiting; the worker's claim makes it ``running``."""
    register(app, chain("one", steps=1))
    run_id = await app.submit("one", {"value": 1}, account_id="acme")
    run = await app.get_run(run_id)
    assert run["status"] == "queued" and run["startedAt"] is None
    assert run["statusDetail"] == "no worker is running (start one with: toolweave worker)"
    types = [e["type"] for e in await app.events(run_id)]
    assert types[0] == "run.created" and "run.started" not in types
    assert [r["jobRunId"] for r in (await app.list_runs("acme", status=["queued"])).items] == [run_id]
    assert [r["jobRunId"] for r in (await app.list_runs("acme", status=["pending"])).items] == [run_id]

    status = await app.queue_status("acme")
    assert status["workers"] == [] and status["queuedRuns"] == 1
    assert status["waitingReason"].startswith("no worker is running")
    (builtin,) = status["services"]
    assert (builtin["service"], builtin["waiting"], builtin["sending"]) == ("builtin", 1, 0)
    assert status["oldestWaiting"]["runId"] == run_id and status["oldestWaiting"]["service"] == "builtin"
    assert (await app.queue_status("someone_else"))["oldestWaiting"]["runId"] is None  # not theirs to see

    items, _ = await app.store.tx(app.engine.claim_tx, "w1", 1, time.time())
    assert len(items) == 1
    run = await app.get_run(run_id)
    assert run["status"] == "running" and run["startedAt"] is not None and run["statusDetail"] is None
    types = [e["type"] for e in await app.events(run_id)]
    assert types.count("run.started") == 1
    held = await app.queue_status(None)
    assert held["services"][0]["sending"] == 1 and held["queuedRuns"] == 0 and held["waitingReason"] is None


async def test_a_run_whose_nested_runs_a_worker_claimed_is_running_not_queued(app: App) -> None:
    """A run whose only work is in nested runs (a map over a job that nests another) has no task
    of its own: the claim of its nested runs' work makes it, and every run between, ``running``
    (it said "queued, no worker is running" while workers ran its nested runs)."""
    register(app, chain("one", steps=1),
             job({"jobId": "middle", "inputSchema": {"value": {"type": "integer"}},
                  "steps": [{"stepId": "in", "jobId": "one", "inputMappings": [{"sourceJobInput": "value", "targetInputName": "value"}]}]}),
             job({"jobId": "outer", "inputSchema": {"vs": {"type": "json"}},
                  "steps": [{"stepId": "each", "jobId": "middle", "map": {"over": {"sourceJobInput": "vs"}},
                             "inputMappings": [{"sourceItem": True, "targetInputName": "value"}]}]}))
    run_id = await app.submit("outer", {"vs": [1, 2]}, account_id="acme")
    assert (await app.get_run(run_id))["status"] == "queued"
    items, _ = await app.store.tx(app.engine.claim_tx, "w1", 1, time.time())
    assert len(items) == 1  # one innermost run's step
    run = await app.get_run(run_id)
    assert run["status"] == "running" and run["startedAt"] is not None and run["statusDetail"] is None
    assert [e["type"] for e in await app.events(run_id)].count("run.started") == 1
    middles = [i["childRunId"] for i in (await app.step_items(run_id, "each", "acme"))["items"]]
    statuses = [(await app.get_run(m))["status"] for m in middles]
    assert sorted(statuses) == ["queued", "running"]  # the one whose nested run's work was claimed


async def test_a_queued_run_cancelled_never_ran_and_a_retried_run_waits_in_the_queue_again(app: App) -> None:
    register(app, chain("one", steps=1), job({"jobId": "bad", "steps": [
        {"stepId": "s", "toolId": "test.fail_n_times", "inputMappings": [{"value": 1, "targetInputName": "n"}]}]}))
    run_id = await app.submit("one", {"value": 1}, account_id="acme")
    assert await app.cancel(run_id, "acme") == "cancelled"
    run = await app.get_run(run_id)
    assert run["status"] == "cancelled" and run["startedAt"] is None
    assert "run.started" not in [e["type"] for e in await app.events(run_id)]

    failing = await app.submit("bad", {}, account_id="acme")
    await run_all(app)
    assert (await app.get_run(failing))["status"] == "failed"
    await app.retry(failing, "acme")
    again = await app.get_run(failing)
    assert again["status"] == "queued" and again["statusDetail"].startswith("no worker is running")
    await run_all(app)
    assert (await app.get_run(failing))["status"] == "completed"  # test.fail_n_times fails once


async def test_a_worker_is_announced_before_it_takes_work(app: App) -> None:
    """A run submitted as a worker starts (a bot's first command) must not be told that no worker
    is running: the worker's presence row is written before its first claim."""
    worker = app.make_worker(2)
    seen: list[list[dict[str, Any]]] = []
    claim_tx = app.engine.claim_tx

    def first_claim(tx: Any, *args: Any) -> Any:  # the worker's own claim, watched: what was announced by then
        if not seen:
            seen.append(presence.live_workers_tx(tx, time.time()))
        return claim_tx(tx, *args)

    app.engine.claim_tx = first_claim  # type: ignore[method-assign]
    runner = asyncio.create_task(app.run_worker(worker, kind="worker", ttl=3.0))
    try:
        deadline = time.monotonic() + 30
        while not seen:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        assert [w["workerId"] for w in seen[0]] == [worker.worker_id]
    finally:
        worker.stop()
        await asyncio.wait_for(runner, 30)
    assert await app.live_workers() == []  # and gone when it ends


async def test_the_queue_shows_live_workers_with_their_slots_tasks_and_heartbeat(app: App) -> None:
    register(app, job({"jobId": "nap", "steps": [
        {"stepId": "s", "toolId": "test.sleep", "inputMappings": [{"value": 30, "targetInputName": "seconds"}]}]}))
    worker = app.make_worker(3)
    runner = asyncio.create_task(app.run_worker(worker, kind="worker", ttl=3.0))
    try:
        run_id = await app.submit("nap", {}, account_id="acme")
        deadline = time.monotonic() + 30
        while (await app.get_run(run_id))["status"] != "running":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        while not (status := await app.queue_status(None))["workers"] or not status["workers"][0].get("tasksHeld"):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        (live,) = status["workers"]
        assert live["workerId"] == worker.worker_id and live["slots"] == 3 and live["tasksHeld"] == 1
        assert live["heartbeatAt"] and status["slots"] == 3
        assert status["services"][0]["sending"] == 1 and status["waitingReason"] is None
    finally:
        runner.cancel()
        for handler in list(worker._inflight):
            handler.cancel()
        await asyncio.gather(runner, *worker._inflight, return_exceptions=True)
