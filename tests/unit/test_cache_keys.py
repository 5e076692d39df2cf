"""Cached steps, pure parts: the policy as written, the key, and which attempts may use the cache."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from tests.unit.test_registry_validate import catalog, job

from toolweave.engine import cache
from toolweave.engine.plan import RunView, StartStep, StepView, decide
from toolweave.model.definitions import CachePolicy, JobDefinition, Step, ToolDefinition, parse_duration
from toolweave.model.status import RunStatus
from toolweave.registry import validate_job

ART = {"kind": "artifact", "sha256": "ab" * 32, "mimeType": "image/png", "size": 10, "width": 4}


@pytest.mark.parametrize(("written", "enabled", "seconds"), [
    (True, True, 7 * 86400), (False, False, 7 * 86400), ("30d", True, 30 * 86400), (90, True, 90),
    ("15m", True, 900), ({"lifetime": "12h"}, True, 43200), ({"enabled": False}, False, 7 * 86400), ("2w", True, 14 * 86400),
])
def test_a_cache_policy_is_written_in_short_or_long_form(written: Any, enabled: bool, seconds: float) -> None:
    policy = CachePolicy.model_validate(written)
    assert (policy.enabled, policy.lifetime) == (enabled, seconds)


@pytest.mark.parametrize("bad", ["forever", 0, -5, "400d", "1y", "", None, [1]])
def test_a_bad_lifetime_is_refused(bad: Any) -> None:
    with pytest.raises((ValidationError, ValueError)):
        CachePolicy.model_validate(bad) if bad is not None else parse_duration(bad)


def test_the_key_is_the_tool_hash_and_the_inputs_with_artifacts_by_content() -> None:
    base = cache.key("t" * 64, {"image": ART, "scale": 2, "opts": {"b": 1, "a": [1, 2]}})
    assert base == cache.key("t" * 64, {"opts": {"a": [1, 2], "b": 1}, "scale": 2, "image": {**ART, "filename": "x.png"}})
    assert base != cache.key("u" * 64, {"image": ART, "scale": 2, "opts": {"b": 1, "a": [1, 2]}})  # a new tool version
    assert base != cache.key("t" * 64, {"image": {**ART, "sha256": "cd" * 32}, "scale": 2, "opts": {"b": 1, "a": [1, 2]}})
    assert base != cache.key("t" * 64, {"image": ART, "scale": 3, "opts": {"b": 1, "a": [1, 2]}})
    assert len(base) == 64


def test_the_step_decides_over_its_tool() -> None:
    on = ToolDefinition.model_validate({"toolId": "t", "service": "builtin", "cache": "1h"})
    off = ToolDefinition.model_validate({"toolId": "t", "service": "builtin"})
    assert cache.lifetime(Step(step_id="s", tool_id="t"), on) == 3600
    assert cache.lifetime(Step(step_id="s", tool_id="t"), off) is None
    assert cache.lifetime(Step.model_validate({"stepId": "s", "toolId": "t", "cache": False}), on) is None
    assert cache.lifetime(Step.model_validate({"stepId": "s", "toolId": "t", "cache": "2h"}), off) == 7200


def test_a_step_reading_a_random_job_input_never_uses_the_cache() -> None:
    step = Step.model_validate({"stepId": "s", "toolId": "t", "inputMappings": [
        {"sourceJobInput": "seed", "targetInputName": "seed"}, {"template": "{{ job.prompt }}", "targetInputName": "p"}]})
    assert cache.reads_random(step, ["seed"]) and not cache.reads_random(step, ["other"]) and not cache.reads_random(step, [])


def test_the_planner_says_which_seeds_it_drew() -> None:
    tool = ToolDefinition.model_validate({"toolId": "t", "service": "builtin", "inputSchema": {
        "prompt": {"type": "string"}, "seed": {"type": "seed"}}})
    def start(mappings: list[dict[str, Any]]) -> StartStep:
        job_def = JobDefinition.model_validate({"jobId": "j", "steps": [{"stepId": "s", "toolId": "t", "inputMappings": mappings}]})
        actions = decide(RunView("run_1", RunStatus.RUNNING, job_def, {}, {"s": StepView("s")}, {"t": tool}), 1.0)
        found = [a for a in actions if isinstance(a, StartStep)]
        return found[0]
    drawn = start([{"value": "cat", "targetInputName": "prompt"}])
    assert drawn.drawn_seeds == ("seed",) and isinstance(drawn.inputs["seed"], int)
    assert start([{"value": 7, "targetInputName": "seed"}]).drawn_seeds == ()
    assert start([{"value": -1, "targetInputName": "seed"}]).drawn_seeds == ("seed",)


def test_registration_refuses_a_cache_on_a_nested_job_step() -> None:
    child = JobDefinition.model_validate({"jobId": "child", "steps": [{"stepId": "a", "toolId": "count", "inputMappings": [
        {"value": 1, "targetInputName": "n"}]}]})
    parent = job([{"stepId": "c", "jobId": "child", "cache": "1d"}])
    problems = [f"{p.path}: {p.message}" for p in validate_job(parent, catalog(child))]
    assert problems == ["steps[0].cache: step 'c' runs a job; cache applies to the tools its steps run (set it there)"]
