"""Costs a backend reports are not trusted blindly: a negative cost must not mint credits, a cost
no ledger can hold must not wedge the generation, a cost that is not a number must not crash the
record. On both stores."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from tests.helpers.worker import work_until_submitted
from tests.integration.test_credits import PRICE, ledger, make_app, priced, sums

from toolweave.accounting import InsufficientCredits
from toolweave.app import App
from toolweave.model.definitions import ToolDefinition
from toolweave.model.records import RunUpdate
from toolweave.model.status import GenerationStatus


@pytest.fixture
async def app(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[App]:
    monkeypatch.setenv("TOOLWEAVE_TEST_STATE", str(tmp_path / "state"))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-placeholder")  # (estimates and holds never call the service)
    instance = make_app(db_url, tmp_path / "home")
    assert instance.registry.register(priced(instance, "test.slow_async")) == []
    yield instance
    await instance.aclose()


async def _waiting_generation(app: App) -> tuple[str, str]:
    await app.credits.grant("acme", Decimal("10"))
    run_id = await app.submit("test.slow_async", {"seconds": 3600}, account_id="acme")
    return run_id, await work_until_submitted(app, run_id)


@pytest.mark.parametrize("reported", [Decimal("-5"), Decimal("-0.00000001")])
async def test_a_negative_cost_from_a_backend_mints_no_credits(app: App, reported: Decimal) -> None:
    run_id, gen_id = await _waiting_generation(app)
    done = RunUpdate(status=GenerationStatus.COMPLETED, outputs={"note": "", "waited": 1.0}, cost_usd=reported)
    assert await app.apply_update(gen_id, done)
    run = await app.get_run(run_id)
    assert run["status"] == "completed"
    balance, held = sums(app, "acme")
    assert held == 0 and balance <= Decimal(10), ledger(app, "acme")  # never more than was granted
    assert all(r["amount"] <= 0 for r in ledger(app, "acme") if r["kind"] == "charge")
    assert Decimal(run["costUsd"] or 0) >= 0
    refused = [e for e in _events(app, run_id) if e["type"] == "generation.cost_refused"]
    assert [e["data"]["reason"] for e in refused] == ["it is negative"]


@pytest.mark.parametrize("reported", [Decimal("1e30"), Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity")])
async def test_a_cost_no_ledger_can_hold_fails_nothing_and_crashes_nothing(app: App, reported: Decimal) -> None:
    run_id, gen_id = await _waiting_generation(app)
    # as the adapters add a cost they read: ``model_copy`` (which does not validate)
    done = RunUpdate(status=GenerationStatus.COMPLETED, outputs={"note": "", "waited": 1.0}).model_copy(
        update={"cost_usd": reported})
    assert await app.apply_update(gen_id, done)  # recorded, not raised
    run = await app.get_run(run_id)
    assert run["status"] == "completed", run
    balance, held = sums(app, "acme")
    assert held == 0 and Decimal(0) <= balance <= Decimal(10), ledger(app, "acme")
    refused = [e for e in _events(app, run_id) if e["type"] == "generation.cost_refused"]
    assert len(refused) == 1 and refused[0]["data"]["reported"] == str(reported), refused


def _events(app: App, run_id: str) -> list[dict[str, Any]]:
    rows = app.store.read_sync(lambda tx: tx.all("SELECT * FROM events WHERE run_id = :r ORDER BY event_id", {"r": run_id}))
    return [dict(r) for r in rows]


EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "http"


def _per_image(app: App) -> ToolDefinition:
    """The DALL·E 3 example with an ``n`` input the price table multiplies by (``multiplyBy``, as
    tools that make ``n`` images are priced), ``n`` without a lower bound."""
    data = yaml.safe_load((EXAMPLES / "openai-dall-e-3.yaml").read_text())
    data["inputSchema"]["n"] = {"type": "integer", "default": 1}
    data["costingModel"]["priceTable"]["multiplyBy"] = "n"
    data["metadata"]["http"]["request"]["json"]["n"] = {"$input": "n"}
    return ToolDefinition.model_validate(data)


async def test_a_negative_multiplier_from_the_user_holds_nothing_negative_and_cannot_overdraw(app: App) -> None:
    assert app.registry.register(_per_image(app)) == []
    await app.credits.grant("acme", Decimal("1"))
    with pytest.raises(InsufficientCredits):
        await app.submit("openai.dall-e-3", {"prompt": "owls", "n": 100}, account_id="acme")  # 4.00: refused
    await app.submit("openai.dall-e-3", {"prompt": "owls", "n": -100}, account_id="acme")  # a price below 0 is none
    balance, held = sums(app, "acme")
    assert held >= 0 and balance - held <= Decimal(1), ledger(app, "acme")
    with pytest.raises(InsufficientCredits):  # the negative run made no room for it
        await app.submit("openai.dall-e-3", {"prompt": "owls", "n": 100}, account_id="acme")
    estimate = await app.estimate("openai.dall-e-3", {"prompt": "owls", "n": -100}, account_id="acme")
    assert Decimal(estimate["total"]) >= 0, estimate


@pytest.mark.parametrize("costing", [
    {"rateSource": "static", "staticCost": {"amount": "-1"}},
    {"rateSource": "output_unit", "unitCost": {"amount": "-0.5"}},
    {"rateSource": "machine", "rate": "-0.001"},
    {"rateSource": "table", "priceTable": {"by": ["quality"], "prices": {}, "default": "-1"}},
    {"rateSource": "usage", "usage": [{"path": "usage.total_tokens", "price": "-1", "per": 1000}]},
])
def test_a_definition_with_a_price_below_0_is_refused(costing: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        ToolDefinition.model_validate({"toolId": "t", "service": "openai", "costingModel": costing})


async def test_a_retry_after_the_account_stopped_paying_charges_nothing(app: App) -> None:
    """An administrator turned the account's credits off between a run and its retry: the retry
    holds nothing, so it must charge nothing either (it charged the run's old hold, long released)."""
    assert app.registry.register(priced(app, "test.fail_n_times")) == []
    await app.credits.grant("acme", Decimal("5"))
    run_id = await app.submit("test.fail_n_times", {"n": 1, "retryable": False}, account_id="acme")
    await app.make_worker(2).run_until_idle(20)
    assert (await app.get_run(run_id))["status"] == "failed"
    await app.credits.set_policy("acme", credits=False)
    await app.retry(run_id, "acme")
    await app.make_worker(2).run_until_idle(20)
    assert (await app.get_run(run_id))["status"] == "completed"
    assert [r["kind"] for r in ledger(app, "acme")] == ["grant", "hold", "release"], ledger(app, "acme")
    assert sums(app, "acme") == (Decimal(5), Decimal(0))


async def test_retries_forks_and_submits_of_one_account_at_once_never_overdraw(db_url: str, tmp_path: Path) -> None:
    """Every way in that holds — a submit, a retry, a fork — decided at once from two apps against a
    balance that covers four runs: four are made, whatever the mix, and nothing is overdrawn."""
    first = make_app(db_url, tmp_path / "a")
    second = make_app(db_url, tmp_path / "b")
    try:
        for app in (first, second):
            assert app.registry.register(priced(app, "test.fail_n_times")) == []
        await first.credits.grant("acme", 4 * PRICE)
        failed = [await first.submit("test.fail_n_times", {"n": 1, "retryable": False}, account_id="acme")
                  for _ in range(4)]  # four runs that fail (charged nothing), each to be retried or forked
        await first.make_worker(2).run_until_idle(20)
        assert [(await first.get_run(r))["status"] for r in failed] == ["failed"] * 4
        assert sums(first, "acme") == (4 * PRICE, Decimal(0))

        async def attempt(i: int) -> bool:
            app = first if i % 2 else second
            try:
                if i < 2:
                    await app.retry(failed[i], "acme")
                elif i < 4:  # (of other runs: a run being retried is not forked)
                    await app.fork(failed[i], "acme", inputs={"n": 0})
                else:
                    await app.submit("test.fail_n_times", {"n": 0}, account_id="acme")
                return True
            except InsufficientCredits:
                return False

        results = await asyncio.gather(*(attempt(i) for i in range(12)))
        assert sum(results) == 4, results
        assert sums(first, "acme") == (4 * PRICE, 4 * PRICE), ledger(first, "acme")  # all held, none overdrawn
    finally:
        await first.aclose()
        await second.aclose()
