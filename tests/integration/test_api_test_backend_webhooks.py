"""Webhooks of ``test.slow_async``'s stand-in backend through the real API (what
``bench/ingress.py`` sends): progress, completion, a repeat and a forged token."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.integration.test_api import Server, assert_problem, running_server


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running_server(tmp_path / "home") as srv:
        yield srv


async def test_progress_and_completion_arrive_by_webhook(server: Server) -> None:
    app = server.app
    run_id = await app.submit("test.slow_async", {"seconds": 86400}, account_id="alice")

    async def parked() -> tuple[str, str]:
        while True:
            run = await app.get_run(run_id, "alice")
            gens = [g for g in run["generations"] if g["platformSpecificRunId"]]
            if gens:
                return gens[0]["generationId"], gens[0]["platformSpecificRunId"]
            await asyncio.sleep(0.05)

    gen_id, platform_id = await asyncio.wait_for(parked(), 30)
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
