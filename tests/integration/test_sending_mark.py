"""The mark a remote service writes right before it sends (``generations.sent_at``), with ComfyUI
(native) and ComfyUI Deploy, on both stores.

A dispatch whose worker died comes back as a second lease of its task. Only when an earlier
submit got as far as its mark (``GenerationContext.sending``) may it have reached the backend:
then ComfyUI looks for the prompt first and re-attaches, and ComfyUI Deploy (no client-chosen
ids) fails ``unknown_outcome`` rather than pay twice. Without the mark nothing was sent, and both
send once as usual. A "crashed" worker here is an App that leased the dispatch in a transaction
(and maybe submitted it) and was closed; another App on the same database goes on with a worker.
(The HTTP service's cases: ``test_http_async.py``.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.fakes.comfydeploy_server import DEPLOY_TOOL, FakeComfyDeploy
from tests.fakes.comfyui_server import FakeComfyUI
from tests.helpers.invariants import assert_no_stranded_runs
from tests.helpers.worker import lease_dispatch, running_worker, sent_at, submit_context, work_until_done

from toolweave.app import App
from toolweave.settings import ComfyServer, Settings

LEASE = 0.5
WORKFLOW = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 16711680}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "mark/invert"}},
}
COMFY_TOOL = {
    "toolId": "comfy-invert",
    "service": "comfyui",
    "outputSchema": {"image": {"type": "image"}},
    "metadata": {"workflow": WORKFLOW, "outputMap": {"image": {"node": "3", "kind": "images"}}},
}


@pytest.fixture
async def comfy() -> AsyncIterator[FakeComfyUI]:
    fake = await FakeComfyUI().start()
    yield fake
    await fake.stop()


def _defs(tmp_path: Path, tool: dict[str, Any]) -> Path:
    defs = tmp_path / "defs"
    defs.mkdir(exist_ok=True)
    (defs / "tool.yaml").write_text(yaml.safe_dump(tool))
    return defs


def comfy_app(tmp_path: Path, db_url: str, comfy: FakeComfyUI) -> App:
    return App(Settings(home=tmp_path / "home", database_url=db_url, definitions=[_defs(tmp_path, COMFY_TOOL)],
                        comfyui_servers=[ComfyServer("local", comfy.base_url, 4)], lease_seconds=LEASE))


def deploy_app(tmp_path: Path, db_url: str, deploy: FakeComfyDeploy) -> App:
    return App(Settings(home=tmp_path / "home", database_url=db_url, definitions=[_defs(tmp_path, DEPLOY_TOOL)],
                        comfydeploy_api_key=deploy.api_key, comfydeploy_base_url=deploy.api_url, lease_seconds=LEASE,
                        media_allow_private_urls=True))  # the fake's storage is on loopback


async def _crash(doomed: App, tool_id: str, service: str, *, send: bool) -> tuple[str, str]:
    """Submit a run in ``doomed``, lease its dispatch, submit it to the backend (marked, as a worker
    does) when ``send``, and let the App die: (run id, generation id)."""
    try:
        run_id = await doomed.submit(tool_id, {}, account_id="acme")
        work = await lease_dispatch(doomed)
        if send:
            await doomed.services[service].submit(submit_context(doomed, work, service))
            assert sent_at(doomed, work.generation_id) is not None
    finally:
        await doomed.aclose()
    await asyncio.sleep(LEASE + 0.1)  # its lease runs out
    return run_id, work.generation_id


async def test_comfyui_looks_for_a_marked_prompt_and_reattaches(db_url: str, tmp_path: Path, comfy: FakeComfyUI) -> None:
    run_id, gen_id = await _crash(comfy_app(tmp_path, db_url, comfy), "comfy-invert", "comfyui", send=True)
    app = comfy_app(tmp_path, db_url, comfy)
    try:
        run = await work_until_done(app, run_id)
        assert run["status"] == "completed", run["error"]
        assert [p["prompt_id"] for p in comfy.posted_prompts()] == [gen_id]  # found, not posted again
        assert run["generations"][0]["platformSpecificRunId"] == gen_id
        assert_no_stranded_runs(app.store)
    finally:
        await app.aclose()


async def test_comfyui_posts_an_unmarked_prompt_once_without_looking(db_url: str, tmp_path: Path, comfy: FakeComfyUI) -> None:
    run_id, gen_id = await _crash(comfy_app(tmp_path, db_url, comfy), "comfy-invert", "comfyui", send=False)
    app = comfy_app(tmp_path, db_url, comfy)
    try:
        run = await work_until_done(app, run_id)
        assert run["status"] == "completed", run["error"]
        assert [p["prompt_id"] for p in comfy.posted_prompts()] == [gen_id]
        before_post = comfy.requests[:next(i for i, r in enumerate(comfy.requests) if r.method == "POST" and r.path == "/prompt")]
        assert ("GET", "/history", gen_id) not in [(r.method, r.path, r.body) for r in before_post]  # not looked for
        assert sent_at(app, gen_id) is not None
    finally:
        await app.aclose()


def _queued(deploy: FakeComfyDeploy) -> list[Any]:
    return [c for c in deploy.calls if c[1] == "/run/deployment/queue"]


async def test_comfydeploy_fails_a_marked_run_as_unknown_outcome(db_url: str, tmp_path: Path, deploy: FakeComfyDeploy) -> None:
    run_id, _ = await _crash(deploy_app(tmp_path, db_url, deploy), "cd-invert", "comfydeploy", send=True)
    app = deploy_app(tmp_path, db_url, deploy)
    try:
        run = await work_until_done(app, run_id)
        assert run["status"] == "failed"
        assert run["generations"][0]["error"]["code"] == "unknown_outcome"
        assert len(_queued(deploy)) == 1
        assert_no_stranded_runs(app.store)
    finally:
        await app.aclose()


async def test_comfydeploy_queues_an_unmarked_run_once(db_url: str, tmp_path: Path, deploy: FakeComfyDeploy) -> None:
    run_id, gen_id = await _crash(deploy_app(tmp_path, db_url, deploy), "cd-invert", "comfydeploy", send=False)
    assert _queued(deploy) == []
    app = deploy_app(tmp_path, db_url, deploy)
    try:
        async with running_worker(app):
            for _ in range(400):
                generation = (await app.get_run(run_id))["generations"][0]
                if generation["platformSpecificRunId"] is not None or generation["status"] not in ("pending", "processing"):
                    break
                await asyncio.sleep(0.05)
        assert generation["status"] == "processing", generation.get("error")
        assert generation["platformSpecificRunId"] == next(iter(deploy.runs))
        assert len(_queued(deploy)) == 1 and sent_at(app, gen_id) is not None
    finally:
        await app.aclose()
