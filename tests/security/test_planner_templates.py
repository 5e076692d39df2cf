"""The planner renders a definition's templates in its transaction only when a user's values cannot
make them expensive (issue 15).

A straight-line template was enough for the planner to render it where it stands, inside the
transaction that holds the run's locks. But ``{{ job.x | round(job.p, 'floor') }}`` computes
``10 ** p`` (one C call), ``{{ job.v | list | join(job.v) }}`` builds the square of ``v``'s size
and each ``| tojson`` of a chain doubles what it is given: with a user's values each of those hung
or exhausted the worker. Now such a template goes to an evaluator process
(``sandbox.bounded_growth``); the run fails there with a clear error and the worker goes on serving
others. Ordinary templates are still rendered by the planner, with no evaluator process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.helpers.invariants import assert_no_stranded_runs
from tests.helpers.worker import running_worker

from toolweave.app import App
from toolweave.engine.mapping import template_loops
from toolweave.model.definitions import JobDefinition
from toolweave.settings import Settings

TOJSON_CHAIN = "{{ job.v" + " | tojson" * 40 + " }}"
HOSTILE = {
    "power": ("{{ job.x | round(job.p, 'floor') }}", {"x": 1.5, "p": 10**9}),
    "quadratic": ("{{ job.v | list | join(job.v) }}", {"v": "x" * 60_000}),
    "doubling": (TOJSON_CHAIN, {"v": '"' * 1000}),
}
ORDINARY = [
    "A photo of {{ job.subject }}",
    "{{ job.subject | default('a cat') | upper }}, {{ job.n + 1 }}",
    "{{ job.tags | join(', ') }} {{ job.v | tojson }}",
    "{% if job.n > 1 %}{{ job.subject | trim }}{% endif %} {{ job.x | round(2, 'floor') }}",
]
FAILED_THERE = {"evaluation_budget", "evaluation_memory", "evaluation_timeout"}


def definition(job_id: str, template: str) -> JobDefinition:
    return JobDefinition.model_validate({
        "jobId": job_id,
        "inputSchema": {"v": {"type": "json"}, "x": {"type": "json"}, "p": {"type": "json"},
                        "subject": {"type": "json"}, "n": {"type": "json"}, "tags": {"type": "json"}},
        "steps": [{"stepId": "s", "toolId": "test.instant", "inputMappings": [
            {"value": 1, "targetInputName": "value"}, {"template": template, "targetInputName": "note"}]}],
    })


@pytest.fixture
async def app(db_url: str, tmp_path: Path) -> AsyncIterator[App]:
    # budgets of 10 ms, not 100: what the hostile templates cannot stop is killed after the hard deadline
    # (evaluate.Budgets.hard_seconds: 5 s + 20 times the budgets), which the power case waits out
    instance = App(Settings(home=tmp_path / "home", database_url=db_url, test_tools=True,
                            template_budget_ms=10, condition_budget_ms=10))
    for name, (template, _) in HOSTILE.items():
        assert instance.registry.register(definition(name, template)) == []
    for i, template in enumerate(ORDINARY):
        assert instance.registry.register(definition(f"ordinary{i}", template)) == []
    yield instance
    await instance.aclose()


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_template_a_users_values_can_make_expensive_is_not_rendered_by_the_planner(case: str) -> None:
    assert template_loops(HOSTILE[case][0])


@pytest.mark.parametrize("template", ORDINARY)
def test_an_ordinary_template_is_rendered_by_the_planner(template: str) -> None:
    assert not template_loops(template)


@pytest.mark.parametrize("case", sorted(HOSTILE))
async def test_a_hostile_template_fails_its_run_in_an_evaluator_while_the_worker_serves_others(
    app: App, case: str,
) -> None:
    _, inputs = HOSTILE[case]
    hostile = await app.submit(case, inputs, account_id="mallory")
    async with running_worker(app):
        other = await app.submit("ordinary0", {"subject": "a cat"}, account_id="alice")
        done = await app.wait(other, timeout=60)
        assert done["status"] == "completed", done
        assert done["stepStatuses"][0]["outputs"]["note"] == "A photo of a cat"
        run = await app.wait(hostile, timeout=90)
    [step] = run["stepStatuses"]
    assert run["status"] == "failed", run
    error: dict[str, Any] = step["error"]
    assert error["code"] in FAILED_THERE or "renders more than" in error["message"], error
    assert run["generations"] == []
    assert app.evaluator.started >= 1
    assert_no_stranded_runs(app.store)


async def test_ordinary_templates_render_without_an_evaluator_process(app: App) -> None:
    inputs = {"subject": " a cat ", "n": 2, "tags": ["red", "small"], "v": {"a": 1}, "x": 2.567}
    expected = ["A photo of  a cat ", " A CAT , 3", 'red, small {"a": 1}', "a cat 2.56"]
    async with running_worker(app):
        for i, note in enumerate(expected):
            run = await app.wait(await app.submit(f"ordinary{i}", inputs, account_id="alice"), timeout=60)
            assert run["status"] == "completed", run
            assert run["stepStatuses"][0]["outputs"]["note"] == note
    assert app.evaluator.started == 0
