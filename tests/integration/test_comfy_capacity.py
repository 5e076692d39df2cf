"""The engine honours a service's concurrency limit (``capacity(tool) -> (key, limit)``).

A ComfyUI server configured with ``@1`` runs one of our prompts at a time: the second run's
dispatch waits in the queue (the backend is not called) until the first generation is terminal,
even when the two runs are handled by two App instances (two processes' worth of stores and
workers) sharing one database. The slot count lives in the database, not in a worker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.fakes.comfyui_server import Case, FakeComfyUI

from toolweave.app import App
from toolweave.model.definitions import ToolDefinition
from toolweave.services.base import ServiceError
from toolweave.settings import ComfyServer, Settings
from toolweave.store import generations as gens_q

WORKFLOW = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 16711680}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "capacity/invert"}},
}


def tool(server: str | None = None) -> dict[str, Any]:
    return {
        "toolId": "comfy-invert-empty",
        "service": "comfyui",
        "outputSchema": {"image": {"type": "image"}},
        "metadata": {"workflow": WORKFLOW, "outputMap": {"image": {"node": "3", "kind": "images"}},
                     **({"server": server} if server else {})},
    }


@pytest.fixture
async def comfy() -> AsyncIterator[FakeComfyUI]:
    fake = await FakeComfyUI().start()
    yield fake
    await fake.stop()


def make_app(home: Path, db_url: str, defs: Path, base_url: str, concurrency: int) -> App:
    return App(
        Settings(
            home=home,
            database_url=db_url,
            definitions=[defs],
            comfyui_servers=[ComfyServer("local", base_url, concurrency)],
        )
    )


async def until(check: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("the condition never held")
        await asyncio.sleep(0.05)


async def test_a_server_limit_of_one_holds_the_second_prompt_back_across_workers(
    db_url: str, tmp_path: Path, comfy: FakeComfyUI
) -> None:
    defs = tmp_path / "defs"
    defs.mkdir()
    (defs / "tool.yaml").write_text(yaml.safe_dump(tool()))
    first = make_app(tmp_path / "home", db_url, defs, comfy.base_url, 1)
    second = make_app(tmp_path / "home", db_url, defs, comfy.base_url, 1)
    assert first.services["comfyui"].capacity(first.registry.tool("comfy-invert-empty")) == ("comfyui:local", 1)  # type: ignore[attr-defined]
    comfy.script(Case.success(hold=True), Case.success())
    workers = [first.make_worker(2, idle_poll_seconds=0.1), second.make_worker(2, idle_poll_seconds=0.1)]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        run_a = await first.submit("comfy-invert-empty", {}, account_id="acme")
        run_b = await second.submit("comfy-invert-empty", {}, account_id="acme")

        async def one_running() -> bool:
            return comfy.running is not None

        await until(one_running)
        # Several retry rounds of the waiting dispatch (0.5 s each) on both workers.
        await asyncio.sleep(2.0)
        assert len(comfy.posted_prompts()) == 1
        held = comfy.running
        assert held is not None
        runs = {r: await first.get_run(r) for r in (run_a, run_b)}
        waiting = [g for r in runs.values() for g in r["generations"] if g["generationId"] != held.prompt_id]
        assert len(waiting) == 1 and waiting[0]["status"] == "pending"
        row = await first.store.tx(gens_q.get, waiting[0]["generationId"])
        assert row is not None and row.capacity_key is None and row.platform_specific_run_id is None
        # The held run says why it waits, in the words every front end shows.
        why = "waiting for a free slot of comfyui:local (1 of 1 in use)"
        assert waiting[0]["liveStatus"] == why
        held_run = next(r for r in runs.values() if waiting[0] in r["generations"])
        assert held_run["status"] == "running"
        assert held_run["statusDetail"] == f"step {waiting[0]['stepId']} is {why}"
        other = next(r for r in runs.values() if r is not held_run)
        assert other["statusDetail"] is None

        comfy.release()
        final = [await first.wait(r, timeout=30) for r in (run_a, run_b)]
        rows = [await first.store.tx(gens_q.get, r["generations"][0]["generationId"]) for r in final]
    finally:
        for w in workers:
            w.stop()
        await asyncio.gather(*tasks)
        await first.aclose()
        await second.aclose()
    assert [r["status"] for r in final] == ["completed", "completed"]
    assert len(comfy.posted_prompts()) == 2
    gens = sorted(rows, key=lambda g: g.generation_id != held.prompt_id)
    assert [p["prompt_id"] for p in comfy.posted_prompts()] == [g.generation_id for g in gens]
    # The second prompt was posted only after the first generation had finished.
    assert gens[1].request_timestamp >= gens[0].response_timestamp
    assert {g.capacity_key for g in gens} == {"comfyui:local"}
    assert all(f["statusDetail"] is None for f in final)
    assert gens[1].live_status != why  # the slot taken cleared it; the backend's own words since


async def test_a_limit_of_two_submits_two_at_once_and_slots_free_on_failure(
    db_url: str, tmp_path: Path, comfy: FakeComfyUI
) -> None:
    defs = tmp_path / "defs"
    defs.mkdir()
    (defs / "tool.yaml").write_text(yaml.safe_dump(tool()))
    app = make_app(tmp_path / "home", db_url, defs, comfy.base_url, 2)
    # The first prompt is refused (its slot must be given back), the next two are held together.
    comfy.script(Case.node_errors(400), Case.success(hold=True), Case.success(hold=True), Case.success())
    worker = app.make_worker(4, idle_poll_seconds=0.1)
    task = asyncio.create_task(worker.run())
    try:
        refused = await app.submit("comfy-invert-empty", {}, account_id="acme")
        assert (await app.wait(refused, timeout=20))["status"] == "failed"
        run_ids = [await app.submit("comfy-invert-empty", {}, account_id="acme") for _ in range(3)]

        async def two_posted() -> bool:
            return len(comfy.posted_prompts()) >= 3 and comfy.running is not None

        await until(two_posted)
        await asyncio.sleep(1.5)
        assert len(comfy.posted_prompts()) == 3  # the refused one and two held: the third waits
        assert len(comfy.pending) == 1  # the server queues the second of the two itself
        for prompt in [comfy.running, *comfy.pending]:
            assert prompt is not None
            prompt.released.set()
        final = [await app.wait(r, timeout=30) for r in run_ids]
    finally:
        worker.stop()
        await task
        await app.aclose()
    assert [r["status"] for r in final] == ["completed"] * 3
    assert len(comfy.posted_prompts()) == 4


async def test_an_unknown_server_is_not_held_back_but_fails_with_its_name(
    db_url: str, tmp_path: Path, comfy: FakeComfyUI
) -> None:
    defs = tmp_path / "defs"
    defs.mkdir()
    (defs / "tool.yaml").write_text(yaml.safe_dump(tool(server="gpu-box")))
    app = make_app(tmp_path / "home", db_url, defs, comfy.base_url, 1)
    # Validation refuses it, naming the server...
    assert [p.message for p in app.definition_problems] == [
        "ComfyUI server 'gpu-box' is not configured (servers: local)"
    ]
    # ...and a run of it (its server removed from the settings since) fails with its name.
    app.registry.add_tools([ToolDefinition.model_validate(tool(server="gpu-box"))])
    with pytest.raises(ServiceError):
        app.services["comfyui"].capacity(ToolDefinition.model_validate(tool(server="gpu-box")))  # type: ignore[attr-defined]
    try:
        run_id = await app.submit("comfy-invert-empty", {}, account_id="acme")
        await app.make_worker(2).run_until_idle(20)
        run = await app.get_run(run_id)
    finally:
        await app.aclose()
    assert run["status"] == "failed"
    assert "gpu-box" in run["error"]["message"]
    assert comfy.posted_prompts() == []


async def test_a_comfydeploy_dispatch_that_waited_for_a_slot_is_queued_normally(db_url: str, tmp_path: Path) -> None:
    """A wait for a slot is not an attempt: the dispatch is not taken for a cut-short submit
    (which ComfyUI Deploy, without client-chosen ids, would refuse as ``unknown_outcome``)."""
    from tests.fakes.comfydeploy_server import FakeComfyDeploy

    fake = await FakeComfyDeploy().start()
    defs = tmp_path / "defs"
    defs.mkdir()
    (defs / "tool.yaml").write_text(yaml.safe_dump({
        "toolId": "cd-one-at-a-time",
        "service": "comfydeploy",
        "inputSchema": {"prompt": {"type": "text", "default": "x"}},
        "outputSchema": {"image": {"type": "image"}},
        "metadata": {"deploymentId": "d-1", "concurrency": 1},
    }))
    app = App(Settings(home=tmp_path / "home", database_url=db_url, definitions=[defs],
                       comfydeploy_api_key=fake.api_key, comfydeploy_base_url=fake.api_url,
                       media_allow_private_urls=True))  # the fake's storage is on loopback
    worker = app.make_worker(4, idle_poll_seconds=0.1)
    task = asyncio.create_task(worker.run())

    def queued() -> list[Any]:
        return [c for c in fake.calls if c[1] == "/run/deployment/queue"]

    def polls_due(tx: Any, now: float) -> int:
        return int(tx.rowcount("UPDATE tasks SET available_at = :now WHERE kind = 'poll' AND lease_owner IS NULL",
                               {"now": now}))

    try:
        run_ids = [await app.submit("cd-one-at-a-time", {}, account_id="acme") for _ in range(2)]

        async def one_queued() -> bool:
            return len(queued()) == 1

        await until(one_queued)
        await asyncio.sleep(1.5)
        assert len(queued()) == 1
        for n in (1, 2):
            async def queued_runs(count: int = n) -> bool:  # the second is queued once the first is done
                return len(fake.runs) >= count

            await until(queued_runs)
            fake.finish(list(fake.runs)[n - 1])  # the backend finishes; no webhook (none was asked for)

            async def polled_and_done(count: int = n) -> bool:
                await app.store.tx(polls_due, time.time())
                runs = [await app.get_run(r) for r in run_ids]
                return sum(r["status"] == "completed" for r in runs) == count

            await until(polled_and_done)
        final = [await app.get_run(r) for r in run_ids]
    finally:
        worker.stop()
        await task
        await app.aclose()
        await fake.stop()
    assert [r["status"] for r in final] == ["completed", "completed"]
    assert all(len(r["generations"]) == 1 for r in final)
