"""A child run's end and its parent's own generation recorded in one batch (group commit, or
webhooks arriving together). The batch reads its runs' rows up front (on PostgreSQL their step
rows too), and runs the turns in the order of the run ids; a child made in the same millisecond
as its parent may sort first. Its end advances the parent (the step that ran it succeeds, the
steps after it start), and the parent's own turn must then decide from the parent as it is now,
not as the batch read it: no step lost (a join after both never starting), none started twice.
On both stores, with the child's id forced to sort before the parent's (and after it)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.helpers.invariants import assert_no_stranded_runs

from toolweave.app import App
from toolweave.engine import transitions
from toolweave.engine.work import DispatchWork, Outcome
from toolweave.model.definitions import JobDefinition
from toolweave.model.records import RunUpdate, ServiceErrorInfo
from toolweave.model.status import GenerationStatus
from toolweave.settings import Settings
from toolweave.store import runs as runs_q
from toolweave.store import tasks as tasks_q
from toolweave.store.db import Tx

INNER = {
    "jobId": "inner",
    "inputSchema": {"value": {"type": "integer", "default": 0}},
    "outputSchema": {"value": {"type": "integer", "sourceStepId": "c1", "sourceOutputName": "value"}},
    "steps": [{"stepId": "c1", "toolId": "test.instant",
               "inputMappings": [{"sourceJobInput": "value", "targetInputName": "value"}]}],
}
OUTER = {
    # a nested job (a) beside a step of the parent's own (b); a join after both (d), and a step
    # after the nested job alone (e)
    "jobId": "outer",
    "outputSchema": {
        "d": {"type": "integer", "sourceStepId": "d", "sourceOutputName": "value"},
        "e": {"type": "integer", "sourceStepId": "e", "sourceOutputName": "value"},
    },
    "steps": [
        {"stepId": "a", "jobId": "inner", "inputMappings": [{"value": 1, "targetInputName": "value"}]},
        {"stepId": "b", "toolId": "test.instant", "inputMappings": [{"value": 10, "targetInputName": "value"}]},
        {"stepId": "d", "toolId": "test.instant", "dependencies": ["b"],
         "inputMappings": [{"sourceStepId": "a", "sourceOutputName": "value", "targetInputName": "value"}]},
        {"stepId": "e", "toolId": "test.instant",
         "inputMappings": [{"sourceStepId": "a", "sourceOutputName": "value", "targetInputName": "value"}]},
    ],
}
STEPS = {"outer": ["a", "b", "d", "e"], "inner": ["c1"]}


@pytest.fixture
async def app(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[App]:
    monkeypatch.setenv("TOOLWEAVE_TEST_STATE", str(tmp_path / "state"))
    instance = App(Settings(home=tmp_path / "home", database_url=db_url, test_tools=True))
    for data in (INNER, OUTER):
        assert instance.registry.register(JobDefinition.model_validate(data)) == []
    yield instance
    await instance.aclose()


def _child_ids_sort(monkeypatch: pytest.MonkeyPatch, first: bool) -> None:
    """Each run id ``transitions`` makes (a run, then its nested run) sorts before the one made
    before it (``first``), or after it: the rest of the id stays time-ordered and random."""
    made = transitions.new_id
    count = iter(range(10**7, 0, -1) if first else range(10**7))

    def run_id(prefix: str = "") -> str:
        found = made(prefix)
        return f"{prefix}{next(count):08d}{found[len(prefix) + 8:]}" if prefix == "run_" else found

    monkeypatch.setattr(transitions, "new_id", run_id)


async def _both_dispatched(app: App) -> tuple[str, str, dict[str, DispatchWork]]:
    """Submit the outer job; claim the child's step and the parent's own: (parent, child, works by step)."""
    run_id = await app.submit("outer", {}, account_id="acme")
    items, _ = await app.store.tx(app.engine.claim_tx, "w", 10, time.time())
    works = {w.step_id: w for _, w in items}
    assert sorted(works) == ["b", "c1"]
    child_id = works["c1"].run_id
    assert works["b"].run_id == run_id != child_id
    return run_id, child_id, works


def _done(work: DispatchWork) -> RunUpdate:
    return RunUpdate(status=GenerationStatus.COMPLETED, outputs={"value": work.inputs["value"] + 1})


async def _check(app: App, run_id: str, child_id: str) -> None:
    """Right after the batch: the join and the step after the nested job started, nothing
    stranded; then run to the end: right outputs, each step started once, one generation each."""
    statuses = {s["stepId"]: s["status"] for s in (await app.get_run(run_id))["stepStatuses"]}
    assert statuses == {"a": "succeeded", "b": "succeeded", "d": "running", "e": "running"}
    assert_no_stranded_runs(app.store)
    await app.make_worker(4).run_until_idle(30)
    run = await app.get_run(run_id)
    assert run["status"] == "completed", run
    assert run["finalOutputs"] == {"d": 3, "e": 3}  # c1: 1 + 1; d and e: one more each

    def rows(tx: Tx) -> dict[str, Any]:
        return {
            "generations": tx.all("SELECT run_id, step_id FROM generations"),
            "started": tx.all("SELECT run_id, step_id FROM events WHERE type = 'step.started'"),
        }

    found = app.store.read_sync(rows)
    expected = Counter([(run_id, s) for s in STEPS["outer"] if s != "a"] + [(child_id, "c1")])
    assert Counter((g.run_id, g.step_id) for g in found["generations"]) == expected
    assert Counter((e.run_id, e.step_id) for e in found["started"]) == expected + Counter([(run_id, "a")])


@pytest.mark.parametrize("child_first", [True, False], ids=["child-sorts-first", "parent-sorts-first"])
async def test_a_child_s_end_and_its_parent_s_branch_in_one_group_commit(
    app: App, monkeypatch: pytest.MonkeyPatch, child_first: bool
) -> None:
    _child_ids_sort(monkeypatch, child_first)
    run_id, child_id, works = await _both_dispatched(app)
    assert (child_id < run_id) is child_first
    outcomes = [Outcome(w, None, _done(w), 0, 0, None) for w in works.values()]
    results = await app.store.tx(app.engine.record_submissions_tx, outcomes, time.time(), None)
    assert [cancel for _, cancel in results] == [False, False]
    assert app.store.careful_reruns == 0  # every compare-and-set applied as the rows it read said
    await _check(app, run_id, child_id)


@pytest.mark.parametrize("child_first", [True, False], ids=["child-sorts-first", "parent-sorts-first"])
async def test_a_child_s_end_and_its_parent_s_branch_in_one_webhook_batch(
    app: App, monkeypatch: pytest.MonkeyPatch, child_first: bool
) -> None:
    _child_ids_sort(monkeypatch, child_first)
    run_id, child_id, works = await _both_dispatched(app)
    now = time.time()

    def webhooks(tx: Tx) -> list[bool]:  # as ``webhooks`` records terminal reports arriving together
        held = runs_q.lock_states(tx, sorted({child_id, run_id}))()
        tasks_q.finish_many(tx, [w.claim for w in works.values()])
        ends = [(w.run_id, w.generation_id, _done(w)) for w in works.values()]
        return app.engine.finish_generations_tx(tx, ends, held, now)

    assert await app.store.tx(webhooks) == [True, True]
    assert app.store.careful_reruns == 0
    await _check(app, run_id, child_id)


async def test_a_parent_that_halts_cancels_its_child_whose_end_is_in_the_same_batch(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other way round: the parent's turn comes first, its branch fails and halts the run,
    which cancels the nested run; the nested run's own turn then finds it cancelled."""
    _child_ids_sort(monkeypatch, False)
    run_id, child_id, works = await _both_dispatched(app)
    failed = RunUpdate(status=GenerationStatus.FAILED, error=ServiceErrorInfo(message="no", retryable=False))
    outcomes = [Outcome(works["b"], None, failed, 0, 0, None), Outcome(works["c1"], None, _done(works["c1"]), 0, 0, None)]
    await app.store.tx(app.engine.record_submissions_tx, outcomes, time.time(), None)
    assert app.store.careful_reruns == 0
    parent, child = await app.get_run(run_id), await app.get_run(child_id)
    assert (parent["status"], child["status"]) == ("failed", "cancelled")
    assert {s["stepId"]: s["status"] for s in parent["stepStatuses"]} == {
        "a": "cancelled", "b": "failed", "d": "cancelled", "e": "cancelled"}
    assert {s["stepId"]: s["status"] for s in child["stepStatuses"]} == {"c1": "succeeded"}  # its work is kept
    assert_no_stranded_runs(app.store)
