"""Cached steps on real stores: a hit gives the same outputs without calling the tool or paying,
recorded as a generation marked as a cache hit; a new tool version, other inputs, a seed left
random, another account, an expired result or a step opting out all miss."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any

from tests.integration.test_engine import app, job, register, run_all, steps_by_id

from toolweave.app import App
from toolweave.model.definitions import CachePolicy, CostingModel, Money, RateSource, ToolDefinition
from toolweave.services.builtin.testing import FAIL_N_TIMES, INSTANT

__all__ = ["app"]  # the fixture


def cached(tool: ToolDefinition, version: str, lifetime: str = "1h", cost: str = "0.01") -> ToolDefinition:
    """A version of a builtin test tool (the same implementation) that is cached and costs ``cost``."""
    return tool.model_copy(update={
        "version": version,
        "cache": CachePolicy.model_validate(lifetime),
        "costing_model": CostingModel(rate_source=RateSource.STATIC, static_cost=Money(amount=Decimal(cost))),
    })


def attempts_job(**step_fields: Any) -> Any:
    return job({
        "jobId": "counted", "inputSchema": {"key": {"type": "string", "required": True}},
        "outputSchema": {"attempts": {"type": "integer", "sourceStepId": "try", "sourceOutputName": "attempts"}},
        "steps": [{"stepId": "try", "toolId": "test.fail_n_times", "inputMappings": [
            {"sourceJobInput": "key", "targetInputName": "key"}, {"value": 0, "targetInputName": "n"}], **step_fields}],
    })


def calls(tmp_path: Path, key: str) -> int:
    """How many times test.fail_n_times really ran for ``key`` (its own ledger)."""
    import hashlib

    path = tmp_path / "state" / "fail_n_times" / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".attempts")
    return path.stat().st_size if path.exists() else 0


async def run_once(app: App, target: str, inputs: dict[str, Any], account: str = "acme") -> dict[str, Any]:
    run_id = await app.submit(target, inputs, account_id=account)
    await run_all(app)
    return await app.get_run(run_id)


async def test_a_second_run_on_the_same_inputs_is_answered_from_the_cache(app: App, tmp_path: Path) -> None:
    register(app, cached(FAIL_N_TIMES, "2"), attempts_job())
    first = await run_once(app, "counted", {"key": "k1"})
    second = await run_once(app, "counted", {"key": "k1"})
    assert first["status"] == second["status"] == "completed"
    assert second["finalOutputs"] == first["finalOutputs"] == {"attempts": 1}
    assert calls(tmp_path, "k1") == 1  # the tool ran once
    made, reused = first["generations"][0], second["generations"][0]
    assert not made["cacheHit"] and Decimal(made["costUsd"]) == Decimal("0.01")
    assert reused["cacheHit"] and reused["cachedFrom"] == made["generationId"] and reused["status"] == "completed"
    assert Decimal(reused["costUsd"]) == 0 and Decimal(second["costUsd"]) == 0
    started = [e for e in await app.events(second["jobRunId"]) if e["type"] == "step.started"]
    assert started[0]["data"]["cacheHit"] is True

    other = await run_once(app, "counted", {"key": "k2"})  # other inputs
    assert not other["generations"][0]["cacheHit"] and calls(tmp_path, "k2") == 1
    register(app, cached(FAIL_N_TIMES, "3"))  # a new version of the tool
    fresh = await run_once(app, "counted", {"key": "k1"})
    assert not fresh["generations"][0]["cacheHit"] and fresh["finalOutputs"] == {"attempts": 2}
    assert calls(tmp_path, "k1") == 2


async def test_another_account_an_expired_result_and_a_step_opting_out_miss(app: App, tmp_path: Path) -> None:
    register(app, cached(FAIL_N_TIMES, "2", lifetime="1s"), attempts_job())
    await run_once(app, "counted", {"key": "shared"}, account="alice")
    bob = await run_once(app, "counted", {"key": "shared"}, account="bob")
    assert not bob["generations"][0]["cacheHit"] and calls(tmp_path, "shared") == 2
    again = await run_once(app, "counted", {"key": "shared"}, account="alice")
    assert again["generations"][0]["cacheHit"]
    await asyncio.sleep(1.5)  # past the lifetime (1 s): the result is no longer used
    late = await run_once(app, "counted", {"key": "shared"}, account="alice")
    assert not late["generations"][0]["cacheHit"] and calls(tmp_path, "shared") == 3

    register(app, job({**attempts_job(cache=False).dump(), "jobId": "uncached", "displayName": "uncached", "commandName": "uncached"}))
    for _ in range(2):
        run = await run_once(app, "uncached", {"key": "opt-out"})
        assert not run["generations"][0]["cacheHit"]
    assert calls(tmp_path, "opt-out") == 2


async def test_a_seed_left_random_never_hits(app: App) -> None:
    register(app, cached(INSTANT, "2"), job({
        "jobId": "seeded", "inputSchema": {"seed": {"type": "seed"}},
        "outputSchema": {"value": {"type": "integer", "sourceStepId": "s", "sourceOutputName": "value"}},
        "steps": [{"stepId": "s", "toolId": "test.instant", "inputMappings": [{"sourceJobInput": "seed", "targetInputName": "value"}]}],
    }))
    drawn = await run_once(app, "seeded", {})
    seed = drawn["jobInputs"]["seed"]
    assert not drawn["generations"][0]["cacheHit"]
    # the same value given on purpose: not from the random run (never cached), but cached itself
    given = await run_once(app, "seeded", {"seed": seed})
    assert not given["generations"][0]["cacheHit"]
    repeated = await run_once(app, "seeded", {"seed": seed})
    assert repeated["generations"][0]["cacheHit"] and repeated["finalOutputs"] == drawn["finalOutputs"]
    # a fork of the random run replays its seed, which is still one drawn at random: no hit
    fork_id = await app.fork(drawn["jobRunId"], "acme", from_step="s")
    await run_all(app)
    fork = await app.get_run(fork_id)
    assert fork["jobInputs"]["seed"] == seed and not fork["generations"][0]["cacheHit"]


async def test_failed_attempts_are_not_cached_and_map_items_are_cached_one_by_one(app: App, tmp_path: Path) -> None:
    register(app, cached(FAIL_N_TIMES, "2"), job({
        "jobId": "fails_once", "inputSchema": {"key": {"type": "string"}},
        "steps": [{"stepId": "try", "toolId": "test.fail_n_times", "inputMappings": [
            {"sourceJobInput": "key", "targetInputName": "key"}, {"value": 1, "targetInputName": "n"},
            {"value": False, "targetInputName": "retryable"}]}],
    }))
    assert (await run_once(app, "fails_once", {"key": "f"}))["status"] == "failed"
    second = await run_once(app, "fails_once", {"key": "f"})
    assert second["status"] == "completed" and not second["generations"][0]["cacheHit"] and calls(tmp_path, "f") == 2

    register(app, job({
        "jobId": "each_key", "inputSchema": {"keys": {"type": "json"}},
        "outputSchema": {"attempts": {"type": "json", "sourceStepId": "try", "sourceOutputName": "attempts"}},
        "steps": [{"stepId": "try", "toolId": "test.fail_n_times", "map": {"over": {"sourceJobInput": "keys"}},
                   "inputMappings": [{"sourceItem": True, "targetInputName": "key"}, {"value": 0, "targetInputName": "n"}]}],
    }))
    await run_once(app, "each_key", {"keys": ["m1", "m2", "m3"]})
    later = await run_once(app, "each_key", {"keys": ["m2", "m3", "m4"]})
    assert later["status"] == "completed" and later["finalOutputs"] == {"attempts": [1, 1, 1]}
    hits = {g["itemIndex"]: g["cacheHit"] for g in later["generations"]}
    assert hits == {0: True, 1: True, 2: False}
    assert [calls(tmp_path, k) for k in ("m1", "m2", "m3", "m4")] == [1, 1, 1, 1]
    assert steps_by_id(later)["try"]["items"]["succeeded"] == 3


async def test_runs_submitted_in_bulk_use_the_cache_too(app: App, tmp_path: Path) -> None:
    register(app, cached(FAIL_N_TIMES, "2"), attempts_job())
    await run_once(app, "counted", {"key": "bulk"})
    results = await app.submit_many("counted", [{"key": "bulk"}, {"key": "bulk"}], account_id="acme")
    await run_all(app)
    for result in results:
        run = await app.get_run(result.run_id or "")
        assert run["status"] == "completed" and run["generations"][0]["cacheHit"]
    assert calls(tmp_path, "bulk") == 1
