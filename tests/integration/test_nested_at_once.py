"""Nested runs that end in the transaction that makes them, many in a row.

A nested run whose steps all end at once (skipped by a condition that is false: a filter) ends in
the transaction that starts it, and its end advances its parent there and then. A map step over
such a nested job started the next item's run from inside the previous one's end, and so on: the
call stack grew with every item, and past a few hundred items Python's recursion limit was hit
(inside the condition of the next item's step, which then failed: one item failed, so the map step
and the run failed). Each item must start once and end, however many there are. Both stores."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.helpers.invariants import assert_no_stranded_runs

from toolweave.app import App
from toolweave.model.definitions import JobDefinition
from toolweave.settings import Settings
from toolweave.store.db import Tx

ITEMS = 1500

INNER = {
    # its only step runs for large values alone: for the values below, the run ends as it starts
    "jobId": "inner",
    "inputSchema": {"value": {"type": "integer", "default": 0}},
    "outputSchema": {"value": {"type": "integer", "sourceStepId": "c1", "sourceOutputName": "value"}},
    "steps": [{"stepId": "c1", "toolId": "test.instant", "condition": "job.value >= 1000000",
               "inputMappings": [{"sourceJobInput": "value", "targetInputName": "value"}]}],
}
OUTER = {
    "jobId": "outer",
    "inputSchema": {"xs": {"type": "json"}},
    "outputSchema": {"out": {"type": "json", "sourceStepId": "m", "sourceOutputName": "value"}},
    "steps": [{"stepId": "m", "jobId": "inner", "map": {"over": {"sourceJobInput": "xs"}, "concurrency": 10},
               "inputMappings": [{"sourceItem": True, "targetInputName": "value"}]}],
}


@pytest.fixture
async def app(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[App]:
    monkeypatch.setenv("TOOLWEAVE_TEST_STATE", str(tmp_path / "state"))
    instance = App(Settings(home=tmp_path / "home", database_url=db_url, test_tools=True))
    for data in (INNER, OUTER):
        assert instance.registry.register(JobDefinition.model_validate(data)) == []
    yield instance
    await instance.aclose()


async def test_a_map_over_nested_runs_that_end_as_they_start_ends_every_item(app: App) -> None:
    run_id = await app.submit("outer", {"xs": list(range(ITEMS))}, account_id="acme")
    await app.make_worker(4).run_until_idle(60)
    run = await app.get_run(run_id)
    assert run["status"] == "completed", run.get("error")
    assert run["stepStatuses"][0]["status"] == "succeeded"

    def rows(tx: Tx) -> dict[str, object]:
        return {
            "items": tx.all("SELECT status, attempt, COUNT(*) AS n FROM step_items WHERE run_id = :r "
                            "GROUP BY status, attempt", {"r": run_id}),
            "children": tx.all("SELECT status, COUNT(*) AS n FROM runs WHERE parent_run_id = :r GROUP BY status",
                               {"r": run_id}),
            "started": tx.all("SELECT data FROM events WHERE run_id = :r AND type = 'item.started'", {"r": run_id}),
        }

    found = app.store.read_sync(rows)
    assert [(r.status, r.attempt, r.n) for r in found["items"]] == [("succeeded", 1, ITEMS)]
    assert sum(r.n for r in found["children"]) == ITEMS  # one nested run per item
    assert {r.status for r in found["children"]} <= {"completed", "partially_completed"}
    assert Counter(e.data["item"] for e in found["started"]) == Counter(range(ITEMS))  # each started once
    assert_no_stranded_runs(app.store)
