"""A transition's step rows (``runs_q.step_rows``) on real stores: every step's status, the rows
of the steps the transition names at once, the others when one of them is first read (SQLite);
every row at once on PostgreSQL, where a read costs a round trip. The engine names steps only for a
run of more than ``FEW_STEPS`` steps (``step_views.wanted_rows``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from toolweave.app import App
from toolweave.engine import plan
from toolweave.engine.step_views import wanted_rows
from toolweave.model.definitions import JobDefinition
from toolweave.settings import Settings
from toolweave.store import runs as runs_q
from toolweave.store.db import Tx


@pytest.fixture
async def app(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[App]:
    monkeypatch.setenv("TOOLWEAVE_TEST_STATE", str(tmp_path / "state"))
    instance = App(Settings(home=tmp_path / "home", database_url=db_url, test_tools=True))
    yield instance
    await instance.aclose()


async def submit_fan(app: App, width: int) -> str:
    job = JobDefinition.model_validate({
        "jobId": "fan",
        "steps": [
            {"stepId": "root", "toolId": "test.instant", "inputMappings": [{"value": 0, "targetInputName": "value"}]},
            *({"stepId": f"b{i}", "toolId": "test.instant", "dependencies": ["root"],
               "inputMappings": [{"value": i, "targetInputName": "value"}]} for i in range(width)),
        ],
    })
    assert app.registry.register(job) == []
    return await app.submit("fan", {}, account_id="acme")


def _mark(tx: Tx, run_id: str, step_id: str) -> None:
    tx.q("UPDATE step_runs SET reason = 'changed' WHERE run_id = :r AND step_id = :s", {"r": run_id, "s": step_id})


async def test_the_rows_a_transition_names_now_the_rest_when_first_read(app: App, db_url: str) -> None:
    width = runs_q.FEW_STEPS + 2
    run_id = await submit_fan(app, width)
    lazy = db_url.startswith("sqlite")

    def read(tx: Tx) -> None:
        rows = runs_q.step_rows(tx, run_id, {"root", "b0", "nowhere"})
        ids = ["root", *(f"b{i}" for i in range(width))]
        assert rows.statuses == {**dict.fromkeys(ids, "pending"), "root": rows["root"]["status"]}
        assert sorted(rows) == sorted(ids) and len(rows) == width + 1
        assert "b1" in rows and "nowhere" not in rows
        # changed after the read: a row read at once shows the run as it was, a row read when first
        # needed shows it as the transaction finds it then
        _mark(tx, run_id, "b0")
        _mark(tx, run_id, "b1")
        assert rows["b0"]["reason"] is None
        assert rows["b1"]["reason"] == ("changed" if lazy else None)
        _mark(tx, run_id, "b2")
        assert rows["b2"]["reason"] is None  # read with b1 (the rest are read together)
        assert rows["root"].step_id == "root" and rows["root"]["work_status"] == "pending"  # with its work
        with pytest.raises(KeyError):
            rows["nowhere"]
        every = runs_q.step_rows(tx, run_id)  # no steps named: every row now
        _mark(tx, run_id, "root")
        assert every["b1"]["reason"] == "changed" and every["root"]["reason"] is None
        raise _RollBack

    with pytest.raises(_RollBack):
        await app.store.tx(read)


class _RollBack(Exception):
    pass


def test_a_transition_of_a_run_of_few_steps_reads_every_row_at_once() -> None:
    def fan(width: int) -> plan.Graph:
        return plan.graph_of(JobDefinition.model_validate({"jobId": "fan", "steps": [
            {"stepId": "root", "toolId": "t"},
            *({"stepId": f"b{i}", "toolId": "t", "dependencies": ["root"]} for i in range(width)),
            {"stepId": "join", "toolId": "t", "dependencies": [f"b{i}" for i in range(width)]},
        ]}))

    touched = frozenset({"b0"})
    assert wanted_rows(fan(runs_q.FEW_STEPS - 2), touched) is None  # one statement for all rows
    assert wanted_rows(fan(runs_q.FEW_STEPS), touched) == {"b0", "join"}
    assert wanted_rows(fan(runs_q.FEW_STEPS), frozenset({"root"})) == {"root", *(f"b{i}" for i in range(runs_q.FEW_STEPS))}
    assert wanted_rows(fan(runs_q.FEW_STEPS), None) is None  # every step decided: every row
