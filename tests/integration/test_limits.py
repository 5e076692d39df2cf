"""Per-account limits (runs in flight, runs per minute) and the fair claiming order, on real
stores (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.helpers.invariants import assert_no_stranded_runs

from toolweave.accounting import OverLimit
from toolweave.app import App
from toolweave.settings import Settings


@pytest.fixture
async def app(db_url: str, tmp_path: Path) -> AsyncIterator[App]:
    instance = App(Settings(home=tmp_path / "home", database_url=db_url, test_tools=True,
                            account_max_runs_in_flight=2, account_submits_per_minute=5))
    yield instance
    await instance.aclose()


async def test_runs_in_flight_over_the_limit_are_refused_with_a_time_to_retry(app: App) -> None:
    await app.submit("test.instant", {"value": 1}, account_id="acme")
    await app.submit("test.instant", {"value": 2}, account_id="acme")
    with pytest.raises(OverLimit) as refused:
        await app.submit("test.instant", {"value": 3}, account_id="acme")
    assert refused.value.limit == "runs_in_flight" and refused.value.allowed == 2 and refused.value.retry_after > 0
    assert "at most 2 runs in flight" in str(refused.value)
    assert await app.in_flight("acme") == 2
    await app.submit("test.instant", {"value": 1}, account_id="globex")  # another account is not held back
    await app.make_worker(2).run_until_idle(30)
    await app.submit("test.instant", {"value": 3}, account_id="acme")  # the first two ended


async def test_an_accounts_own_limit_overrides_the_setting(app: App) -> None:
    await app.credits.set_policy("big", max_runs_in_flight=4)
    for value in range(4):
        await app.submit("test.instant", {"value": value}, account_id="big")
    with pytest.raises(OverLimit):
        await app.submit("test.instant", {"value": 9}, account_id="big")
    await app.credits.set_policy("big", max_runs_in_flight=0, submits_per_minute=0)  # 0: no limit
    await app.submit("test.instant", {"value": 9}, account_id="big")
    shown = await app.credits.balance("big")
    assert shown["limits"] == {"maxRunsInFlight": 0, "submitsPerMinute": 0, "confirmAbove": None}
    await app.credits.set_policy("big", max_runs_in_flight=None)  # back to the setting's
    assert (await app.credits.balance("big"))["limits"]["maxRunsInFlight"] == 2


async def test_runs_per_minute_over_the_limit_are_refused(app: App) -> None:
    await app.credits.set_policy("acme", max_runs_in_flight=0)
    for value in range(5):
        await app.submit("test.instant", {"value": value}, account_id="acme")
    with pytest.raises(OverLimit) as refused:
        await app.submit("test.instant", {"value": 5}, account_id="acme")
    assert refused.value.limit == "submits_per_minute" and 1 <= refused.value.retry_after <= 60


async def test_a_batch_over_the_limit_creates_what_fits(app: App) -> None:
    results = await app.submit_many("test.instant", [{"value": v} for v in range(4)], account_id="acme")
    assert [r.run_id is not None for r in results] == [True, True, False, False]
    assert all(isinstance(r.error, OverLimit) for r in results[2:])


async def test_one_accounts_backlog_does_not_starve_another(db_url: str, tmp_path: Path) -> None:
    """An account queues 1,000 runs, then another submits 10: the ten are claimed among the first
    runs, not after the thousand (asserted by the order the runs completed in, not by time)."""
    app = App(Settings(home=tmp_path / "home", database_url=db_url, test_tools=True))
    try:
        made = await app.submit_many("test.instant", [{"value": v} for v in range(1000)], account_id="big")
        assert all(r.run_id for r in made)
        small = {await app.submit("test.instant", {"value": v}, account_id="small") for v in range(10)}
        await app.make_worker(4).run_until_idle(300)
        order = app.store.read_sync(lambda tx: [r.run_id for r in tx.all(
            "SELECT run_id FROM events WHERE type = 'run.completed' ORDER BY event_id")])
        assert len(order) == 1010
        places = sorted(order.index(run_id) for run_id in small)
        # in a first-come queue they would be 1000…1009; fairly, they go one for one with big's
        assert places[-1] < 40, places
        assert_no_stranded_runs(app.store)
    finally:
        await app.aclose()
