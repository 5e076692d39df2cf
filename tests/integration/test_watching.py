"""Following runs' events through the process's one ``EventHub`` (both stores): every watcher gets
every event of its run in order and ends after the final one, and idle watchers cost one query
per round between them, not one each."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from toolweave.app import App, NotFound
from toolweave.model.definitions import JobDefinition
from toolweave.settings import Settings
from toolweave.store.db import Store

SLOW = JobDefinition.model_validate({
    "jobId": "slow", "inputSchema": {"gate": {"type": "text", "required": True}},
    "steps": [
        {"stepId": "first", "toolId": "test.instant", "inputMappings": [{"value": 1, "targetInputName": "value"}]},
        {"stepId": "wait", "toolId": "test.slow_async", "dependencies": ["first"],
         "inputMappings": [{"value": 600, "targetInputName": "seconds"},
                           {"sourceJobInput": "gate", "targetInputName": "gate"}]},
    ],
})


@pytest.fixture
async def app(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[App]:
    monkeypatch.setenv("TOOLWEAVE_TEST_STATE", str(tmp_path / "state"))
    instance = App(Settings(home=tmp_path / "home", database_url=db_url, test_tools=True))
    instance.event_hub.interval = 0.05
    assert instance.registry.register(SLOW) == []
    yield instance
    await instance.aclose()


async def collect(app: App, run_id: str, after: int = 0, account: str | None = "acme") -> list[dict[str, Any]]:
    return [event async for event in app.watch(run_id, account, after)]


async def test_many_watchers_each_get_their_runs_events_in_order_and_end_with_the_run(
    app: App, tmp_path: Path
) -> None:
    gates = [tmp_path / f"gate{i}" for i in range(12)]
    runs = [await app.submit("slow", {"gate": str(gate)}, account_id="acme") for gate in gates]
    watchers = [asyncio.create_task(collect(app, run_id)) for run_id in runs]
    watchers.append(asyncio.create_task(collect(app, runs[0])))  # two watchers of one run
    worker = app.make_worker(16)
    working = asyncio.create_task(worker.run())
    try:
        for gate in gates:
            gate.write_text("go")
        seen = await asyncio.wait_for(asyncio.gather(*watchers), 120)
    finally:
        worker.stop()
        await working
    for run_id, events in zip([*runs, runs[0]], seen, strict=True):
        assert events == await app.events(run_id, "acme")  # all of them, in order, nothing twice
        assert events[-1]["type"] == "run.completed"
    assert not app.event_hub._watchers  # every watcher left when its run ended


async def test_idle_watchers_share_one_query_per_round(app: App, tmp_path: Path) -> None:
    runs = [await app.submit("slow", {"gate": str(tmp_path / "never")}, account_id="acme") for _ in range(30)]
    watchers = [asyncio.create_task(collect(app, run_id)) for run_id in runs]
    queries = 0
    plain = app.store.read

    async def counting(fn: Any, *args: Any) -> Any:
        nonlocal queries
        queries += 1
        return await plain(fn, *args)

    app.store.read = counting  # type: ignore[method-assign]
    try:
        await asyncio.sleep(1.0)
        rounds_before = app.event_hub.rounds
        queries_before = queries
        await asyncio.sleep(1.0)
        rounds = app.event_hub.rounds - rounds_before
        assert rounds >= 3  # about 1 s / 0.05 s, less on a busy machine
        # 30 watchers, one query a round; a round under way when either counter is read counts on
        # one side only, hence the one either way (30 queries a round would be 17 times more)
        assert rounds - 1 <= queries - queries_before <= rounds + 1
    finally:
        app.store.read = plain  # type: ignore[method-assign]
        for watcher in watchers:
            watcher.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)


async def test_events_committed_by_another_process_reach_the_watchers(app: App, db_url: str, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    run_id = await app.submit("slow", {"gate": str(gate)}, account_id="acme")
    watcher = asyncio.create_task(collect(app, run_id))
    # another process's store: its commits do not tell this process's hub, which finds them by reading
    other = App(Settings(home=tmp_path / "home", database_url=db_url, test_tools=True), store=Store(db_url))
    assert other.registry.register(SLOW) == []
    worker = other.make_worker(4)
    working = asyncio.create_task(worker.run())
    try:
        gate.write_text("go")
        events = await asyncio.wait_for(watcher, 120)
    finally:
        worker.stop()
        await working
        await other.aclose()
    assert [e["type"] for e in events][-1] == "run.completed"
    assert events == await app.events(run_id, "acme")


async def test_a_finished_run_replays_and_ends_without_waiting(app: App, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.write_text("go")
    run_id = await app.submit("slow", {"gate": str(gate)}, account_id="acme")
    await app.make_worker(4).run_until_idle(60)
    events = await asyncio.wait_for(collect(app, run_id), 10)
    assert events[-1]["type"] == "run.completed" and app.event_hub.rounds == 0
    later = await asyncio.wait_for(collect(app, run_id, after=events[2]["id"]), 10)
    assert later == events[3:]


async def test_another_accounts_run_is_not_found(app: App, tmp_path: Path) -> None:
    run_id = await app.submit("slow", {"gate": str(tmp_path / "never")}, account_id="acme")
    with pytest.raises(NotFound):
        await collect(app, run_id, account="mallory")
    with pytest.raises(NotFound):
        await collect(app, "run_nosuchrun", account="acme")
