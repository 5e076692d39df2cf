"""A submit that the step's time (``timeoutSeconds``) ends after its request was sent, with ComfyUI
(native) and ComfyUI Deploy, on both stores.

The backend took the request and its answer never came before the step's deadline. That used to
end the generation as a retryable timeout, and the step's retry policy sent the request again:
queued (and, on a hosted service, paid for) twice. Now the engine asks the service what became of
it, as after a crash past the sending mark (``GenerationContext.recovering``), and never lets it
send again: ComfyUI finds its prompt by the generation id and follows it; ComfyUI Deploy, which
takes no id of ours, fails ``unknown_outcome`` (maybe paid, not retried). A submit the deadline
ends before it sent anything stays a retryable timeout. Real loopback servers whose answer to the
submit stalls past the step's 1 s (the service's own request timeout is 30 s)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from tests.fakes.comfydeploy_server import FakeComfyDeploy
from tests.fakes.comfyui_server import Case, FakeComfyUI
from tests.helpers.invariants import assert_no_stranded_runs
from tests.helpers.worker import running_worker, work_until_done

from toolweave.app import App
from toolweave.settings import ComfyServer, Settings

WORKFLOW = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 16711680}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "deadline/invert"}},
}
RETRY = {"strategy": "retry", "maxAttempts": 3, "backoffSeconds": 0.01}


class _QueuesThenStalls(FakeComfyUI):
    """Queues each posted prompt (which then runs), and holds its answer until the server stops.
    ``quiet``: its websocket says nothing about prompts (their messages are lost)."""

    quiet = False

    async def _send(self, client_id: str | None, kind: str, data: dict[str, Any]) -> None:
        if not (self.quiet and kind != "status"):
            await super()._send(client_id, kind, data)

    async def post_prompt(self, request: Request) -> Response:
        answer = await super().post_prompt(request)
        await asyncio.Event().wait()  # cancelled when the connection or the server ends
        return answer


class _QueuesThenStallsDeploy(FakeComfyDeploy):
    """Queues each run, and holds its answer (the run id) until the server stops."""

    async def queue(self, request: Request) -> Response:
        await super().queue(request)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


class _NoStream(FakeComfyUI):
    """Its websocket never opens: the service waits for it (up to 5 s) before it sends a prompt."""

    async def websocket(self, ws: WebSocket) -> None:
        await asyncio.Event().wait()


@pytest.fixture
async def comfy() -> AsyncIterator[_QueuesThenStalls]:
    fake = _QueuesThenStalls()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def deploy() -> AsyncIterator[_QueuesThenStallsDeploy]:
    fake = _QueuesThenStallsDeploy()
    await fake.start()
    yield fake
    await fake.stop()


def _defs(tmp_path: Path, tool: dict[str, Any]) -> Path:
    defs = tmp_path / "defs"
    defs.mkdir(exist_ok=True)
    (defs / "tool.yaml").write_text(yaml.safe_dump(tool))
    return defs


def _comfy_tool(**extra: Any) -> dict[str, Any]:
    return {
        "toolId": "comfy-invert", "service": "comfyui", "timeoutSeconds": 1,
        "outputSchema": {"image": {"type": "image"}},
        "metadata": {"workflow": WORKFLOW, "outputMap": {"image": {"node": "3", "kind": "images"}}},
        **extra,
    }


DEPLOY_TOOL = {
    "toolId": "cd-invert", "service": "comfydeploy", "timeoutSeconds": 1,
    "inputSchema": {"prompt": {"type": "text", "default": "x"}},
    "outputSchema": {"image": {"type": "image"}},
    "metadata": {"deploymentId": "d-1"},
}


async def _submit(app: App, tool_id: str) -> str:
    """A run of a one-step job whose step is retried up to 3 times."""
    _, problems = await app.register_job({
        "jobId": "once", "outputSchema": {"image": {"type": "image", "sourceStepId": "make", "sourceOutputName": "image"}},
        "steps": [{"stepId": "make", "toolId": tool_id, "errorHandling": RETRY}],
    })
    assert problems == []
    return await app.submit("once", {}, account_id="acme")


def _app(tmp_path: Path, db_url: str, tool: dict[str, Any], **settings: Any) -> App:
    return App(Settings(home=tmp_path / "home", database_url=db_url, definitions=[_defs(tmp_path, tool)],
                        http_timeout_seconds=30, **settings))


async def test_comfyui_follows_a_prompt_it_took_past_the_steps_deadline(
    db_url: str, tmp_path: Path, comfy: _QueuesThenStalls
) -> None:
    """The prompt ran and finished within the step's second, but neither the answer to its post
    nor its websocket messages came: found in the history by its id, it is the step's result."""
    comfy.quiet = True
    app = _app(tmp_path, db_url, _comfy_tool(), comfyui_servers=[ComfyServer("local", comfy.base_url, 4)])
    try:
        run_id = await _submit(app, "comfy-invert")
        run = await work_until_done(app, run_id, timeout=60)
        posted = [p["prompt_id"] for p in comfy.posted_prompts()]
        assert len(posted) == 1, posted  # looked for by its id and followed, not queued again
        assert run["status"] == "completed", run["error"]
        [gen] = run["generations"]
        assert gen["platformSpecificRunId"] == posted[0] == gen["generationId"]
        assert ("GET", "/history", posted[0]) in [(r.method, r.path, r.body) for r in comfy.requests]
        assert_no_stranded_runs(app.store)
    finally:
        await app.aclose()


async def test_comfyui_cancels_a_prompt_still_running_past_the_steps_deadline(
    db_url: str, tmp_path: Path, comfy: _QueuesThenStalls
) -> None:
    """The prompt is still running when the step's second is over: found by its id, it times out
    as a submitted generation does, cancelled at the server, before the retry queues another (it
    used to run on, unknown to the engine, beside the retry's)."""
    comfy.script(Case.success(hold=True))
    app = _app(tmp_path, db_url, _comfy_tool(), comfyui_servers=[ComfyServer("local", comfy.base_url, 4)])
    try:
        run_id = await _submit(app, "comfy-invert")
        async with running_worker(app):
            for _ in range(600):
                if len(comfy.posted_prompts()) > 1 and any(r.path == "/interrupt" for r in comfy.requests):
                    break
                await asyncio.sleep(0.05)
            run = await app.get_run(run_id)
            first = run["generations"][0]
            assert first["status"] == "timeout" and first["platformSpecificRunId"] == first["generationId"], first
            assert ("POST", "/interrupt", {"prompt_id": first["generationId"]}) in [
                (r.method, r.path, r.body) for r in comfy.requests], comfy.requests
            comfy.release()
            run = await app.wait(run_id, timeout=60)
        assert run["status"] == "completed", run["error"]
        assert_no_stranded_runs(app.store)
    finally:
        await app.aclose()


async def test_comfydeploy_fails_a_run_it_may_have_queued_past_the_steps_deadline(
    db_url: str, tmp_path: Path, deploy: _QueuesThenStallsDeploy
) -> None:
    app = _app(tmp_path, db_url, DEPLOY_TOOL, comfydeploy_api_key=deploy.api_key, comfydeploy_base_url=deploy.api_url)
    try:
        run_id = await _submit(app, "cd-invert")
        run = await work_until_done(app, run_id, timeout=60)
        queued = [c for c in deploy.calls if c[1] == "/run/deployment/queue"]
        assert len(queued) == 1, queued  # the retry policy did not queue (and pay for) it again
        assert run["status"] == "failed", run["status"]
        [gen] = run["generations"]
        error = gen["error"]
        assert error["code"] == "unknown_outcome" and error["retryable"] is False, error
        assert error["details"] == {"cause": "timeout", "maybePaid": True}, error
        assert "step's 1 s" in error["message"] and "not queueing it again" in error["message"], error["message"]
        assert_no_stranded_runs(app.store)
    finally:
        await app.aclose()


async def test_a_submit_the_deadline_ends_before_it_sent_is_retried(db_url: str, tmp_path: Path) -> None:
    """Nothing reached the backend (the deadline came while the service waited for its websocket,
    before its mark): a retryable timeout, tried again by the retry policy as before."""
    fake = _NoStream()
    await fake.start()
    app = _app(tmp_path, db_url, _comfy_tool(), comfyui_servers=[ComfyServer("local", fake.base_url, 4)])
    try:
        run_id = await _submit(app, "comfy-invert")
        run = await work_until_done(app, run_id, timeout=60)
        assert fake.posted_prompts() == []
        assert run["status"] == "failed", run["status"]
        assert len(run["generations"]) == 3  # every attempt the policy allows
        for gen in run["generations"]:
            assert gen["error"]["code"] == "timeout" and gen["error"]["retryable"] is True, gen["error"]
            assert "maybePaid" not in (gen["error"].get("details") or {}), gen["error"]
    finally:
        await app.aclose()
        await fake.stop()
