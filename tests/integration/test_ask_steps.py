"""Steps that ask a person, end to end on real stores (SQLite and PostgreSQL) with a real worker:
the run waits as rows (no task but its timeout's), answers from the run's account or an approver,
another account refused as if the run did not exist, repeats, garbage, the timeout's default
answer with a moved clock, cancel and retry, and concurrent answers (exactly one wins)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.helpers.invariants import assert_no_stranded_runs

from toolweave.app import AnswerError, App, Conflict, NotFound
from toolweave.model.definitions import JobDefinition
from toolweave.settings import Settings


def pick_job(job_id: str = "pick", **ask: Any) -> JobDefinition:
    """Four numbers from a map step; a person picks one; the next step gets the choice."""
    return JobDefinition.model_validate({
        "jobId": job_id,
        "inputSchema": {"start": {"type": "integer", "default": 10}},
        "outputSchema": {"result": {"type": "integer", "sourceStepId": "after", "sourceOutputName": "value"}},
        "steps": [
            {"stepId": "gen", "toolId": "test.instant", "map": {"over": {"value": [0, 1, 2, 3]}},
             "inputMappings": [{"sourceItem": True, "targetInputName": "value"}]},
            {"stepId": "pick", "ask": {"kind": "choose", "question": "Which one?", "timeout": "1h", **ask},
             "inputMappings": [{"sourceStepId": "gen", "sourceOutputName": "value", "targetInputName": "candidates"}]},
            {"stepId": "after", "toolId": "test.instant",
             "inputMappings": [{"sourceStepId": "pick", "sourceOutputName": "chosen", "targetInputName": "value"}]},
        ],
    })


@pytest.fixture
async def app(db_url: str, tmp_path: Path) -> AsyncIterator[App]:
    instance = App(Settings(home=tmp_path / "home", database_url=db_url, test_tools=True))
    problems = instance.registry.register(pick_job())
    assert problems == [], [str(p) for p in problems]
    yield instance
    await instance.aclose()


async def run_all(app: App) -> None:
    await app.make_worker(4).run_until_idle(30)


async def waiting_run(app: App, account: str = "acme") -> str:
    run_id = await app.submit("pick", {}, account_id=account)
    await run_all(app)
    run = await app.get_run(run_id)
    assert run["status"] == "waiting_input", run
    return run_id


async def test_the_run_waits_as_rows_and_the_choice_feeds_the_next_step(app: App) -> None:
    run_id = await waiting_run(app)
    run = await app.get_run(run_id, "acme")
    question = run["waitingFor"][0]
    assert question["candidates"] == [1, 2, 3, 4] and question["kind"] == "choose"
    assert "your run needs you" in run["statusDetail"]
    # waiting costs rows: no task but the advance that fires the timeout, nothing leased
    tasks = await app.store.read(lambda tx: tx.all("SELECT kind, available_at, lease_owner FROM tasks"))
    assert [(t.kind, t.lease_owner) for t in tasks] == [("advance", None)]
    assert tasks[0].available_at == pytest.approx(time.time() + 3600, abs=60)
    assert_no_stranded_runs(app.store)
    types = [e["type"] for e in await app.events(run_id)]
    assert "step.waiting_input" in types and "run.waiting_input" in types

    done = await app.answer(run_id, "pick", "acme", {"chosen": [2]})
    assert done["repeated"] is False and done["answer"] == {"decision": "approve", "chosen": [2]}
    await run_all(app)
    run = await app.get_run(run_id)
    assert run["status"] == "completed" and run["finalOutputs"] == {"result": 4}
    pick = next(s for s in run["stepStatuses"] if s["stepId"] == "pick")
    assert pick["outputs"]["chosen"] == 3 and pick["outputs"]["answeredBy"] == "acme"
    assert pick["question"]["status"] == "answered"
    # the same answer again answers as before; a different one is a conflict
    again = await app.answer(run_id, "pick", "acme", {"chosen": [2]})
    assert again["repeated"] is True
    with pytest.raises(Conflict, match="answered already by acme"):
        await app.answer(run_id, "pick", "acme", {"chosen": [1]})
    types = [e["type"] for e in await app.events(run_id)]
    assert types.count("step.answered") == 1 and "run.resumed" in types


async def test_another_account_is_refused_as_if_the_run_did_not_exist(app: App) -> None:
    run_id = await waiting_run(app)
    with pytest.raises(NotFound):
        await app.answer(run_id, "pick", "mallory", {"chosen": [0]})
    with pytest.raises(NotFound):
        await app.question(run_id, "pick", "mallory")
    with pytest.raises(NotFound):
        await app.answer(run_id, "no-such-step", "mallory", {"chosen": [0]})
    assert await app.waiting_questions("mallory") == []
    assert (await app.get_run(run_id))["status"] == "waiting_input"


async def test_an_approver_named_by_the_definition_may_answer(app: App) -> None:
    assert app.registry.register(pick_job("pick2", approvers=["reviewer"])) == []
    run_id = await app.submit("pick2", {}, account_id="acme")
    await run_all(app)
    assert [q["runId"] for q in await app.waiting_questions("reviewer")] == [run_id]
    assert (await app.question(run_id, "pick", "reviewer"))["candidates"] == [1, 2, 3, 4]
    with pytest.raises(NotFound):
        await app.get_run(run_id, "reviewer")  # an approver answers; the run stays the account's
    done = await app.answer(run_id, "pick", "reviewer", {"decision": "approve", "chosen": 0})
    assert done["answeredBy"] == "reviewer"
    await run_all(app)
    assert (await app.get_run(run_id))["finalOutputs"] == {"result": 2}


async def test_garbage_answers_name_the_field_and_change_nothing(app: App) -> None:
    run_id = await waiting_run(app)
    for garbage in (None, [1], "2", {"chosen": [9]}, {"chosen": ["x"]}, {"chosen": [0, 1]}, {"decision": "yes"},
                    {"chosen": [0], "values": {"a": 1}}, {"chosen": [0], "junk": "\x00" * 10}):
        with pytest.raises(AnswerError) as caught:
            await app.answer(run_id, "pick", "acme", garbage)
        assert caught.value.problems, garbage
    with pytest.raises(Conflict, match=r"runs 'test\.instant'"):
        await app.answer(run_id, "after", "acme", {"decision": "approve"})
    run = await app.get_run(run_id)
    assert run["status"] == "waiting_input" and run["waitingFor"][0]["answer"] is None


async def test_the_timeout_answers_with_the_default_action_when_its_task_falls_due(app: App) -> None:
    assert app.registry.register(pick_job("pick3", onTimeout="approve")) == []
    run_id = await app.submit("pick3", {}, account_id="acme")
    await run_all(app)
    later = time.time() + 3601
    # the clock moves: the advance task that fires the timeout is due, and a worker takes it
    claimed, _ = await app.store.tx(app.engine.claim_tx, "clock", 10, later)
    assert [t.kind.value for t, _w in claimed] == ["advance"]
    await app.store.tx(app.engine.advance_tx, run_id, claimed[0][0].claim, later, None)
    await run_all(app)
    run = await app.get_run(run_id)
    assert run["status"] == "completed" and run["finalOutputs"] == {"result": 2}
    pick = next(s for s in run["stepStatuses"] if s["stepId"] == "pick")
    assert pick["outputs"]["timedOut"] is True and pick["question"]["status"] == "expired"
    with pytest.raises(Conflict, match="nobody answered in time"):
        await app.answer(run_id, "pick", "acme", {"chosen": [1]})


async def test_a_rejection_fails_the_run_and_a_retry_asks_again(app: App) -> None:
    run_id = await waiting_run(app)
    await app.answer(run_id, "pick", "acme", {"decision": "reject", "comment": "none of these"})
    run = await app.get_run(run_id)
    assert run["status"] == "failed" and "rejected by acme: none of these" in run["error"]["message"]
    await app.retry(run_id, "acme")
    await run_all(app)
    run = await app.get_run(run_id)
    assert run["status"] == "waiting_input"
    questions = [s["question"] for s in run["stepStatuses"] if s["stepId"] == "pick"]
    assert questions[0]["status"] == "waiting" and questions[0]["answer"] is None
    await app.answer(run_id, "pick", "acme", {"chosen": [3]})
    await run_all(app)
    assert (await app.get_run(run_id))["finalOutputs"] == {"result": 5}


async def test_cancelling_a_waiting_run_closes_its_question(app: App) -> None:
    run_id = await waiting_run(app)
    assert await app.cancel(run_id, "acme") == "cancelled"
    run = await app.get_run(run_id)
    assert run["stepStatuses"][1]["status"] == "cancelled" and run["stepStatuses"][1]["question"]["status"] == "closed"
    with pytest.raises(Conflict, match="ended without an answer"):
        await app.answer(run_id, "pick", "acme", {"chosen": [0]})


async def test_concurrent_answers_exactly_one_wins(app: App) -> None:
    run_id = await waiting_run(app)
    others = [App(Settings(home=app.settings.home, database_url=app.settings.database_url, test_tools=True))
              for _ in range(4)]
    try:
        results = await asyncio.gather(
            *(other.answer(run_id, "pick", "acme", {"chosen": [i % 4]}) for i, other in enumerate(others * 3)),
            return_exceptions=True,
        )
    finally:
        for other in others:
            await other.aclose()
    won = [r for r in results if isinstance(r, dict) and not r["repeated"]]
    repeated = [r for r in results if isinstance(r, dict) and r["repeated"]]
    lost = [r for r in results if isinstance(r, Conflict)]
    assert len(won) == 1, results
    assert len(won) + len(repeated) + len(lost) == len(results), results
    assert all(r["answer"] == won[0]["answer"] for r in repeated)
    await run_all(app)
    run = await app.get_run(run_id)
    assert run["status"] == "completed"
    assert run["finalOutputs"]["result"] == won[0]["answer"]["chosen"][0] + 2
    assert [e["type"] for e in await app.events(run_id)].count("step.answered") == 1


async def test_a_fork_reuses_an_answer_or_asks_again_from_the_asking_step(app: App) -> None:
    run_id = await waiting_run(app)
    await app.answer(run_id, "pick", "acme", {"chosen": [1]})
    await run_all(app)
    reused = await app.fork(run_id, "acme", from_step="after")
    await run_all(app)
    run = await app.get_run(reused)
    assert run["status"] == "completed" and run["finalOutputs"] == {"result": 3}
    assert next(s for s in run["stepStatuses"] if s["stepId"] == "pick")["reusedFromRunId"] == run_id
    again = await app.fork(run_id, "acme", from_step="pick")
    await run_all(app)
    assert (await app.get_run(again))["status"] == "waiting_input"
    await app.answer(again, "pick", "acme", {"chosen": [0]})
    await run_all(app)
    assert (await app.get_run(again))["finalOutputs"] == {"result": 2}


async def test_a_rejection_that_continues_takes_the_branch_a_condition_names(app: App) -> None:
    branching = JobDefinition.model_validate({
        "jobId": "review",
        "steps": [
            {"stepId": "ok", "ask": {"kind": "approve", "question": "Publish?", "onReject": "continue"}},
            {"stepId": "publish", "toolId": "test.instant", "dependencies": ["ok"],
             "condition": "steps.ok.outputs.approved", "inputMappings": [{"value": 1, "targetInputName": "value"}]},
            {"stepId": "archive", "toolId": "test.instant", "dependencies": ["ok"],
             "condition": "!steps.ok.outputs.approved", "inputMappings": [{"value": 2, "targetInputName": "value"}]},
        ],
    })
    assert app.registry.register(branching) == []
    statuses = {}
    for decision in ("approve", "reject"):
        run_id = await app.submit("review", {}, account_id="acme")
        await run_all(app)
        assert (await app.get_run(run_id))["status"] == "waiting_input"
        await app.answer(run_id, "ok", "acme", {"decision": decision})
        await run_all(app)
        run = await app.get_run(run_id)
        assert run["status"] == "completed"
        statuses[decision] = {s["stepId"]: s["status"] for s in run["stepStatuses"]}
    assert statuses["approve"] == {"ok": "succeeded", "publish": "succeeded", "archive": "skipped"}
    assert statuses["reject"] == {"ok": "succeeded", "publish": "skipped", "archive": "succeeded"}


async def test_a_nested_job_that_asks_makes_its_parent_wait_too(app: App) -> None:
    parent = JobDefinition.model_validate({
        "jobId": "outer",
        "steps": [{"stepId": "inner", "jobId": "pick"},
                  {"stepId": "last", "toolId": "test.instant",
                   "inputMappings": [{"sourceStepId": "inner", "sourceOutputName": "result", "targetInputName": "value"}]}],
    })
    assert app.registry.register(parent) == []
    run_id = await app.submit("outer", {}, account_id="acme")
    await run_all(app)
    run = await app.get_run(run_id, "acme")
    assert run["status"] == "waiting_input"
    (question,) = run["waitingFor"]
    child = question["runId"]
    assert child != run_id and "your run needs you" in run["statusDetail"]
    await app.answer(child, "pick", "acme", {"chosen": [3]})
    await run_all(app)
    run = await app.get_run(run_id)
    assert run["status"] == "completed"
    assert run["stepStatuses"][1]["outputs"]["value"] == 6  # candidate #3 is 4, after gives 5, last 6
    types = [e["type"] for e in await app.events(run_id)]
    assert "run.waiting_input" in types and "run.resumed" in types


async def test_a_map_over_a_nested_job_that_asks_makes_its_parent_wait_too(app: App) -> None:
    """Each item's child run asks; the parent waits for a person (not "queued, no worker is
    running"), names every question, and runs again once they are answered."""
    approve = JobDefinition.model_validate({
        "jobId": "approve", "inputSchema": {"v": {"type": "integer"}},
        "outputSchema": {"v": {"type": "integer", "sourceStepId": "after", "sourceOutputName": "value"}},
        "steps": [{"stepId": "ok", "ask": {"kind": "approve", "question": "Fine?", "timeout": "1h"}},
                  {"stepId": "after", "toolId": "test.instant", "dependencies": ["ok"],
                   "inputMappings": [{"sourceJobInput": "v", "targetInputName": "value"}]}],
    })
    outer = JobDefinition.model_validate({
        "jobId": "each_approved", "inputSchema": {"vs": {"type": "json"}},
        "outputSchema": {"vs": {"type": "json", "sourceStepId": "each", "sourceOutputName": "v"}},
        "steps": [{"stepId": "each", "jobId": "approve", "map": {"over": {"sourceJobInput": "vs"}, "concurrency": 2},
                   "inputMappings": [{"sourceItem": True, "targetInputName": "v"}]}],
    })
    assert app.registry.register(approve) == [] and app.registry.register(outer) == []
    run_id = await app.submit("each_approved", {"vs": [10, 20]}, account_id="acme")
    await run_all(app)
    run = await app.get_run(run_id, "acme")
    assert run["status"] == "waiting_input", run["statusDetail"]
    assert "your run needs you" in run["statusDetail"]
    children = {q["runId"] for q in run["waitingFor"]}
    assert len(children) == 2 and run_id not in children
    assert {q["runId"] for q in await app.waiting_questions("acme")} == children
    types = [e["type"] for e in await app.events(run_id)]
    assert "run.waiting_input" in types
    first, second = sorted(children)
    await app.answer(first, "ok", "acme", {"decision": "approve"})
    await run_all(app)
    run = await app.get_run(run_id, "acme")
    assert run["status"] == "waiting_input" and [q["runId"] for q in run["waitingFor"]] == [second]
    await app.answer(second, "ok", "acme", {"decision": "approve"})
    await run_all(app)
    run = await app.get_run(run_id, "acme")
    assert run["status"] == "completed" and run["finalOutputs"] == {"vs": [11, 21]}
    assert "run.resumed" in [e["type"] for e in await app.events(run_id)]


async def test_a_question_two_nested_runs_down_is_named_by_the_outermost_run(app: App) -> None:
    middle = JobDefinition.model_validate({"jobId": "middle", "steps": [{"stepId": "inner", "jobId": "pick"}]})
    top = JobDefinition.model_validate({"jobId": "top", "steps": [{"stepId": "mid", "jobId": "middle"}]})
    assert app.registry.register(middle) == [] and app.registry.register(top) == []
    run_id = await app.submit("top", {}, account_id="acme")
    await run_all(app)
    run = await app.get_run(run_id, "acme")
    assert run["status"] == "waiting_input" and "your run needs you" in run["statusDetail"]
    (question,) = run["waitingFor"]
    assert question["stepId"] == "pick"
    asking = await app.get_run(question["runId"], "acme")
    middle_run = await app.get_run(asking["parentRunId"], "acme")
    assert middle_run["parentRunId"] == run_id and middle_run["waitingFor"] == [question]
    await app.answer(question["runId"], "pick", "acme", {"chosen": [3]})
    await run_all(app)
    run = await app.get_run(run_id, "acme")
    assert run["status"] == "completed" and run["waitingFor"] == []
