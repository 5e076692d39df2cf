"""Map steps end to end on real stores (SQLite and PostgreSQL) with a real worker and real tools:
outputs in input order, per-item status, attempts, errors and cost, the concurrency limit, partial
failure, nested jobs per item, cancelling, retrying, and lists that are not lists or too long."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from tests.integration.test_engine import app, job, register, run_all, steps_by_id

from toolweave.app import App, NotFound
from toolweave.model.definitions import CostingModel, Money, RateSource
from toolweave.services.builtin.testing import INSTANT

__all__ = ["app"]  # the fixture


def inc_all(**map_fields: Any) -> Any:
    return job({
        "jobId": "inc_all",
        "inputSchema": {"values": {"type": "json", "required": True}},
        "outputSchema": {"values": {"type": "json", "sourceStepId": "inc", "sourceOutputName": "value"},
                         "notes": {"type": "json", "sourceStepId": "inc", "sourceOutputName": "note"}},
        "steps": [{
            "stepId": "inc", "toolId": "test.instant", "map": {"over": {"sourceJobInput": "values"}, **map_fields},
            "inputMappings": [{"sourceItem": True, "targetInputName": "value"},
                              {"template": "#{{ index }}", "targetInputName": "note"}],
        }],
    })


def priced_instant() -> Any:
    """test.instant at $0.01 a call (a second version of the builtin: the same implementation)."""
    return INSTANT.model_copy(update={
        "version": "2",
        "costing_model": CostingModel(rate_source=RateSource.STATIC, static_cost=Money(amount=Decimal("0.01"))),
    })


async def test_a_map_step_runs_each_item_and_gathers_the_outputs_in_input_order(app: App) -> None:
    register(app, priced_instant(), inc_all(concurrency=3))
    values = [5, 1, 9, 0, 7, 3, 3]
    run_id = await app.submit("inc_all", {"values": values}, account_id="acme")
    await run_all(app)
    run = await app.get_run(run_id)
    assert run["status"] == "completed"
    assert run["finalOutputs"] == {"values": [v + 1 for v in values], "notes": [f"#{i}" for i in range(7)]}
    step = steps_by_id(run)["inc"]
    assert step["items"] == {"total": 7, "succeeded": 7, "failed": 0, "running": 0, "waitingRetry": 0,
                             "pending": 0, "cancelled": 0}
    assert step["toolId"] == "test.instant" and step["progress"] == 1.0
    assert Decimal(run["costUsd"]) == Decimal("0.07")
    assert sorted(g["itemIndex"] for g in run["generations"]) == list(range(7))
    page = await app.step_items(run_id, "inc", "acme", limit=5)
    assert [i["index"] for i in page["items"]] == [0, 1, 2, 3, 4] and page["nextAfter"] == 4
    assert [(i["item"], i["outputs"]["value"], i["attempt"], i["costUsd"]) for i in page["items"]][:2] == [
        (5, 6, 1, "0.01"), (1, 2, 1, "0.01")]
    rest = await app.step_items(run_id, "inc", "acme", after=page["nextAfter"])
    assert [i["index"] for i in rest["items"]] == [5, 6] and rest["nextAfter"] is None
    types = [e["type"] for e in await app.events(run_id)]
    assert types.count("item.started") == 7 and types.count("item.succeeded") == 7
    assert types.count("step.succeeded") == 1 and types[-1] == "run.completed"
    with pytest.raises(NotFound):
        await app.step_items(run_id, "inc", "mallory")
    with pytest.raises(NotFound):
        await app.step_items(run_id, "nope", "acme")


async def test_never_more_items_in_flight_than_the_concurrency(app: App) -> None:
    register(app, job({
        "jobId": "naps", "inputSchema": {"secs": {"type": "json"}},
        "steps": [{"stepId": "nap", "toolId": "test.sleep", "map": {"over": {"sourceJobInput": "secs"}, "concurrency": 2},
                   "inputMappings": [{"sourceItem": True, "targetInputName": "seconds"}]}],
    }))
    run_id = await app.submit("naps", {"secs": [0.2] * 6}, account_id="acme")
    await run_all(app)
    page = await app.step_items(run_id, "nap", "acme")
    spans = [(i["startedAt"], i["finishedAt"]) for i in page["items"]]
    assert all(s and f for s, f in spans)
    for start, _ in spans:  # at any item's start, at most 2 items (it included) have started and not finished
        overlapping = sum(1 for s, f in spans if s <= start < f)
        assert overlapping <= 2, spans
    starts = [s for s, _ in spans]
    assert starts == sorted(starts)  # items start in input order


async def test_errors_are_handled_per_item_and_min_success_decides_the_step(app: App) -> None:
    register(app, job({
        "jobId": "flaky_items", "inputSchema": {"ns": {"type": "json"}},
        "outputSchema": {"attempts": {"type": "json", "sourceStepId": "try", "sourceOutputName": "attempts"}},
        "steps": [{
            "stepId": "try", "toolId": "test.fail_n_times",
            "map": {"over": {"sourceJobInput": "ns"}, "minSuccess": "60%", "concurrency": 4},
            "errorHandling": {"strategy": "retry", "maxAttempts": 2, "backoffSeconds": 0.05},
            "inputMappings": [{"sourceItem": True, "path": "n", "targetInputName": "n"},
                              {"template": "{{ job.ns[index].key }}", "targetInputName": "key"}],
        }],
    }))
    ns = [{"n": 0, "key": "a"}, {"n": 1, "key": "b"}, {"n": 5, "key": "c"}, {"n": 0, "key": "d"}, {"n": 1, "key": "e"}]
    run_id = await app.submit("flaky_items", {"ns": ns}, account_id="acme")
    await run_all(app)
    run = await app.get_run(run_id)
    assert run["status"] == "partially_completed", run["error"]
    assert run["finalOutputs"]["attempts"] == [1, 2, None, 1, 2]
    items = {i["index"]: i for i in (await app.step_items(run_id, "try", "acme"))["items"]}
    assert [items[i]["attempt"] for i in range(5)] == [1, 2, 2, 1, 2]
    assert items[2]["status"] == "failed" and "fails on purpose" in items[2]["error"]["message"]
    assert steps_by_id(run)["try"]["items"]["failed"] == 1
    assert sum(1 for g in run["generations"] if g["itemIndex"] == 2) == 2  # both attempts recorded

    # every item must succeed (the default): the first item out of attempts fails the run and stops the rest
    strict = job({**inc_all().dump(), "jobId": "strict"})
    strict.steps[0].tool_id = "test.fail_n_times"
    strict.steps[0].input_mappings = [
        type(strict.steps[0].input_mappings[0]).model_validate({"sourceItem": True, "targetInputName": "n"}),
        type(strict.steps[0].input_mappings[0]).model_validate({"template": "s{{ index }}", "targetInputName": "key"}),
        type(strict.steps[0].input_mappings[0]).model_validate({"value": False, "targetInputName": "retryable"}),
    ]
    strict.output_schema = []
    register(app, strict)
    failed_id = await app.submit("strict", {"values": [0, 3, 0, 0, 0, 0, 0, 0, 0, 0]}, account_id="acme")
    await run_all(app)
    failed = await app.get_run(failed_id)
    assert failed["status"] == "failed"
    assert "1 of 10 items of step 'inc' failed (item 1:" in failed["error"]["message"]
    counts = steps_by_id(failed)["inc"]["items"]
    assert counts["failed"] == 1 and counts["succeeded"] + counts["failed"] + counts["cancelled"] == 10


async def test_a_nested_job_runs_once_per_item(app: App) -> None:
    register(
        app,
        job({"jobId": "child", "inputSchema": {"v": {"type": "integer"}},
             "outputSchema": {"v": {"type": "integer", "sourceStepId": "b", "sourceOutputName": "value"}},
             "steps": [{"stepId": "a", "toolId": "test.instant", "inputMappings": [{"sourceJobInput": "v", "targetInputName": "value"}]},
                       {"stepId": "b", "toolId": "test.instant", "inputMappings": [{"sourceStepId": "a", "sourceOutputName": "value", "targetInputName": "value"}]}]}),
        job({"jobId": "parent", "inputSchema": {"vs": {"type": "json"}},
             "outputSchema": {"vs": {"type": "json", "sourceStepId": "each", "sourceOutputName": "v"}},
             "steps": [{"stepId": "each", "jobId": "child", "map": {"over": {"sourceJobInput": "vs"}, "concurrency": 2},
                        "inputMappings": [{"sourceItem": True, "targetInputName": "v"}]}]}),
    )
    run_id = await app.submit("parent", {"vs": [10, 20, 30]}, account_id="acme")
    await run_all(app)
    run = await app.get_run(run_id)
    assert run["status"] == "completed" and run["finalOutputs"] == {"vs": [12, 22, 32]}
    children = [i["childRunId"] for i in (await app.step_items(run_id, "each", "acme"))["items"]]
    assert len(set(children)) == 3 and all(children)
    child = await app.get_run(children[1], "acme")
    assert child["parentRunId"] == run_id and child["finalOutputs"] == {"v": 22}


async def test_cancelling_a_run_stops_its_items_and_a_retry_reruns_only_the_unfinished_ones(app: App, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    register(app, job({
        "jobId": "slow_items", "inputSchema": {"notes": {"type": "json"}, "gate": {"type": "string"}},
        "outputSchema": {"notes": {"type": "json", "sourceStepId": "wait", "sourceOutputName": "note"}},
        "steps": [{"stepId": "wait", "toolId": "test.slow_async", "map": {"over": {"sourceJobInput": "notes"}, "concurrency": 2},
                   "inputMappings": [{"sourceItem": True, "targetInputName": "note"}, {"sourceJobInput": "gate", "targetInputName": "gate"},
                                     {"value": 3600, "targetInputName": "seconds"}]}],
    }))
    run_id = await app.submit("slow_items", {"notes": ["a", "b", "c", "d"], "gate": str(gate)}, account_id="acme")
    await run_all(app, timeout=3)  # submits the first two and leaves them waiting
    before = steps_by_id(await app.get_run(run_id))["wait"]["items"]
    assert before["running"] == 2 and before["pending"] == 2
    assert await app.cancel(run_id) in ("cancelled", "running")
    await run_all(app, timeout=10)
    run = await app.get_run(run_id)
    assert run["status"] == "cancelled"
    assert steps_by_id(run)["wait"]["items"]["cancelled"] == 4
    assert {g["status"] for g in run["generations"]} == {"cancelled"}

    gate.touch()  # the backend now completes what it is given
    await app.retry(run_id, "acme")
    await run_all(app, timeout=60)
    retried = await app.get_run(run_id)
    assert retried["status"] == "completed" and retried["finalOutputs"] == {"notes": ["a", "b", "c", "d"]}


async def test_a_list_that_is_not_a_list_or_too_long_fails_with_a_clear_error(app: App) -> None:
    register(app, inc_all(maxItems=50))
    bad_id = await app.submit("inc_all", {"values": {"not": "a list"}}, account_id="acme")
    long_id = await app.submit("inc_all", {"values": list(range(51))}, account_id="acme")
    await run_all(app)
    bad = await app.get_run(bad_id)
    assert bad["status"] == "failed"
    assert "step 'inc' maps over job input 'values', which is an object, not a list" in bad["error"]["message"]
    long = await app.get_run(long_id)
    assert "maps over 51 items; it takes at most 50 (map.maxItems)" in long["error"]["message"]
    for run in (bad, long):
        assert run["generations"] == [] and steps_by_id(run)["inc"]["items"] is None


async def test_hundreds_of_items_keep_rows_linear(app: App) -> None:
    register(app, inc_all(concurrency=16))
    n = 400
    run_id = await app.submit("inc_all", {"values": list(range(n))}, account_id="acme")
    await run_all(app, timeout=120)
    run = await app.get_run(run_id)
    assert run["status"] == "completed" and run["finalOutputs"]["values"] == [v + 1 for v in range(n)]
    events = await app.events(run_id, after=0)
    rows = await app.store.read(lambda tx: {
        "items": tx.one("SELECT COUNT(*) AS n FROM step_items WHERE run_id = :r", {"r": run_id}).n,
        "generations": tx.one("SELECT COUNT(*) AS n FROM generations WHERE run_id = :r", {"r": run_id}).n,
        "events": tx.one("SELECT COUNT(*) AS n FROM events WHERE run_id = :r", {"r": run_id}).n,
        "tasks": tx.one("SELECT COUNT(*) AS n FROM tasks WHERE run_id = :r", {"r": run_id}).n,
    })
    assert rows["items"] == n and rows["generations"] == n and rows["tasks"] == 0
    assert rows["events"] <= 2 * n + 10 and len(events) == min(rows["events"], 1000)


async def test_each_item_goes_through_the_tools_contract(app: App) -> None:
    """An item the tool refuses (not a whole number, above a maximum) fails alone with
    invalid_input, before anything reaches the backend; the others run."""
    register(app, inc_all(minSuccess=1), job({
        "jobId": "naps_bounded", "inputSchema": {"secs": {"type": "json"}},
        "steps": [{"stepId": "nap", "toolId": "test.sleep", "map": {"over": {"sourceJobInput": "secs"}, "minSuccess": 1},
                   "inputMappings": [{"sourceItem": True, "targetInputName": "seconds"}]}],
    }))
    run_id = await app.submit("inc_all", {"values": ["7", "seven", 2.5, 3]}, account_id="acme")
    naps_id = await app.submit("naps_bounded", {"secs": [0, 99999]}, account_id="acme")
    await run_all(app)
    run = await app.get_run(run_id)
    assert run["status"] == "partially_completed"
    assert run["finalOutputs"]["values"] == [8, None, None, 4]  # "7" is coerced like any input
    items = (await app.step_items(run_id, "inc", "acme"))["items"]
    assert [i["status"] for i in items] == ["succeeded", "failed", "failed", "succeeded"]
    assert items[1]["error"]["code"] == "invalid_input" and "tool 'test.instant' refused its inputs" in items[1]["error"]["message"]
    assert sorted(g["itemIndex"] for g in run["generations"]) == [0, 3]  # the refused items never reached the tool
    naps = (await app.step_items(naps_id, "nap", "acme"))["items"]
    assert naps[1]["status"] == "failed" and "must be at most 3600" in naps[1]["error"]["message"]
