"""Every step gets its tool's contract (issue 10, item 6).

Run alone, a tool's inputs are validated, coerced, defaulted and its seed drawn; as a step of a job
none of that happened: a ComfyUI Deploy step received ``width: 4999`` although the tool's maximum
is 2048. Now a step's resolved inputs go through the same preparation as a direct run's, and a value
the tool refuses fails the step with an input error, not retried, before anything reaches the
backend (here the loopback ComfyUI Deploy fake).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.fakes.comfydeploy_server import FakeComfyDeploy
from tests.helpers.worker import running_worker, work_until_done

from toolweave.app import App
from toolweave.inputs import SEED_MAX
from toolweave.model.definitions import JobDefinition
from toolweave.settings import Settings

ROOT = Path(__file__).resolve().parents[2]

JOB = {
    "jobId": "poster_at_width",
    "inputSchema": {"prompt": {"type": "string", "required": True}, "width": {"type": "integer", "required": True}},
    "steps": [{
        "stepId": "draw", "toolId": "comfy-fluxGeneral",
        "errorHandling": {"strategy": "retry", "maxAttempts": 3, "backoffSeconds": 0.05},
        "inputMappings": [
            {"sourceJobInput": "prompt", "targetInputName": "text_prompt"},
            {"sourceJobInput": "width", "targetInputName": "width"},
        ],
    }],
}

MAP_JOB = {  # the same tool once per width of a list: each item is held to the contract
    "jobId": "posters_at_widths",
    "inputSchema": {"prompt": {"type": "string", "required": True}, "widths": {"type": "json", "required": True}},
    "steps": [{
        "stepId": "draw", "toolId": "comfy-fluxGeneral", "map": {"over": {"sourceJobInput": "widths"}, "minSuccess": 1},
        "errorHandling": {"strategy": "retry", "maxAttempts": 3, "backoffSeconds": 0.05},
        "inputMappings": [
            {"sourceJobInput": "prompt", "targetInputName": "text_prompt"},
            {"sourceItem": True, "targetInputName": "width"},
        ],
    }],
}


@pytest.fixture
async def app(db_url: str, tmp_path: Path, deploy: FakeComfyDeploy) -> AsyncIterator[App]:
    instance = App(Settings(
        home=tmp_path / "home", database_url=db_url, definitions=[ROOT / "examples" / "seed" / "tools.yaml"],
        comfydeploy_api_key=deploy.api_key, comfydeploy_base_url=deploy.api_url,
    ))
    assert instance.registry.register(JobDefinition.model_validate(JOB)) == []
    assert instance.registry.register(JobDefinition.model_validate(MAP_JOB)) == []
    yield instance
    await instance.aclose()


def queued(deploy: FakeComfyDeploy) -> list[dict[str, Any]]:
    return [body for method, path, body in deploy.calls if method == "POST" and path == "/run/deployment/queue"]


async def test_a_width_above_the_tool_s_maximum_fails_the_step_and_never_reaches_the_backend(
    app: App, deploy: FakeComfyDeploy,
) -> None:
    run_id = await app.submit("poster_at_width", {"prompt": "a lighthouse", "width": 4999}, account_id="acme")
    run = await work_until_done(app, run_id)
    assert run["status"] == "failed"
    [step] = run["stepStatuses"]
    assert step["status"] == "failed" and step["error"]["code"] == "invalid_input"
    assert step["error"]["retryable"] is False
    assert "width: must be at most 2048 (got 4999)" in step["error"]["message"]
    assert run["generations"] == []  # no attempt was made, so none was retried
    assert queued(deploy) == []


async def test_a_width_the_tool_accepts_reaches_it_coerced_defaulted_and_with_a_seed(
    app: App, deploy: FakeComfyDeploy,
) -> None:
    await app.submit("poster_at_width", {"prompt": "a lighthouse", "width": "1500"}, account_id="acme")
    async with running_worker(app):
        for _ in range(200):
            if queued(deploy):
                break
            await asyncio.sleep(0.05)
    [body] = queued(deploy)
    inputs = body["inputs"]
    seed = inputs.pop("seed")
    assert isinstance(seed, int) and 0 <= seed <= SEED_MAX
    assert inputs == {"text_prompt": "a lighthouse", "negative_prompt": "", "width": 1500, "height": 1024,
                      "steps": 28, "guidance": 3.5}


async def test_each_item_of_a_map_step_is_held_to_the_contract_and_a_refused_one_never_reaches_the_backend(
    app: App, deploy: FakeComfyDeploy,
) -> None:
    run_id = await app.submit("posters_at_widths", {"prompt": "a lighthouse", "widths": [4999, "1500"]},
                              account_id="acme")
    async with running_worker(app):
        for _ in range(200):
            if queued(deploy):
                break
            await asyncio.sleep(0.05)
        page = await app.step_items(run_id, "draw", "acme")
    refused, accepted = page["items"]
    assert refused["status"] == "failed" and refused["error"]["code"] == "invalid_input"
    assert refused["error"]["retryable"] is False and refused["generationId"] is None  # no attempt made, none retried
    assert "width: must be at most 2048 (got 4999)" in refused["error"]["message"]
    [body] = queued(deploy)  # only the accepted item, coerced and defaulted, with a seed drawn
    assert body["inputs"]["width"] == 1500 and body["inputs"]["height"] == 1024
    assert isinstance(body["inputs"]["seed"], int) and accepted["status"] in ("running", "succeeded")
