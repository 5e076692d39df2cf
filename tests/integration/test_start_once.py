"""A step is started once per attempt, however stale the rows a transition decides from.

Each test moves a run on inside one transaction (a generation ends, the run is advanced from
its rows as they are), then advances it again from rows read *before* that: the planner, seeing
the step not yet started (or its failed attempt still running), decides to start it again. The
store must refuse that start (``runs.NEW_ATTEMPT``) and the run be decided again from its rows
as they are: one generation per attempt, the run not failed, and it runs to its end. (The batch
paths that once handed a transition such rows are fixed in ``recording``; this is the guard
behind them.) Both stores: on PostgreSQL the pipelined transaction finds the refusal at its
commit and runs again unpipelined."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.helpers.invariants import assert_no_stranded_runs

from toolweave.app import App
from toolweave.engine.work import _Ctx
from toolweave.model.definitions import JobDefinition
from toolweave.model.status import GenerationStatus
from toolweave.settings import Settings
from toolweave.store import generations as gens_q
from toolweave.store import items as items_q
from toolweave.store import runs as runs_q
from toolweave.store.db import Tx

CHAIN = {
    "jobId": "chain",
    "outputSchema": {"b": {"type": "integer", "sourceStepId": "b", "sourceOutputName": "value"}},
    "steps": [
        {"stepId": "a", "toolId": "test.instant", "inputMappings": [{"value": 1, "targetInputName": "value"}]},
        {"stepId": "b", "toolId": "test.instant",
         "inputMappings": [{"sourceStepId": "a", "sourceOutputName": "value", "targetInputName": "value"}]},
    ],
}
FALLBACK = {
    # a fails (its generation is failed by the test); its fallback tool runs as attempt 2
    "jobId": "fallback",
    "outputSchema": {"a": {"type": "integer", "sourceStepId": "a", "sourceOutputName": "value"}},
    "steps": [
        {"stepId": "a", "toolId": "test.instant", "inputMappings": [{"value": 1, "targetInputName": "value"}],
         "errorHandling": {"strategy": "fallback", "fallbackToolId": "test.instant"}},
    ],
}
MAP = {
    "jobId": "mapped",
    "inputSchema": {"xs": {"type": "json", "default": [1, 2]}},
    "outputSchema": {"out": {"type": "json", "sourceStepId": "m", "sourceOutputName": "value"}},
    "steps": [{"stepId": "m", "toolId": "test.instant", "map": {"over": {"sourceJobInput": "xs"}},
               "inputMappings": [{"sourceItem": True, "targetInputName": "value"}]}],
}


@pytest.fixture
async def app(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[App]:
    monkeypatch.setenv("TOOLWEAVE_TEST_STATE", str(tmp_path / "state"))
    instance = App(Settings(home=tmp_path / "home", database_url=db_url, test_tools=True))
    for data in (CHAIN, FALLBACK, MAP):
        assert instance.registry.register(JobDefinition.model_validate(data)) == []
    yield instance
    await instance.aclose()


def _generations(tx: Tx, run_id: str) -> list[Any]:
    return tx.all(
        "SELECT generation_id, step_id, attempt, item_index, status FROM generations WHERE run_id = :r",
        {"r": run_id},
    )


def _end_then_advance_twice(app: App, run_id: str, step_id: str, status: GenerationStatus) -> Any:
    """The transaction: the step's generation ends with ``status``; the rows are read (now stale);
    the run advances from its rows as they are, then again from the stale ones."""

    def body(tx: Tx) -> dict[str, Any]:
        now = time.time()
        gen = next(g for g in _generations(tx, run_id) if g.step_id == step_id and g.status == "pending")
        outputs = {"value": 2} if status is GenerationStatus.COMPLETED else None
        error = None if status is GenerationStatus.COMPLETED else {"message": "no", "retryable": False}
        gens_q.finish(tx, gen.generation_id, status, now, outputs=outputs, error=error)
        stale_run = runs_q.lock_state(tx, run_id)
        stale_rows = runs_q.step_rows(tx, run_id)
        app.engine._advance(tx, run_id, _Ctx(now, None))
        ctx = _Ctx(now, None)
        app.engine._advance(tx, run_id, ctx, run=stale_run, rows=stale_rows)
        return {"refused": ctx.refused, "gens": _generations(tx, run_id),
                "steps": {r.step_id: (r.status, r.attempt) for r in runs_q.steps(tx, run_id)}}

    return body


async def _to_the_end(app: App, run_id: str) -> dict[str, Any]:
    assert_no_stranded_runs(app.store)
    await app.make_worker(4).run_until_idle(30)
    run = await app.get_run(run_id)
    assert run["status"] == "completed", run
    return run


def _reruns_expected(app: App) -> int:
    """PostgreSQL found the refused start at the commit and ran the transaction again, once."""
    return 1 if app.store.dialect == "postgresql" else 0


async def test_a_step_after_one_that_ended_starts_once_from_stale_rows(app: App) -> None:
    run_id = await app.submit("chain", {}, account_id="acme")
    found = await app.store.tx(_end_then_advance_twice(app, run_id, "a", GenerationStatus.COMPLETED))
    assert found["refused"] == 1  # the stale decision started b again: refused
    assert found["steps"] == {"a": ("succeeded", 1), "b": ("running", 1)}
    assert Counter(g.step_id for g in found["gens"]) == {"a": 1, "b": 1}
    assert app.store.careful_reruns == _reruns_expected(app)
    run = await _to_the_end(app, run_id)
    assert run["finalOutputs"] == {"b": 3}
    gens = app.store.read_sync(lambda tx: _generations(tx, run_id))
    assert Counter(g.step_id for g in gens) == {"a": 1, "b": 1}
    started = app.store.read_sync(lambda tx: tx.all(
        "SELECT step_id FROM events WHERE run_id = :r AND type = 'step.started'", {"r": run_id}))
    assert Counter(e.step_id for e in started) == {"a": 1, "b": 1}


async def test_a_fallback_starts_from_a_running_step_once_from_stale_rows(app: App) -> None:
    """The fallback is the legitimate start from ``running`` (its attempt failed): it starts, as
    attempt 2; the stale decision, seeing attempt 1 still running and failed, starts it again: refused."""
    run_id = await app.submit("fallback", {}, account_id="acme")
    found = await app.store.tx(_end_then_advance_twice(app, run_id, "a", GenerationStatus.FAILED))
    assert found["refused"] == 1
    assert found["steps"] == {"a": ("running", 2)}
    assert sorted((g.attempt, g.status) for g in found["gens"]) == [(1, "failed"), (2, "pending")]
    assert app.store.careful_reruns == _reruns_expected(app)
    await _to_the_end(app, run_id)
    gens = app.store.read_sync(lambda tx: _generations(tx, run_id))
    assert sorted((g.attempt, g.status) for g in gens) == [(1, "failed"), (2, "completed")]


async def test_the_store_starts_an_attempt_only_on_a_row_before_it(app: App) -> None:
    """``runs.start_attempt`` and ``items.start`` (the compare-and-set of every start, and of a
    step made ready to be evaluated for an attempt), row by row: from pending, a retry due, or a
    failed running attempt, to a later attempt; from ready, to the attempt it was made ready for
    (or a fallback's); never to the attempt a row is running already, nor on a finished row."""
    run_id = await app.submit("mapped", {}, account_id="acme")
    await app.make_worker(4).run_until_idle(30)

    cases = [
        ("pending", 0, 1, True), ("pending", 1, 2, True), ("waiting_retry", 1, 2, True),
        ("running", 1, 2, True), ("ready", 1, 1, True), ("ready", 1, 2, True),
        ("running", 1, 1, False), ("running", 2, 1, False), ("pending", 1, 1, False),
        ("waiting_retry", 1, 1, False), ("ready", 2, 1, False), ("succeeded", 1, 2, False),
        ("failed", 1, 2, False), ("skipped", 0, 1, False), ("cancelled", 1, 2, False),
        ("waiting_input", 1, 2, False),
    ]

    def body(tx: Tx) -> list[tuple[str, int, int, bool, bool]]:
        seen = []
        for status, stored, attempt, _ in cases:
            tx.q("UPDATE step_runs SET status = :s, attempt = :a WHERE run_id = :r", {"s": status, "a": stored, "r": run_id})
            tx.q("UPDATE step_items SET status = :s, attempt = :a WHERE run_id = :r", {"s": status, "a": stored, "r": run_id})
            step = runs_q.start_attempt(tx, run_id, "m", attempt, status="running")
            item = items_q.start(tx, run_id, "m", 0, attempt, status="running")
            seen.append((status, stored, attempt, step, item))
        return seen

    found = await app.store.tx(body)
    if app.store.dialect == "postgresql":  # a refused one is found at the commit, then the careful run answers
        assert app.store.careful_reruns == 1
    for (status, stored, attempt, step, item), (*_, allowed) in zip(found, cases, strict=True):
        assert step is allowed, (status, stored, attempt)
        if status != "ready":  # an item is never ready
            assert item is allowed, (status, stored, attempt)
