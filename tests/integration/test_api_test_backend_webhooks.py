"""Webhooks of ``test.slow_async``'s stand-in backend through the real API (what
``bench/ingress.py`` sends): progress, completion, a repeat and a forged token."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.integration.test_api import Server, assert_problem, running_server

from toolweave.app import App


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running_server(tmp_path / "home") as srv:
        yield srv


async def parked(app: App, run_id: str) -> tuple[str, str]:
    """(generation id, platform run id) of the run's generation once the stand-in backend has it."""
    while True:
        run = await app.get_run(run_id, "alice")
        gens = [g for g in run["generations"] if g["platformSpecificRunId"]]
        if gens:
            return gens[0]["generationId"], gens[0]["platformSpecificRunId"]
        await asyncio.sleep(0.05)


async def test_progress_and_completion_arrive_by_webhook(server: Server) -> None:
    app = server.app
    run_id = await app.submit("test.slow_async", {"seconds": 86400}, account_id="alice")
    gen_id, platform_id = await asyncio.wait_for(parked(app, run_id), 30)
    path = f"/webhooks/builtin/{gen_id}?token={app.engine.webhook_token('builtin', gen_id)}"
    async with server.client() as c:
        progress = {"runId": platform_id, "status": "processing", "progress": 0.5, "eventId": "p1"}
        assert (await c.post(path, content=json.dumps(progress))).json() == {"applied": True}
        assert (await c.post(path, content=json.dumps(progress))).json() == {"applied": False}  # a repeat
        done = {"runId": platform_id, "status": "completed", "outputs": {"waited": 3}, "eventId": "done"}
        assert (await c.post(path, content=json.dumps(done))).json() == {"applied": True}
        run = await app.wait(run_id, timeout=30)
        assert run["status"] == "completed" and run["finalOutputs"] == {"waited": 3}
        forged = f"/webhooks/builtin/{gen_id}?token={'0' * 32}"
        assert_problem(await c.post(forged, content=json.dumps(done)), 404)
        other = dict(done, runId="slow-someone-else~1")
        assert_problem(await c.post(path, content=json.dumps(other)), 400)
        assert_problem(await c.post(path, content=b"not json"), 400)


@pytest.fixture
async def server_on(db_url: str, tmp_path: Path) -> AsyncIterator[Server]:
    async with running_server(tmp_path / "home", database_url=db_url) as srv:
        yield srv


async def test_webhooks_arriving_together_share_a_transaction_and_each_counts_once(server_on: Server) -> None:
    """Progress and completions of many runs sent at once (group commit), on both stores: every run
    completes with its own outputs, a webhook sent twice at the same moment applies once, and they
    took fewer transactions than requests."""
    app = server_on.app
    run_ids = [await app.submit("test.slow_async", {"seconds": 86400}, account_id="alice") for _ in range(8)]
    parked_gens = [await asyncio.wait_for(parked(app, r), 30) for r in run_ids]

    async def send(gen_id: str, body: dict[str, object]) -> bool:
        token = app.engine.webhook_token("builtin", gen_id)
        return await app.handle_webhook("builtin", gen_id, token, {}, json.dumps(body).encode())

    before = app.webhook_transactions
    progress = await asyncio.gather(*(
        send(g, {"runId": p, "status": "processing", "progress": 0.5, "eventId": f"p-{g}"}) for g, p in parked_gens
    ), *(send(g, {"runId": p, "status": "processing", "progress": 0.5, "eventId": f"p-{g}"}) for g, p in parked_gens))
    assert sorted(progress) == [False] * 8 + [True] * 8, progress  # each generation's repeat is a no-op
    done = await asyncio.gather(*(
        send(g, {"runId": p, "status": "completed", "outputs": {"waited": i}, "eventId": f"done-{g}"})
        for i, (g, p) in enumerate(parked_gens)
    ))
    assert done == [True] * 8
    assert app.webhook_transactions - before < 24
    for i, run_id in enumerate(run_ids):
        run = await app.wait(run_id, timeout=30)
        assert run["status"] == "completed" and run["finalOutputs"] == {"waited": i}
