"""Concurrent submits on both stores (issue 10, item 5).

On PostgreSQL, ten simultaneous first submits of a newly registered job answered up to nine 500s
(the definition snapshot entered the engine's cache before its transaction committed: the others
skipped the insert and broke the run's foreign key, or inserted it again), and twenty requests with
one Idempotency-Key made one run but answered seven 500s. Now snapshots insert idempotently and
are known only after commit, and the losers of an idempotency race answer 200 with the winner's run.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from tests.helpers.loopback import serve_asgi

from toolweave.api import create_app
from toolweave.app import App
from toolweave.engine.submission import tool_job
from toolweave.engine.work import SubmitRequest
from toolweave.settings import Settings
from toolweave.store.db import Tx

ADMIN_KEY = "tw_admin_for_tests_only_0123456789"
CONCURRENT = 20

JOB = {
    "jobId": "fresh_job",
    "inputSchema": {"value": {"type": "integer", "default": 1}},
    "steps": [
        {"stepId": "a", "toolId": "test.instant", "inputMappings": [{"sourceJobInput": "value", "targetInputName": "value"}]},
        {"stepId": "b", "toolId": "test.sleep", "inputMappings": [{"value": 0.01, "targetInputName": "seconds"}]},
    ],
}


@pytest.fixture
async def api(db_url: str, tmp_path: Path) -> AsyncIterator[tuple[App, str, str]]:
    app = App(Settings(home=tmp_path / "home", database_url=db_url, test_tools=True, admin_key=ADMIN_KEY,
                       worker_slots=4))
    try:
        _, key = await app.create_key("alice", "tests")
        server = create_app(app, run_worker=True, slots=4)
        async with server.router.lifespan_context(server), serve_asgi(server) as url:
            yield app, url, key
    finally:
        await app.aclose()


async def test_twenty_first_submits_of_a_new_job_and_twenty_with_one_key_answer_no_5xx(
    api: tuple[App, str, str],
) -> None:
    app, url, key = api
    async with httpx.AsyncClient(base_url=url, timeout=60,
                                 limits=httpx.Limits(max_connections=CONCURRENT * 2)) as client:
        registered = await client.post("/api/v1/jobs", json=JOB, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert registered.status_code == 201, registered.text
        auth = {"Authorization": f"Bearer {key}"}

        first = await asyncio.gather(*(
            client.post("/api/v1/runs", json={"jobId": "fresh_job", "inputs": {"value": i}}, headers=auth)
            for i in range(CONCURRENT)
        ))
        assert Counter(r.status_code for r in first) == {201: CONCURRENT}, [r.text for r in first if r.status_code != 201]
        assert len({r.json()["jobRunId"] for r in first}) == CONCURRENT

        same_key = await asyncio.gather(*(
            client.post("/api/v1/runs", json={"jobId": "fresh_job", "inputs": {"value": 7}},
                        headers={**auth, "Idempotency-Key": "one-key"})
            for _ in range(CONCURRENT)
        ))
        statuses = Counter(r.status_code for r in same_key)
        assert statuses == {201: 1, 200: CONCURRENT - 1}, [(r.status_code, r.text[:200]) for r in same_key]
        assert len({r.json()["jobRunId"] for r in same_key}) == 1

    count = app.store.read_sync(lambda tx: tx.one(
        "SELECT COUNT(*) AS n FROM runs WHERE idempotency_key = 'one-key'"))
    assert count is not None and count.n == 1
    total = app.store.read_sync(lambda tx: tx.one("SELECT COUNT(*) AS n FROM runs"))
    assert total is not None and total.n == CONCURRENT + 1
    for response in (*first, same_key[0]):
        run = await app.wait(response.json()["jobRunId"], timeout=60)
        assert run["status"] == "completed"


async def test_twenty_batches_racing_on_the_same_item_keys_make_one_run_per_key(api: tuple[App, str, str]) -> None:
    """POST /runs/batch, twenty at once, each with the same three item keys (and one item of its
    own): no 5xx, each key names one run, and every batch is told that run."""
    app, url, key = api
    auth = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=CONCURRENT)) as client:
        answers = await asyncio.gather(*(
            client.post("/api/v1/runs/batch", headers=auth, json={"toolId": "test.instant", "items": [
                *({"inputs": {"value": k}, "idempotencyKey": f"row-{k}"} for k in range(3)),
                {"inputs": {"value": 100 + i}},
            ]})
            for i in range(CONCURRENT)
        ))
    assert Counter(r.status_code for r in answers) == {200: CONCURRENT}, [r.text[:200] for r in answers if r.status_code != 200]
    for k in range(3):
        named = {r.json()["items"][k]["jobRunId"] for r in answers}
        created = [r.json()["items"][k]["created"] for r in answers]
        assert len(named) == 1 and created.count(True) == 1, (k, named, created)
    total = app.store.read_sync(lambda tx: tx.one("SELECT COUNT(*) AS n FROM runs"))
    assert total is not None and total.n == 3 + CONCURRENT


async def test_a_snapshot_is_known_only_once_its_transaction_committed(db_url: str, tmp_path: Path) -> None:
    """A submit whose transaction rolls back must not leave its definition's snapshot "known": the
    next submit would skip the insert and point its run at a row that does not exist."""
    app = App(Settings(home=tmp_path / "home", database_url=db_url, test_tools=True))
    try:
        tool = app.registry.tool("test.instant")
        request = SubmitRequest(job=tool_job(tool), tools={tool.tool_id: tool}, nested_jobs={}, inputs={"value": 1},
                                account_id="alice")

        def submit_then_fail(tx: Tx) -> None:
            app.engine.submit_tx(tx, request, time.time())
            raise RuntimeError("the transaction rolls back")

        with pytest.raises(RuntimeError):
            await app.store.tx(submit_then_fail)
        assert app.store.read_sync(lambda tx: tx.all("SELECT sha256 FROM snapshots")) == []
        run_id, created = await app.store.tx(app.engine.submit_tx, request, time.time())
        assert created and app.store.read_sync(lambda tx: tx.one("SELECT COUNT(*) AS n FROM snapshots")).n == 2
        assert (await app.get_run(run_id))["status"] == "queued"  # no worker has it yet
    finally:
        await app.aclose()
