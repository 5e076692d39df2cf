"""Credits on real stores (SQLite and PostgreSQL): holds at submit, charges as generations end,
releases at the run's end, refusals that store nothing, and concurrent submits that cannot
overdraw a balance."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from tests.helpers.invariants import assert_no_stranded_runs
from tests.helpers.worker import running_worker, work_until_submitted

from toolweave.accounting import InsufficientCredits
from toolweave.app import App
from toolweave.model.credits import from_units
from toolweave.model.definitions import JobDefinition, ToolDefinition
from toolweave.model.records import RunUpdate, ServiceErrorInfo
from toolweave.model.status import GenerationStatus
from toolweave.settings import Settings

PRICE = Decimal("1.25")


def priced(app: App, base: str = "test.instant", price: Decimal = PRICE) -> ToolDefinition:
    """A builtin test tool as a new version that costs ``price`` per call."""
    return ToolDefinition.model_validate({
        **app.registry.tool(base).dump(), "version": "2",
        "costingModel": {"rateSource": "static", "staticCost": {"amount": str(price)}},
    })


def chain(job_id: str, tool: str, steps: int) -> JobDefinition:
    items: list[dict[str, Any]] = [
        {"stepId": "s1", "toolId": tool, "inputMappings": [{"sourceJobInput": "value", "targetInputName": "value"}]}]
    for i in range(2, steps + 1):
        items.append({"stepId": f"s{i}", "toolId": tool, "inputMappings": [
            {"sourceStepId": f"s{i - 1}", "sourceOutputName": "value", "targetInputName": "value"}]})
    return JobDefinition.model_validate({
        "jobId": job_id, "inputSchema": {"value": {"type": "integer", "default": 1}},
        "outputSchema": {f"v{i}": {"type": "integer", "sourceStepId": f"s{i}", "sourceOutputName": "value"}
                         for i in range(1, steps + 1)},
        "steps": items,
    })


def make_app(db_url: str, home: Path, **settings: Any) -> App:
    app = App(Settings(home=home, database_url=db_url, test_tools=True, **settings))
    for definition in (priced(app), chain("three", "test.instant", 3)):
        assert app.registry.register(definition) == []
    return app


@pytest.fixture
async def app(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[App]:
    monkeypatch.setenv("TOOLWEAVE_TEST_STATE", str(tmp_path / "state"))
    instance = make_app(db_url, tmp_path / "home")
    yield instance
    await instance.aclose()


def ledger(app: App, account: str) -> list[dict[str, Any]]:
    rows = app.store.read_sync(lambda tx: tx.all(
        "SELECT * FROM credit_ledger WHERE account_id = :a ORDER BY entry_id", {"a": account}))
    return [dict(r) for r in rows]


def sums(app: App, account: str) -> tuple[Decimal, Decimal]:
    """(balance, held) from the ledger itself."""
    rows = ledger(app, account)
    return from_units(sum(r["amount"] for r in rows)), from_units(sum(r["held"] for r in rows))


def run_count(app: App, account: str) -> int:
    row = app.store.read_sync(lambda tx: tx.one(
        "SELECT COUNT(*) AS n FROM runs WHERE master_account_id = :a", {"a": account}))
    return int(row.n) if row else 0


async def test_a_run_holds_its_estimate_is_charged_per_generation_and_releases_the_rest(app: App) -> None:
    await app.credits.grant("acme", Decimal("10"), "welcome")
    run_id = await app.submit("three", {"value": 1}, account_id="acme")
    assert (await app.credits.balance("acme"))["held"] == "3.75"  # 3 steps × 1.25, set aside
    assert (await app.credits.balance("acme"))["available"] == "6.25"
    async with running_worker(app):
        run = await app.wait(run_id, timeout=30)
    assert run["status"] == "completed"
    kinds = [(r["kind"], from_units(r["amount"]), from_units(r["held"])) for r in ledger(app, "acme")]
    assert kinds == [
        ("grant", Decimal(10), 0), ("hold", 0, Decimal("3.75")),
        ("charge", -PRICE, -PRICE), ("charge", -PRICE, -PRICE), ("charge", -PRICE, -PRICE),
    ]  # the charges used up the hold exactly: nothing to release
    assert sums(app, "acme") == (Decimal("6.25"), Decimal(0))
    shown = await app.credits.balance("acme")
    assert (shown["balance"], shown["held"], shown["available"]) == ("6.25", "0.00", "6.25")
    assert {r["generation_id"] for r in ledger(app, "acme") if r["kind"] == "charge"} == {
        g["generationId"] for g in run["generations"]}


async def test_a_run_cheaper_than_its_estimate_gets_the_rest_back(app: App) -> None:
    assert app.registry.register(priced(app, "test.fail_n_times")) == []
    job = JobDefinition.model_validate({
        "jobId": "maybe",
        "outputSchema": {"value": {"type": "integer", "sourceStepId": "a", "sourceOutputName": "value"}},
        "steps": [{"stepId": "a", "toolId": "test.instant", "inputMappings": [{"value": 1, "targetInputName": "value"}]},
                  {"stepId": "b", "toolId": "test.fail_n_times", "errorHandling": {"strategy": "skip"},
                   "inputMappings": [{"value": 1, "targetInputName": "n"}, {"value": False, "targetInputName": "retryable"}]}],
    })
    assert app.registry.register(job) == []
    await app.credits.grant("acme", Decimal("5"))
    run_id = await app.submit("maybe", {}, account_id="acme")
    async with running_worker(app):
        run = await app.wait(run_id, timeout=30)
    assert run["status"] == "partially_completed"  # b failed (not charged) and was skipped past
    entries = [(r["kind"], from_units(r["held"])) for r in ledger(app, "acme")]
    assert entries == [("grant", 0), ("hold", Decimal("2.5")), ("charge", -PRICE), ("release", -PRICE)]
    assert sums(app, "acme") == (Decimal("3.75"), Decimal(0))


async def test_a_run_the_balance_cannot_cover_is_refused_and_nothing_is_stored(app: App) -> None:
    await app.credits.grant("acme", Decimal("3.70"))
    with pytest.raises(InsufficientCredits) as refused:
        await app.submit("three", {"value": 1}, account_id="acme")
    assert refused.value.needed == Decimal("3.75") and refused.value.available == Decimal("3.70")
    assert "estimated at 3.75 credits" in str(refused.value) and "3.70 available" in str(refused.value)
    assert run_count(app, "acme") == 0
    assert [r["kind"] for r in ledger(app, "acme")] == ["grant"]
    events = app.store.read_sync(lambda tx: tx.one("SELECT COUNT(*) AS n FROM events"))
    assert events is not None and int(events.n) == 0


async def test_an_account_without_a_balance_policy_runs_as_before(app: App) -> None:
    run_id = await app.submit("three", {"value": 1}, account_id="free")
    async with running_worker(app):
        run = await app.wait(run_id, timeout=30)
    assert run["status"] == "completed" and Decimal(run["costUsd"]) == 3 * PRICE
    assert ledger(app, "free") == []
    assert (await app.credits.balance("free"))["credits"] is False


async def test_credits_by_default_refuses_an_account_never_granted(db_url: str, tmp_path: Path) -> None:
    app = make_app(db_url, tmp_path / "home", credits_by_default=True)
    try:
        with pytest.raises(InsufficientCredits):
            await app.submit("three", {"value": 1}, account_id="newcomer")
        assert run_count(app, "newcomer") == 0
        await app.credits.set_policy("trusted", credits=False)  # an administrator's exception
        assert await app.submit("three", {"value": 1}, account_id="trusted")
    finally:
        await app.aclose()


async def test_a_generation_that_failed_at_the_backend_is_not_charged(app: App, tmp_path: Path) -> None:
    slow = priced(app, "test.slow_async")
    assert app.registry.register(slow) == []
    await app.credits.grant("acme", Decimal("10"))
    run_id = await app.submit("test.slow_async", {"seconds": 3600}, account_id="acme")
    gen_id = await work_until_submitted(app, run_id)  # submitted; now waiting on the backend
    failed = RunUpdate(status=GenerationStatus.FAILED, cost_usd=Decimal("9"),
                       error=ServiceErrorInfo(message="the backend broke", retryable=False))
    assert await app.apply_update(gen_id, failed)
    run = await app.get_run(run_id)
    assert run["status"] == "failed"
    assert [r["kind"] for r in ledger(app, "acme")] == ["grant", "hold", "release"]
    assert sums(app, "acme") == (Decimal(10), Decimal(0))  # the whole hold came back


async def test_a_nested_run_is_paid_from_its_root_runs_hold(app: App) -> None:
    outer = JobDefinition.model_validate({
        "jobId": "outer", "inputSchema": {"value": {"type": "integer", "default": 1}},
        "steps": [{"stepId": "first", "toolId": "test.instant", "inputMappings": [{"sourceJobInput": "value", "targetInputName": "value"}]},
                  {"stepId": "nest", "jobId": "three", "inputMappings": [
                      {"sourceStepId": "first", "sourceOutputName": "value", "targetInputName": "value"}]}],
    })
    assert app.registry.register(outer) == []
    await app.credits.grant("acme", Decimal("5"))
    run_id = await app.submit("outer", {}, account_id="acme")
    async with running_worker(app):
        run = await app.wait(run_id, timeout=30)
    assert run["status"] == "completed"
    entries = ledger(app, "acme")
    assert from_units(entries[1]["held"]) == 4 * PRICE  # the nested job's steps are in the estimate
    assert {r["run_id"] for r in entries if r["kind"] == "charge"} == {run_id}
    assert len([r for r in entries if r["kind"] == "charge"]) == 4
    assert sums(app, "acme") == (Decimal(0), Decimal(0))


async def test_fifty_concurrent_submits_against_ten_runs_of_credit_create_exactly_ten(
    db_url: str, tmp_path: Path
) -> None:
    """Two processes' worth of apps, 25 submits each, all at once: the account's policy row is the
    lock every submit of the account takes, so holds never overdraw."""
    first = make_app(db_url, tmp_path / "a")
    second = make_app(db_url, tmp_path / "b")
    try:
        await first.credits.grant("acme", 10 * 3 * PRICE)  # ten runs of "three"

        async def one(app: App) -> str | None:
            try:
                return await app.submit("three", {"value": 1}, account_id="acme")
            except InsufficientCredits:
                return None

        results = await asyncio.gather(*(one(first if i % 2 else second) for i in range(50)))
        made = [r for r in results if r is not None]
        assert len(made) == 10 and run_count(first, "acme") == 10
        assert sums(first, "acme") == (10 * 3 * PRICE, 10 * 3 * PRICE)  # everything held, nothing spent
        assert (await first.credits.balance("acme"))["available"] == "0.00"
        async with running_worker(first, slots=4):
            for run_id in made:
                assert (await first.wait(run_id, timeout=60))["status"] == "completed"
        balance, held = sums(first, "acme")
        assert (balance, held) == (Decimal(0), Decimal(0))
        assert len([r for r in ledger(first, "acme") if r["kind"] == "charge"]) == 30
        assert_no_stranded_runs(first.store)
    finally:
        await first.aclose()
        await second.aclose()


async def test_a_batch_creates_what_the_balance_covers_and_refuses_the_rest(app: App) -> None:
    await app.credits.grant("acme", 2 * 3 * PRICE)
    results = await app.submit_many("three", [{"value": i} for i in range(5)], account_id="acme")
    assert [r.run_id is not None for r in results] == [True, True, False, False, False]
    assert all(isinstance(r.error, InsufficientCredits) for r in results[2:])
    assert run_count(app, "acme") == 2
    assert sums(app, "acme") == (2 * 3 * PRICE, 2 * 3 * PRICE)


async def test_a_batch_with_keys_holds_once_per_run_and_places_each_run_it_made(app: App) -> None:
    """Runs planned before their transaction (``Engine.plan_submits``) still get what the
    transaction decides: a key named twice makes one run held once, a key used before names its
    run, refused rows write nothing (their keys stay free), and each made run has its own place
    and hold, which its dispatch task is due at."""
    await app.credits.grant("acme", 2 * 3 * PRICE)
    [before] = await app.submit_many("three", [{"value": 0}], account_id="acme", idempotency_keys=["old"])
    keys = ["a", "old", "a", "b", None]
    results = await app.submit_many("three", [{"value": i} for i in range(5)], account_id="acme",
                                    idempotency_keys=keys)
    assert [(r.created, r.run_id is not None) for r in results] == [
        (True, True), (False, True), (False, True), (False, False), (False, False)]
    assert results[1].run_id == before.run_id and results[2].run_id == results[0].run_id
    assert all(isinstance(r.error, InsufficientCredits) for r in results[3:])
    assert run_count(app, "acme") == 2
    assert sums(app, "acme") == (2 * 3 * PRICE, 2 * 3 * PRICE)

    def placed(tx: Any) -> list[Any]:
        return tx.all("SELECT r.run_id, r.credit_run_id, r.queue_at, t.available_at FROM runs r "
                      "JOIN tasks t ON t.run_id = r.run_id AND t.kind = 'dispatch' ORDER BY r.queue_at")
    rows = app.store.read_sync(placed)
    assert [r.run_id for r in rows] == [before.run_id, results[0].run_id]
    assert all(r.credit_run_id == r.run_id and r.available_at == r.queue_at for r in rows)
    assert rows[0].queue_at < rows[1].queue_at
    await app.credits.grant("acme", 3 * PRICE)
    [again] = await app.submit_many("three", [{"value": 3}], account_id="acme", idempotency_keys=["b"])
    assert again.created  # the refused row's key was never taken


async def test_a_grant_and_a_refund_are_in_the_history_and_spend_counts_charges(app: App) -> None:
    await app.credits.grant("acme", Decimal("10"), "welcome")
    run_id = await app.submit("three", {"value": 1}, account_id="acme")
    async with running_worker(app):
        await app.wait(run_id, timeout=30)
    await app.credits.refund("acme", Decimal("1.25"), "one step went wrong", run_id)
    history = await app.credits.history("acme")
    assert [e["kind"] for e in history] == ["refund", "charge", "charge", "charge", "hold", "grant"]
    assert history[0]["note"] == "one step went wrong" and history[0]["runId"] == run_id
    assert (await app.credits.balance("acme"))["balance"] == "7.50"
    spent = await app.credits.spend(0)
    assert spent["total"] == "3.75" and spent["byAccount"] == {"acme": "3.75"} and spent["byTool"] == {"test.instant": "3.75"}
    assert len(spent["byDay"]) == 1 and spent["rows"][0]["charges"] == 3


async def test_a_retry_holds_again_and_is_refused_when_the_balance_cannot_cover_it(app: App) -> None:
    flaky = priced(app, "test.fail_n_times")
    assert app.registry.register(flaky) == []
    await app.credits.grant("acme", Decimal("1.5"))
    run_id = await app.submit("test.fail_n_times", {"n": 1, "retryable": False}, account_id="acme")
    await app.make_worker(2).run_until_idle(20)
    assert (await app.get_run(run_id))["status"] == "failed"
    assert [r["kind"] for r in ledger(app, "acme")] == ["grant", "hold", "release"]  # the failure cost nothing
    await app.retry(run_id, "acme")
    await app.make_worker(2).run_until_idle(20)
    assert (await app.get_run(run_id))["status"] == "completed"
    assert [r["kind"] for r in ledger(app, "acme")] == ["grant", "hold", "release", "hold", "charge"]
    assert sums(app, "acme") == (Decimal("0.25"), Decimal(0))
    forked = app.fork(run_id, "acme", inputs={"n": 0})
    with pytest.raises(InsufficientCredits):  # 0.25 left, 1.25 needed
        await forked
    assert run_count(app, "acme") == 1


async def test_a_cost_ceiling_holds_at_most_the_ceiling_and_stops_the_run_before_it(app: App) -> None:
    await app.credits.grant("acme", Decimal("10"))
    run_id, _ = await app.submit_run("three", {"value": 1}, account_id="acme", cost_ceiling=Decimal("2.5"))
    assert from_units(ledger(app, "acme")[1]["held"]) == Decimal("2.5")  # not the estimate 3.75
    async with running_worker(app):
        run = await app.wait(run_id, timeout=30)
    assert run["status"] == "partially_completed" and run["error"]["code"] == "cost_ceiling"
    assert {s["stepId"]: s["status"] for s in run["stepStatuses"]} == {"s1": "succeeded", "s2": "succeeded", "s3": "skipped"}
    assert Decimal(run["costUsd"]) == Decimal("2.5")
    assert sums(app, "acme") == (Decimal("7.5"), Decimal(0))


async def test_a_repeated_or_late_update_charges_nothing_more(app: App) -> None:
    slow = priced(app, "test.slow_async")
    assert app.registry.register(slow) == []
    await app.credits.grant("acme", Decimal("10"))
    run_id = await app.submit("test.slow_async", {"seconds": 3600}, account_id="acme")
    gen_id = await work_until_submitted(app, run_id)
    done = RunUpdate(status=GenerationStatus.COMPLETED, outputs={"note": "", "waited": 1.0})
    assert await app.apply_update(gen_id, done)
    for again in (done, RunUpdate(status=GenerationStatus.COMPLETED, outputs={"note": "x", "waited": 2.0}, cost_usd=Decimal(3))):
        assert not await app.apply_update(gen_id, again)  # the generation is terminal: no change, no charge
    assert [r["kind"] for r in ledger(app, "acme")] == ["grant", "hold", "charge"]
    assert sums(app, "acme") == (Decimal(10) - PRICE, Decimal(0))


async def test_a_balance_has_a_largest_value_so_the_ledger_sums_stay_exact(app: App) -> None:
    for _ in range(10):
        await app.credits.grant("rich", Decimal("1000000000"))
    with pytest.raises(ValueError, match="at most 10000000000"):
        await app.credits.grant("rich", Decimal("0.00000001"))
    shown = await app.credits.balance("rich")
    assert shown["balance"] == "10000000000.00" and len(ledger(app, "rich")) == 10
