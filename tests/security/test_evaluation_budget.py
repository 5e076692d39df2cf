"""Bounded evaluation (issue 10, item 3).

CEL conditions and Jinja templates were evaluated inside the submit transaction, on the event loop
that serves requests, with no limit: ``job.items.all(a, job.items.all(b, a >= 0))`` over 300 items
made a submit take 17 s and ``/healthz`` 10 s, and a nested-loop template hung the process until
SIGKILL. Now a step whose condition or templates must be evaluated is ``ready`` with an
``evaluate`` task; a worker evaluates it in an evaluator process under a CPU budget (settings,
100 ms each by default) and a step past its budget fails with ``evaluation_budget``. What a budget
cannot interrupt (one long C call) is stopped by killing the evaluator process.

No test here measures time: the figures (``/healthz`` while 20 worst-case submits are in flight)
are in docs/benchmarks.md (``bench/evaluation.py``).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.helpers.invariants import assert_no_stranded_runs
from tests.helpers.loopback import serve_asgi
from tests.helpers.worker import work_until_done

from toolweave.api import create_app
from toolweave.app import App
from toolweave.model.definitions import JobDefinition
from toolweave.sandbox import EvaluationError, EvaluationPool
from toolweave.settings import Settings

ITEMS = list(range(300))
QUADRATIC = "job.items.all(a, job.items.all(b, a >= 0))"
NESTED_LOOPS = (  # (``job.items`` would be the mapping's method in Jinja)
    "{% for a in job['items'] %}{% for b in job['items'] %}{% for c in job['items'] %}"
    "{% endfor %}{% endfor %}{% endfor %}"
)


def job(job_id: str, **step: Any) -> JobDefinition:
    return JobDefinition.model_validate({
        "jobId": job_id,
        "inputSchema": {"items": {"type": "json", "required": True}},
        "steps": [{"stepId": "s", "toolId": "test.instant", **step}],
    })


@pytest.fixture
async def app(db_url: str, tmp_path: Path) -> AsyncIterator[App]:
    instance = App(Settings(home=tmp_path / "home", database_url=db_url, test_tools=True))
    for definition in (
        job("quadratic_condition", condition=QUADRATIC, inputMappings=[{"value": 1, "targetInputName": "value"}]),
        job("nested_loops", inputMappings=[{"template": NESTED_LOOPS, "targetInputName": "value"}]),
        job("fine", condition="size(job.items) > 2",
            inputMappings=[{"template": "{{ job['items'] | length }}", "targetInputName": "value"}]),
    ):
        assert instance.registry.register(definition) == []
    yield instance
    await instance.aclose()


async def test_a_quadratic_condition_over_300_items_fails_its_step_with_evaluation_budget(app: App) -> None:
    run_id = await app.submit("quadratic_condition", {"items": ITEMS}, account_id="mallory")
    # the submit evaluated nothing: the step waits, ready, for a worker to evaluate it
    [step] = (await app.get_run(run_id))["stepStatuses"]
    assert step["status"] == "ready"
    run = await work_until_done(app, run_id, timeout=60)
    assert run["status"] == "failed"
    [step] = run["stepStatuses"]
    assert step["error"]["code"] == "evaluation_budget" and step["error"]["retryable"] is False
    assert QUADRATIC in step["error"]["message"] and "condition_budget_ms" in step["error"]["message"]
    assert run["generations"] == []
    assert_no_stranded_runs(app.store)


async def test_a_nested_loop_template_fails_its_step_with_evaluation_budget(app: App) -> None:
    run_id = await app.submit("nested_loops", {"items": ITEMS}, account_id="mallory")
    run = await work_until_done(app, run_id, timeout=60)
    [step] = run["stepStatuses"]
    assert run["status"] == "failed" and step["error"]["code"] == "evaluation_budget"
    assert "template_budget_ms" in step["error"]["message"]


async def test_conditions_and_templates_within_their_budgets_run_as_before(app: App) -> None:
    run_id = await app.submit("fine", {"items": ITEMS}, account_id="alice")
    run = await work_until_done(app, run_id, timeout=60)
    assert run["status"] == "completed"  # "300" rendered, coerced to 300 by the contract; test.instant adds 1
    assert run["stepStatuses"][0]["outputs"]["value"] == 301


async def test_a_map_step_evaluates_each_item_s_templates_under_its_own_budget(app: App) -> None:
    """A map step whose template loops: its items' inputs are evaluated in an evaluator process
    when the map opens (not in the submit transaction, not by the planner), each item under
    ``template_budget_ms``; the item a user's input makes slow fails alone with
    ``evaluation_budget``, the others run with what was evaluated, held to the tool's contract."""
    per_item = "{% for a in item %}{% for b in item %}{% for c in item %}{% endfor %}{% endfor %}{% endfor %}{{ item | length }}"
    assert app.registry.register(JobDefinition.model_validate({
        "jobId": "map_loops",
        "inputSchema": {"items": {"type": "json", "required": True}},
        "steps": [{"stepId": "s", "toolId": "test.instant", "map": {"over": {"sourceJobInput": "items"}, "minSuccess": 2},
                   "inputMappings": [{"template": per_item, "targetInputName": "value"}]}],
    })) == []
    run_id = await app.submit("map_loops", {"items": [[1], ITEMS, [1, 2, 3]]}, account_id="mallory")
    [step] = (await app.get_run(run_id))["stepStatuses"]
    assert step["status"] == "ready"  # nothing of it was evaluated by the submit
    run = await work_until_done(app, run_id, timeout=60)
    assert run["status"] == "partially_completed"
    [step] = run["stepStatuses"]
    assert step["outputs"]["value"] == [2, None, 4]  # "1" and "3" rendered, coerced to numbers; test.instant adds 1
    page = await app.step_items(run_id, "s", "mallory")
    slow = page["items"][1]
    assert slow["status"] == "failed" and slow["error"]["code"] == "evaluation_budget"
    assert "item 1" in slow["error"]["message"] and "template_budget_ms" in slow["error"]["message"]
    assert sorted(g["itemIndex"] for g in run["generations"]) == [0, 2]  # the slow item reached no backend
    assert_no_stranded_runs(app.store)


async def test_a_template_that_asks_for_gigabytes_fails_its_step_not_the_server(app: App) -> None:
    """One C call asking for 2 GB: the evaluator process's memory limit turns it into an error."""
    assert app.registry.register(job("greedy", inputMappings=[
        {"template": "{{ '%*d' % (2000000000, 1) }}", "targetInputName": "value"}])) == []
    run_id = await app.submit("greedy", {"items": []}, account_id="mallory")
    run = await work_until_done(app, run_id, timeout=60)
    [step] = run["stepStatuses"]
    assert run["status"] == "failed" and step["error"]["code"] == "evaluation_memory"
    after = await app.submit("fine", {"items": [1, 2, 3]}, account_id="alice")  # the pool goes on
    assert (await work_until_done(app, after, timeout=60))["status"] == "completed"


async def test_text_template_renders_straight_lines_in_the_worker_and_loops_in_an_evaluator(app: App) -> None:
    """``text.template`` follows the planner's policy: a straight-line template of a user's renders
    in the worker (no evaluator process is started for it); one that loops goes to an evaluator
    process and fails on its budget there, not in the worker."""
    fine = await app.submit("text.template", {"template": "hello {{ name | upper }}", "variables": {"name": "you"}},
                            account_id="alice")
    run = await work_until_done(app, fine, timeout=60)
    assert run["status"] == "completed" and run["stepStatuses"][0]["outputs"]["text"] == "hello YOU"
    assert app.evaluator.started == 0
    slow = await app.submit("text.template", {"template": NESTED_LOOPS, "variables": {"job": {"items": ITEMS}}},
                            account_id="mallory")
    run = await work_until_done(app, slow, timeout=60)
    [step] = run["stepStatuses"]
    assert run["status"] == "failed" and step["error"]["code"] == "evaluation_budget", step["error"]
    assert "template_budget_ms" in step["error"]["message"] and not step["error"]["retryable"]
    assert app.evaluator.started == 1
    assert_no_stranded_runs(app.store)


async def test_an_evaluator_stuck_in_one_call_is_killed_and_replaced() -> None:
    """What no CPU budget can interrupt (one long C call: a sleep stands in for it here) is
    stopped at the hard deadline by killing the evaluator process; the pool starts another."""
    pool = EvaluationPool(1)
    try:
        with pytest.raises(EvaluationError) as stuck:
            await pool.call("time:sleep", 60, 0.5)
        assert stuck.value.code == "evaluation_timeout"
        assert await pool.call("builtins:len", [1, 2, 3], 30) == 3
    finally:
        pool.close()


async def test_an_evaluator_s_start_up_is_not_counted_in_its_call_s_hard_deadline() -> None:
    """A new evaluator process starts a fresh interpreter and imports the engine at a lower
    priority: seconds on a busy machine. That is not the evaluation's time — a step whose condition
    is cheap must not fail with 'stopped after 9 s' because its evaluator was still starting (the
    crash test's runs failed so under load). The module here takes 2 s to import; the call's hard
    deadline is 1 s and is met."""
    pool = EvaluationPool(1)
    try:
        assert await pool.call("tests.helpers.slow_import:echo", {"x": 1}, 1.0) == {"x": 1}
        with pytest.raises(EvaluationError) as stuck:  # the deadline still holds once it runs
            await pool.call("time:sleep", 60, 0.5)
        assert stuck.value.code == "evaluation_timeout"
    finally:
        pool.close()


async def test_a_modules_one_off_preparation_is_not_the_evaluations_time() -> None:
    """A fresh evaluator process builds CEL's parser and the template environment once (about a
    second of CPU, many seconds of wall time at the evaluators' lower priority on a busy machine):
    that is the module's ``prepare()``, run before each call's hard deadline starts. The crash
    test's trivial condition failed with 'stopped after 9 s' under load when it was the first call's
    time. Here ``prepare`` takes 2 s the first time; the calls' hard deadline is 1 s and is met."""
    pool = EvaluationPool(1)
    try:
        assert await pool.call("tests.helpers.slow_prepare:echo", 1, 1.0) == {"payload": 1, "prepared": 1}
        assert await pool.call("tests.helpers.slow_prepare:echo", 2, 1.0) == {"payload": 2, "prepared": 2}
    finally:
        pool.close()


def test_the_evaluators_preparation_builds_what_a_first_evaluation_would() -> None:
    """``evaluate.prepare`` leaves CEL's environment and a compiled template in the process's caches,
    so the first evaluation after it builds neither (a fresh interpreter: nothing else warmed them)."""
    code = (
        "from toolweave.engine import conditions, evaluate, mapping\n"
        "assert conditions._environment.cache_info().currsize == 0\n"
        "evaluate.prepare()\n"
        "assert conditions._environment.cache_info().currsize == 1\n"
        "assert mapping.compile_template.cache_info().currsize == 1\n"
        "evaluate.prepare()\n"
        "assert conditions._environment.cache_info().misses == 1\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


async def test_the_api_answers_while_worst_case_submits_are_evaluated(db_url: str, tmp_path: Path) -> None:
    """Through the HTTP API with its embedded worker: twenty worst-case submits are accepted, the
    server keeps answering /healthz meanwhile, and every one of those runs fails on its budget."""
    app = App(Settings(home=tmp_path / "home", database_url=db_url, test_tools=True, worker_slots=4))
    try:
        assert app.registry.register(job("quadratic_condition", condition=QUADRATIC,
                                         inputMappings=[{"value": 1, "targetInputName": "value"}])) == []
        _, key = await app.create_key("mallory", "tests")
        server = create_app(app, run_worker=True, slots=4)
        async with server.router.lifespan_context(server), serve_asgi(server) as url:
            async with httpx.AsyncClient(base_url=url, timeout=60, headers={"Authorization": f"Bearer {key}"}) as c:
                ids = []
                for _ in range(20):
                    response = await c.post("/api/v1/runs", json={"jobId": "quadratic_condition",
                                                                  "inputs": {"items": ITEMS}})
                    assert response.status_code == 201, response.text
                    ids.append(response.json()["jobRunId"])
                    assert (await c.get("/healthz")).status_code == 200
                for run_id in ids:
                    run = await app.wait(run_id, timeout=120)
                    assert run["stepStatuses"][0]["error"]["code"] == "evaluation_budget", run["stepStatuses"][0]["error"]
    finally:
        await app.aclose()
