"""Answers that come too late: a question whose timeout has passed is not answered by a person,
even when no worker has taken its timeout's answer yet (the worker was busy or down). The answer
would otherwise depend on how late the workers are. On both stores."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.integration.test_ask_steps import pick_job, run_all

from toolweave.app import App, Conflict
from toolweave.settings import Settings


@pytest.fixture
async def app(db_url: str, tmp_path: Path) -> AsyncIterator[App]:
    instance = App(Settings(home=tmp_path / "home", database_url=db_url, test_tools=True))
    assert instance.registry.register(pick_job("late", onTimeout="reject")) == []
    yield instance
    await instance.aclose()


async def test_an_answer_after_the_timeout_is_refused_and_the_timeout_answers(app: App) -> None:
    run_id = await app.submit("late", {}, account_id="acme")
    await run_all(app)
    assert (await app.get_run(run_id))["status"] == "waiting_input"
    later = time.time() + 3601  # the hour has passed; no worker has taken the timeout's task yet
    with pytest.raises(Conflict, match="nobody answered in time"):
        await app.store.tx(app.engine.answer_tx, run_id, "pick", "acme", {"chosen": [2]}, later)
    run = await app.get_run(run_id)
    pick = next(s for s in run["stepStatuses"] if s["stepId"] == "pick")
    assert pick["question"]["status"] == "waiting" and pick["question"]["answer"] is None  # nothing recorded
    # the timeout's task, when a worker takes it, answers with onTimeout (reject: the run fails)
    claimed, _ = await app.store.tx(app.engine.claim_tx, "clock", 10, later)
    assert [t.kind.value for t, _w in claimed] == ["advance"]
    await app.store.tx(app.engine.advance_tx, run_id, claimed[0][0].claim, later, None)
    run = await app.get_run(run_id)
    assert run["status"] == "failed" and run["error"]["code"] == "ask_timeout", run["error"]


async def test_an_answer_just_before_the_timeout_is_taken(app: App) -> None:
    run_id = await app.submit("late", {}, account_id="acme")
    await run_all(app)
    sooner = time.time() + 3500
    done = await app.store.tx(app.engine.answer_tx, run_id, "pick", "acme", {"chosen": [2]}, sooner)
    assert done.answer == {"decision": "approve", "chosen": [2]}
