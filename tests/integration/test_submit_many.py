"""Bulk submission (``App.submit_many``) on both stores: many runs per transaction, written in
their first planned state, exactly as the run-by-run path would have written them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.helpers.invariants import assert_no_stranded_runs

from toolweave.app import App, UnknownDefinition
from toolweave.engine.work import _Ctx
from toolweave.inputs import InputError
from toolweave.model.definitions import JobDefinition
from toolweave.settings import Settings


def job(data: dict[str, Any]) -> JobDefinition:
    return JobDefinition.model_validate(data)


CHAIN = job({
    "jobId": "chain", "inputSchema": {"value": {"type": "integer", "required": True}},
    "outputSchema": {"value": {"type": "integer", "sourceStepId": "s2", "sourceOutputName": "value"}},
    "steps": [
        {"stepId": "s1", "toolId": "test.instant", "inputMappings": [{"sourceJobInput": "value", "targetInputName": "value"}]},
        {"stepId": "s2", "toolId": "test.instant",
         "inputMappings": [{"sourceStepId": "s1", "sourceOutputName": "value", "targetInputName": "value"}]},
    ],
})
# a first plan that starts one step, skips another by its condition and sets a timer (timeout)
MIXED = job({
    "jobId": "mixed", "inputSchema": {"value": {"type": "integer", "required": True}},
    "steps": [
        {"stepId": "go", "toolId": "test.instant", "timeoutSeconds": 600,
         "inputMappings": [{"sourceJobInput": "value", "targetInputName": "value"}]},
        {"stepId": "never", "toolId": "test.instant", "condition": "job.value > 1000",
         "inputMappings": [{"sourceJobInput": "value", "targetInputName": "value"}]},
        {"stepId": "after", "toolId": "test.instant", "dependencies": ["never"],
         "inputMappings": [{"sourceStepId": "go", "sourceOutputName": "value", "targetInputName": "value"}]},
    ],
})
# a run whose only step is skipped: it ends in its first plan (the run-by-run path writes it)
ENDS_AT_ONCE = job({
    "jobId": "ends", "inputSchema": {"value": {"type": "integer", "required": True}},
    "steps": [{"stepId": "only", "toolId": "test.instant", "condition": "job.value < 0",
               "inputMappings": [{"sourceJobInput": "value", "targetInputName": "value"}]}],
})
OUTER = job({
    "jobId": "outer", "steps": [
        {"stepId": "nested", "jobId": "chain", "inputMappings": [{"value": 1, "targetInputName": "value"}]},
    ],
})


@pytest.fixture
async def app(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[App]:
    monkeypatch.setenv("TOOLWEAVE_TEST_STATE", str(tmp_path / "state"))
    instance = App(Settings(home=tmp_path / "home", database_url=db_url, test_tools=True))
    for definition in (CHAIN, MIXED, ENDS_AT_ONCE, OUTER):
        assert instance.registry.register(definition) == []
    yield instance
    await instance.aclose()


async def test_a_batch_makes_one_run_per_row_and_a_bad_row_stops_nothing(app: App) -> None:
    rows: list[dict[str, Any]] = [{"value": i} for i in range(40)]
    rows[7] = {"value": "seven"}
    rows[20] = {"value": 1, "unknown": True}
    results = await app.submit_many("chain", rows, account_id="acme", chunk=16)
    assert [r.index for r in results] == list(range(40))
    bad = {r.index: r.error for r in results if r.error is not None}
    assert set(bad) == {7, 20}
    assert all(isinstance(e, InputError) for e in bad.values())
    assert "value" in str(bad[7]) and "unknown" in str(bad[20])
    assert all(r.run_id is None for r in results if r.error is not None)
    good = [r for r in results if r.error is None]
    assert all(r.created and r.run_id for r in good) and len({r.run_id for r in good}) == 38
    await app.make_worker(8).run_until_idle(60)
    for r in good:
        run = await app.get_run(r.run_id or "", "acme")
        assert run["status"] == "completed" and run["finalOutputs"] == {"value": r.index + 2}
        types = [e["type"] for e in await app.events(r.run_id or "", "acme")]
        # queued with its first step started at submit; running once a worker claims that step
        assert types == ["run.created", "step.started", "run.started", "step.succeeded", "step.started",
                         "step.succeeded", "run.completed"]
    assert_no_stranded_runs(app.store)


async def test_idempotency_keys_per_row_name_one_run_each_per_account(app: App) -> None:
    rows = [{"value": 1}, {"value": 2}, {"value": 3}]
    first = await app.submit_many("chain", rows, account_id="acme", idempotency_keys=["a", "b", "a"])
    assert [r.created for r in first] == [True, True, False]
    assert first[2].run_id == first[0].run_id  # the same key twice in one batch: one run
    again = await app.submit_many("chain", rows, account_id="acme", idempotency_keys=["a", "b", None])
    assert [r.run_id for r in again[:2]] == [first[0].run_id, first[1].run_id]
    assert [r.created for r in again] == [False, False, True]
    # the same keys are another account's own: they name nothing of acme's
    other = await app.submit_many("chain", rows[:2], account_id="mallory", idempotency_keys=["a", "b"])
    assert all(r.created for r in other)
    assert {r.run_id for r in other}.isdisjoint({first[0].run_id, first[1].run_id})
    with pytest.raises(ValueError, match="2 idempotency keys for 3 rows"):
        await app.submit_many("chain", rows, account_id="acme", idempotency_keys=["x", "y"])


async def test_an_unknown_target_is_refused_whole(app: App) -> None:
    with pytest.raises(UnknownDefinition):
        await app.submit_many("no-such-job", [{}], account_id="acme")


def _snapshot_of_store(app: App, run_id: str) -> dict[str, Any]:
    """Everything stored about a run, without its ids and times (which differ between runs)."""
    def read(tx: Any) -> dict[str, Any]:
        run = dict(tx.one("SELECT * FROM runs WHERE run_id = :id", {"id": run_id}))
        steps = [dict(r) for r in tx.all("SELECT * FROM step_runs WHERE run_id = :id ORDER BY position", {"id": run_id})]
        gens = [dict(r) for r in tx.all("SELECT * FROM generations WHERE run_id = :id ORDER BY step_id", {"id": run_id})]
        tasks = [dict(r) for r in tx.all("SELECT * FROM tasks WHERE run_id = :id ORDER BY kind, ref_id", {"id": run_id})]
        events = [dict(r) for r in tx.all("SELECT * FROM events WHERE run_id = :id ORDER BY event_id", {"id": run_id})]
        return {"run": run, "steps": steps, "generations": gens, "tasks": tasks, "events": events}

    found = app.store.read_sync(read)
    times = {"created_at", "updated_at", "started_at", "finished_at", "available_at", "deadline_at", "next_attempt_at",
             "queue_at"}
    ids = {"run_id", "generation_id", "generation_ids", "ref_id", "task_id", "event_id", "idempotency_key"}

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: ("<time>" if k in times and v is not None else "<id>" if k in ids and v else clean(v))
                    for k, v in value.items() if k not in ("generationId",)}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return clean(found)  # type: ignore[no-any-return]


async def test_a_planned_run_is_stored_as_the_run_by_run_path_stores_it(app: App) -> None:
    """The rows of a run written in its first planned state equal those of the same run created
    and then advanced statement by statement (the path nested and ending runs take)."""
    for target, inputs in (("chain", {"value": 4}), ("mixed", {"value": 4})):
        [made] = await app.submit_many(target, [inputs], account_id="acme")
        request = await app._request(app.job_for(target), inputs, "acme", coerce_text=True, allow_local_paths=False)

        def by_steps(tx: Any, request: Any = request) -> str:
            now = time.time()
            tool_shas = {tid: app.engine._snapshot(tx, "tool", t, now) for tid, t in request.tools.items()}
            run_id = app.engine._create_run(tx, request.job, tool_shas, request, now, parent=None)
            app.engine._advance(tx, run_id, _Ctx(now, None, picked_up=False))
            return str(run_id)

        reference = await app.store.tx(by_steps)
        assert _snapshot_of_store(app, made.run_id or "") == _snapshot_of_store(app, reference)


async def test_runs_that_nest_or_end_at_once_go_the_run_by_run_way_in_the_same_batch(app: App) -> None:
    results = [
        *(await app.submit_many("ends", [{"value": 1}, {"value": -1}], account_id="acme")),
        *(await app.submit_many("outer", [{}, {}], account_id="acme")),
        *(await app.submit_many("mixed", [{"value": 5}], account_id="acme")),
    ]
    ended = await app.get_run(results[0].run_id or "", "acme")
    assert ended["status"] == "completed"  # its only step skipped: the run ended in its first plan
    assert ended["stepStatuses"][0]["status"] == "skipped"
    assert [e["type"] for e in await app.events(ended["jobRunId"], "acme")] == [
        "run.created", "step.skipped", "run.completed"]  # no worker ever had it
    await app.make_worker(8).run_until_idle(60)
    statuses = [(await app.get_run(r.run_id or "", "acme"))["status"] for r in results]
    assert statuses[1:] == ["completed"] * 4
    mixed = await app.get_run(results[4].run_id or "", "acme")
    assert {s["stepId"]: s["status"] for s in mixed["stepStatuses"]} == {
        "go": "succeeded", "never": "skipped", "after": "succeeded"}
    assert_no_stranded_runs(app.store)


async def test_concurrent_batches_with_the_same_keys_make_each_run_once(app: App) -> None:
    keys = [f"k{i}" for i in range(30)]
    rows = [{"value": i} for i in range(30)]
    batches = await asyncio.gather(
        *(app.submit_many("chain", rows, account_id="acme", idempotency_keys=keys, chunk=7) for _ in range(3))
    )
    for index in range(30):
        assert len({batch[index].run_id for batch in batches}) == 1
        assert sum(batch[index].created for batch in batches) == 1
    page = await app.list_runs("acme", limit=100)
    assert len(page.items) == 30


async def test_single_submits_arriving_together_are_stored_together(app: App) -> None:
    """Concurrent ``submit_run`` calls (a server's requests) share transactions (group commit): each
    gets its own run, a key sent twice at once names one run, a run that ends at once or nests a job
    among them is stored as alone, and no run is stranded."""
    calls = [app.submit_run("chain", {"value": i}, account_id="acme") for i in range(12)]
    calls += [app.submit_run("chain", {"value": 99}, account_id="acme", idempotency_key="same") for _ in range(3)]
    calls += [app.submit_run("ends", {"value": 1}, account_id="acme"), app.submit_run("outer", {}, account_id="acme")]
    before = app.submit_transactions
    made = await asyncio.gather(*calls)
    assert app.submit_transactions - before < len(calls)
    assert len({run_id for run_id, _ in made[:12]}) == 12 and all(created for _, created in made[:12])
    keyed = made[12:15]
    assert len({run_id for run_id, _ in keyed}) == 1 and sorted(created for _, created in keyed) == [False, False, True]
    for i, (run_id, _) in enumerate(made[:12]):
        run = await app.get_run(run_id, "acme")
        assert run["jobInputs"] == {"value": i}
    assert (await app.get_run(made[15][0], "acme"))["status"] == "completed"
    assert_no_stranded_runs(app.store)
