"""ComfyUI and ComfyUI Deploy end to end through the engine.

- ComfyUI: ``toolweave run invert_stamp_grid --wait`` as a real process (the example job in
  ``examples/comfyui``: a ComfyUI workflow, then builtin watermark and grid) against the fake
  ComfyUI server (real HTTP and websocket on loopback), the server configured through
  ``TOOLWEAVE_COMFYUI_SERVERS``. Progress comes from the websocket and is both recorded
  (``step.progress`` events) and printed; outputs are artifacts holding the bytes the server
  served. A workflow the server refuses fails the run naming the node.
- ComfyUI Deploy: an App whose ``public_base_url`` is the real HTTP API (``toolweave.api``) on
  loopback; the fake backend POSTs its webhooks to the URL it was queued with. A run completes
  through webhooks; through the fallback poll when the webhooks are lost; and duplicated,
  reordered, late and forged webhooks change nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from tests.fakes.comfydeploy_server import DeployCase, FakeComfyDeploy, post_webhooks
from tests.fakes.comfyui_server import Case, FakeComfyUI
from tests.helpers.loopback import serve_asgi

from toolweave.api.server import create_app
from toolweave.app import App
from toolweave.inputs import SEED_MAX
from toolweave.settings import Settings
from toolweave.store import generations as gens_q
from toolweave.store.db import Tx

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "comfyui"
SAMPLE = ROOT / "examples" / "assets" / "sample.png"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --- ComfyUI through `toolweave run` ----------------------------------------------------------------


@pytest.fixture
async def comfy() -> AsyncIterator[FakeComfyUI]:
    fake = await FakeComfyUI().start()
    yield fake
    await fake.stop()


async def toolweave(home: Path, comfy_url: str, *args: str) -> tuple[int, str, str]:
    """Run the CLI as a real process (the fake server keeps serving in this event loop)."""
    env = {
        **os.environ,
        "TOOLWEAVE_HOME": str(home),
        "TOOLWEAVE_DEFINITIONS": str(EXAMPLE),
        "TOOLWEAVE_COMFYUI_SERVERS": f"local={comfy_url}",
        "TOOLWEAVE_HTTP_TIMEOUT_SECONDS": "20",
        "COLUMNS": "200",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "toolweave.cli", *args,
        cwd=str(home.parent), env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def run_id_of(stderr: str) -> str:
    found = re.search(r"run (run_\w+) submitted", stderr)
    assert found, stderr
    return found.group(1)


async def test_a_comfyui_job_runs_end_to_end_through_the_cli_with_progress(
    tmp_path: Path, comfy: FakeComfyUI
) -> None:
    home = tmp_path / "home"
    code, out, err = await toolweave(
        home, comfy.base_url, "run", "invert_stamp_grid", "-i", f"image=@{SAMPLE}", "-i", "label=inverted",
        "--wait", "--view", "lines", "-o", str(tmp_path / "out"),
    )
    assert code == 0, out + err
    run_id = run_id_of(err)

    # The CLI printed the websocket's progress while the ComfyUI step ran.
    progress_lines = [line for line in out.splitlines() if "step.progress" in line and "invert" in line]
    assert progress_lines, out
    assert any(re.search(r"\d+%", line) for line in progress_lines)

    app = App(Settings.load({"TOOLWEAVE_HOME": str(home), "TOOLWEAVE_DEFINITIONS": str(EXAMPLE)}))
    try:
        run = await app.get_run(run_id)
        events = await app.events(run_id)
        outputs = run["finalOutputs"]
        assert run["status"] == "completed"
        assert [s["status"] for s in run["stepStatuses"]] == ["succeeded"] * 3
        services = {g["stepId"]: g["serviceName"] for g in run["generations"]}
        assert services == {"invert": "comfyui", "stamp": "builtin", "sheet": "builtin"}

        # Progress was recorded from the websocket, in order, before the step succeeded.
        progress = [e for e in events if e["type"] == "step.progress" and e["stepId"] == "invert"]
        assert len(progress) >= 3
        assert any("executing node" in (e["data"].get("liveStatus") or "") for e in progress)
        succeeded = next(e for e in events if e["type"] == "step.succeeded" and e["stepId"] == "invert")
        assert all(e["id"] < succeeded["id"] for e in progress)

        # Outputs are artifacts; the ComfyUI one holds exactly the bytes the server served.
        posted = comfy.posted_prompts()
        assert len(posted) == 1
        # The prompt may finish (websocket) before its submission is recorded; it must not be
        # "cancelled" at the server for that: no queue deletion, no interrupt.
        assert [r.path for r in comfy.requests if r.path in ("/queue", "/interrupt") and r.method == "POST"] == []
        generation = next(g for g in run["generations"] if g["stepId"] == "invert")
        assert posted[0]["prompt_id"] == generation["generationId"]
        assert posted[0]["prompt"]["1"]["inputs"]["image"].startswith("toolweave/tw_")
        served = comfy.files[("output", "toolweave", "invert_00001_.png")]
        assert outputs["inverted"]["kind"] == "artifact"
        assert outputs["inverted"]["sha256"] == hashlib.sha256(served).hexdigest()
        for name in ("inverted", "stamped", "sheet"):
            path, ref = await app.artifact(outputs[name]["sha256"], "local")
            assert path.read_bytes().startswith(PNG_MAGIC)
            assert ref.mime_type == "image/png"
        assert outputs["sheet"]["width"] > outputs["sheet"]["height"]  # three pictures side by side
        # `-o` copied the files out.
        assert len([p for p in (tmp_path / "out").iterdir() if p.suffix == ".png"]) == 3
    finally:
        await app.aclose()


async def test_a_workflow_the_server_refuses_fails_the_run_naming_the_node(
    tmp_path: Path, comfy: FakeComfyUI
) -> None:
    comfy.script(Case.node_errors(400))
    home = tmp_path / "home"
    code, out, err = await toolweave(
        home, comfy.base_url, "run", "invert_stamp_grid", "-i", f"image=@{SAMPLE}", "--wait", "--view", "lines",
    )
    assert code == 1, out + err
    run_id = run_id_of(err)
    assert "node 1 (EmptyImage)" in out + err  # the fake answers with the captured refusal of node 1
    app = App(Settings.load({"TOOLWEAVE_HOME": str(home), "TOOLWEAVE_DEFINITIONS": str(EXAMPLE)}))
    try:
        run = await app.get_run(run_id)
    finally:
        await app.aclose()
    assert run["status"] == "failed"
    steps = {s["stepId"]: s for s in run["stepStatuses"]}
    assert steps["invert"]["status"] == "failed"
    assert steps["invert"]["attempt"] == 1  # a refusal is not retried
    assert steps["stamp"]["status"] == steps["sheet"]["status"] == "cancelled"
    error = steps["invert"]["error"]
    assert error["node"] == "1" and error["retryable"] is False
    assert "node 1 (EmptyImage)" in error["message"]
    assert len(comfy.posted_prompts()) == 1


# --- ComfyUI Deploy through the engine and the HTTP API ---------------------------------------------

DEPLOY_TOOL = {
    "toolId": "cd-poster",
    "service": "comfydeploy",
    "displayName": "Poster (ComfyUI Deploy)",
    "inputSchema": {"prompt": {"type": "text", "required": True}},
    "outputSchema": {"image": {"type": "image"}, "caption": {"type": "text"}},
    "metadata": {
        "deploymentId": "0b5a7c1e-0000-4000-8000-00000000c0de",
        "outputMap": {"image": {"outputId": "output_images"}, "caption": {"node": "12", "kind": "text"}},
    },
}
DEPLOY_JOB = {
    "jobId": "poster_stamped",
    "inputSchema": {"prompt": {"type": "text", "required": True}},
    "outputSchema": {
        "poster": {"type": "image", "sourceStepId": "poster", "sourceOutputName": "image"},
        "caption": {"type": "text", "sourceStepId": "poster", "sourceOutputName": "caption"},
        "stamped": {"type": "image", "sourceStepId": "stamp", "sourceOutputName": "image"},
    },
    "steps": [
        {"stepId": "poster", "toolId": "cd-poster",
         "inputMappings": [{"sourceJobInput": "prompt", "targetInputName": "prompt"}]},
        {"stepId": "stamp", "toolId": "image.watermark",
         "inputMappings": [{"sourceStepId": "poster", "sourceOutputName": "image", "targetInputName": "image"},
                           {"value": "toolweave", "targetInputName": "text"}]},
    ],
}


@dataclass
class Deploy:
    app: App
    fake: FakeComfyDeploy
    base_url: str

    async def submitted(self, run_id: str) -> tuple[str, str]:
        """Wait until the run's ComfyUI Deploy generation is recorded as submitted."""
        async def check() -> tuple[str, str] | None:
            run = await self.app.get_run(run_id)
            gens = [g for g in run["generations"] if g["serviceName"] == "comfydeploy"]
            if gens and gens[0]["platformSpecificRunId"] and gens[0]["status"] == "processing":
                return gens[0]["generationId"], gens[0]["platformSpecificRunId"]
            return None

        return await until(check)

    async def state(self, run_id: str) -> tuple[Any, ...]:
        """Everything a webhook could change: the run detail, its events, its generations' rows."""
        run = await self.app.get_run(run_id)
        events = await self.app.events(run_id)
        rows = [dict(await self.app.store.tx(gens_q.get, g["generationId"]) or {}) for g in run["generations"]]
        return run, events, rows

    def url(self, generation_id: str, *, token: str | None = None, service: str = "comfydeploy") -> str:
        real = self.app.webhook_url("comfydeploy", generation_id)
        assert real is not None and real.startswith(self.base_url)
        good = real.rsplit("token=", 1)[1]
        return f"{self.base_url}/webhooks/{service}/{generation_id}?token={good if token is None else token}"


async def until(check: Callable[[], Awaitable[Any]], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("the condition never held")
        await asyncio.sleep(0.05)


@pytest.fixture
async def deploy(db_url: str, tmp_path: Path) -> AsyncIterator[Deploy]:
    fake = await FakeComfyDeploy().start()
    defs = tmp_path / "defs"
    defs.mkdir()
    (defs / "poster.yaml").write_text(yaml.safe_dump(DEPLOY_TOOL))
    (defs / "job.yaml").write_text(yaml.safe_dump(DEPLOY_JOB))
    app = App(
        Settings(
            home=tmp_path / "home",
            database_url=db_url,
            definitions=[defs],
            comfydeploy_api_key=fake.api_key,
            comfydeploy_base_url=fake.api_url,
            media_allow_private_urls=True,  # the fake's storage is on loopback
        )
    )
    assert app.definition_problems == []
    worker = app.make_worker(4, idle_poll_seconds=0.1)
    task: asyncio.Task[None] | None = None
    try:
        async with serve_asgi(create_app(app, run_worker=False)) as base_url:
            app.settings.public_base_url = base_url  # the backend reaches the webhook route here
            task = asyncio.create_task(worker.run())
            yield Deploy(app, fake, base_url)
            worker.stop()
            await task
    finally:
        if task is not None and not task.done():
            worker.stop()
            await task
        await app.aclose()
        await fake.stop()


def _generation_raw(row: dict[str, Any]) -> dict[str, Any]:
    raw = row.get("response_payload")
    return raw if isinstance(raw, dict) else {}


async def test_a_comfydeploy_step_completes_through_its_webhooks(deploy: Deploy) -> None:
    run_id = await deploy.app.submit("poster_stamped", {"prompt": "a lighthouse"}, account_id="acme")
    generation_id, platform_id = await deploy.submitted(run_id)
    queued = next(c for c in deploy.fake.calls if c[1] == "/run/deployment/queue")[2]
    assert queued["webhook"] == deploy.app.webhook_url("comfydeploy", generation_id)
    assert queued["webhook_intermediate_status"] is True

    codes = await deploy.fake.play(platform_id)
    assert codes and all(code == 200 for code in codes)
    run = await deploy.app.wait(run_id, timeout=30)
    assert run["status"] == "completed"
    assert run["finalOutputs"]["caption"] == "seen: a lighthouse"
    poster = run["finalOutputs"]["poster"]
    assert poster["kind"] == "artifact" and poster["mimeType"] == "image/png"
    path, _ref = await deploy.app.artifact(poster["sha256"], "acme")
    assert path.read_bytes() == deploy.fake.files[f"{platform_id}/{platform_id[:8]}_00001_.png"]
    assert run["finalOutputs"]["stamped"]["sha256"] != poster["sha256"]

    # It was the webhooks that carried the run: their progress is in the events, and the terminal
    # update is the webhook's (a poll's body has no event_type); the fallback poll, due 60 s after
    # the submission, never ran — the only read of the run is finalize's one for timing.
    events = await deploy.app.events(run_id)
    lives = [e["data"].get("liveStatus") for e in events if e["type"] == "step.progress" and e["stepId"] == "poster"]
    assert "Executing KSampler" in lives
    row = await deploy.app.store.tx(gens_q.get, generation_id)
    assert row is not None
    assert _generation_raw(row)["eventType"] == "run.updated"
    assert _generation_raw(row)["runDuration"] == 12.5
    reads = [c for c in deploy.fake.calls if c[0] == "GET" and c[1] == f"/run/{platform_id}"]
    assert len(reads) == 1
    # Outputs were downloaded without the API key.
    assert all("authorization" not in headers for headers in deploy.fake.file_requests)


def make_polls_due(tx: Tx, now: float) -> int:
    """Move the due time of queued poll tasks to now: what waiting for the fallback poll looks like."""
    return tx.rowcount(
        "UPDATE tasks SET available_at = :now WHERE kind = 'poll' AND lease_owner IS NULL", {"now": now}
    )


async def test_a_comfydeploy_step_completes_through_polling_when_the_webhooks_never_come(
    deploy: Deploy,
) -> None:
    run_id = await deploy.app.submit("poster_stamped", {"prompt": "a harbour"}, account_id="acme")
    generation_id, platform_id = await deploy.submitted(run_id)
    await deploy.fake.play(platform_id, send=False)  # the backend finishes; every webhook is lost
    assert deploy.fake.webhooks_sent == []
    # The fallback poll is due 60 s after the submission (webhooks were promised); let that time pass.
    assert await deploy.app.store.tx(make_polls_due, time.time()) == 1
    run = await deploy.app.wait(run_id, timeout=30)
    assert run["status"] == "completed"
    assert run["finalOutputs"]["caption"] == "seen: a harbour"
    row = await deploy.app.store.tx(gens_q.get, generation_id)
    assert row is not None
    assert "eventType" not in _generation_raw(row)  # the terminal update came from GET /run/{id}
    assert _generation_raw(row)["status"] == "success"


async def test_duplicated_reordered_late_and_forged_webhooks_change_nothing(deploy: Deploy) -> None:
    app, fake = deploy.app, deploy.fake
    run_id = await app.submit("poster_stamped", {"prompt": "a storm"}, account_id="acme")
    generation_id, platform_id = await deploy.submitted(run_id)
    url = deploy.url(generation_id)

    # Halfway: the webhooks so far, delivered again, change nothing.
    await fake.play(platform_id, until=3)
    bodies_so_far = [body for _, body, _ in fake.webhooks_sent]
    await until(lambda: _has_live(app, run_id, "Executing EmptyImage"))
    before = await deploy.state(run_id)
    assert await post_webhooks(url, bodies_so_far) == [200] * len(bodies_so_far)
    assert await deploy.state(run_id) == before

    # Reordered: earlier states arriving after a later one (a retried delivery) change nothing.
    await fake.play(platform_id, until=4)
    await until(lambda: _has_live(app, run_id, "Executing KSampler"))
    before = await deploy.state(run_id)
    stale = [fake.webhook_body(platform_id, step) for step in (3, 1, 0)]
    assert await post_webhooks(url, stale) == [200] * len(stale)
    assert await deploy.state(run_id) == before

    # The run finishes through its webhooks.
    await fake.play(platform_id)
    done = await app.wait(run_id, timeout=30)
    assert done["status"] == "completed"
    await until(lambda: _settled(app, run_id))
    before = await deploy.state(run_id)
    calls_before = len(fake.calls)
    all_bodies = fake.webhook_bodies(platform_id)

    # Duplicates of every webhook; earlier states after the terminal one (reordered); a
    # different terminal state after the fact (late); a per-output event.
    late_failure = {**fake.webhook_body(platform_id), "status": "failed", "live_status": "Error", "outputs": []}
    cancelled = {**late_failure, "status": "cancelled"}
    output_event = {**fake.webhook_body(platform_id), "event_type": "run.output"}
    replays = [*all_bodies, *reversed(all_bodies), all_bodies[-1], late_failure, cancelled, output_event]
    codes = await post_webhooks(url, replays)
    assert codes == [200] * len(replays)
    answers = await _answers(url, [all_bodies[-1], late_failure])
    assert answers == [{"applied": False}, {"applied": False}]

    # Forged: a bad token, another generation's id, another service, a token for another
    # generation, a wrong run id with the right token, and garbage bodies.
    other_token = deploy.url("gen_someoneelse").rsplit("token=", 1)[1]
    assert await post_webhooks(deploy.url(generation_id, token="forged"), [all_bodies[-1]]) == [404]
    assert await post_webhooks(deploy.url(generation_id, token=""), [all_bodies[-1]]) == [404]
    assert await post_webhooks(deploy.url(generation_id, token=other_token), [all_bodies[-1]]) == [404]
    assert await post_webhooks(deploy.url("gen_doesnotexist"), [all_bodies[-1]]) == [404]
    assert await post_webhooks(deploy.url(generation_id, service="comfyui"), [all_bodies[-1]]) == [404]
    assert await post_webhooks(deploy.url(generation_id, service="nosuch"), [all_bodies[-1]]) == [404]
    wrong_run = {**all_bodies[-1], "run_id": "11111111-2222-4333-8444-555555555555"}
    garbage: list[Any] = [
        wrong_run,
        b"not json at all",
        b"[1, 2, 3]",
        {"status": "success"},  # no run_id
        {**all_bodies[-1], "status": "exploded"},
        {**all_bodies[-1], "progress": "lots"},
        {**all_bodies[-1], "event_type": "run.deleted"},
    ]
    assert await post_webhooks(url, garbage) == [400] * len(garbage)

    after = await deploy.state(run_id)
    assert after == before
    assert len(fake.calls) == calls_before  # nothing was asked of the backend on their account


async def test_a_webhook_arriving_mid_run_out_of_order_does_not_reopen_a_finished_generation(
    deploy: Deploy,
) -> None:
    """The terminal webhook overtakes the intermediate ones (a retried delivery): the late
    progress updates that follow it change nothing."""
    app, fake = deploy.app, deploy.fake
    fake.script(DeployCase.success())
    run_id = await app.submit("poster_stamped", {"prompt": "dunes"}, account_id="acme")
    generation_id, platform_id = await deploy.submitted(run_id)
    url = deploy.url(generation_id)
    bodies = fake.webhook_bodies(platform_id)
    fake.finish(platform_id)
    assert await post_webhooks(url, [bodies[-1]]) == [200]
    assert (await app.wait(run_id, timeout=30))["status"] == "completed"
    await until(lambda: _settled(app, run_id))
    before = await deploy.state(run_id)
    assert await post_webhooks(url, bodies[:-1]) == [200] * (len(bodies) - 1)
    assert await deploy.state(run_id) == before


async def _has_live(app: App, run_id: str, live: str) -> bool:
    events = await app.events(run_id)
    return any(e["type"] == "step.progress" and e["data"].get("liveStatus") == live for e in events)


async def _settled(app: App, run_id: str) -> bool:
    """No task of the run is left in the queue (its last transactions have committed)."""
    def count(tx: Tx) -> int:
        row = tx.one("SELECT COUNT(*) AS n FROM tasks WHERE run_id = :id AND kind <> 'notify'", {"id": run_id})
        return int(row.n) if row else 0

    return await app.store.tx(count) == 0


async def _answers(url: str, bodies: list[dict[str, Any]]) -> list[Any]:
    out = []
    async with httpx.AsyncClient(timeout=10) as client:
        for body in bodies:
            response = await client.post(url, content=json.dumps(body), headers={"Content-Type": "application/json"})
            out.append(response.json())
    return out


async def test_the_comfydeploy_example_job_runs_against_the_fake_backend(db_url: str, tmp_path: Path) -> None:
    """examples/comfydeploy as shipped (only the API's address and key differ), without a public
    URL: no webhook is asked for and the engine polls the run."""
    fake = await FakeComfyDeploy().start()
    app = App(
        Settings(
            home=tmp_path / "home",
            database_url=db_url,
            definitions=[ROOT / "examples" / "comfydeploy"],
            comfydeploy_api_key=fake.api_key,
            comfydeploy_base_url=fake.api_url,
            media_allow_private_urls=True,  # the fake's storage is on loopback
        )
    )
    worker = app.make_worker(4, idle_poll_seconds=0.1)
    task = asyncio.create_task(worker.run())
    try:
        assert app.definition_problems == []
        run_id = await app.submit("cd_poster", {"prompt": "a lighthouse", "caption": "Dawn"}, account_id="acme")

        async def queued() -> bool:
            return len(fake.runs) == 1

        await until(queued)
        body = fake.calls[0][2]
        # the tool's contract is kept inside the job: its unmapped seed is drawn, as for a direct run
        seed = body["inputs"].pop("input_seed")
        assert isinstance(seed, int) and 0 <= seed <= SEED_MAX
        assert body["inputs"] == {"input_text": "a lighthouse, poster, high detail"}
        assert body["gpu"] == "A10G" and "webhook" not in body
        fake.finish(next(iter(fake.runs)))

        async def done() -> bool:
            await app.store.tx(make_polls_due, time.time())
            return (await app.get_run(run_id))["status"] != "running"

        await until(done)
        run = await app.get_run(run_id)
    finally:
        worker.stop()
        await task
        await app.aclose()
        await fake.stop()
    assert run["status"] == "completed", run["error"]
    assert set(run["finalOutputs"]) == {"poster", "thumbnail", "original"}
    generate = next(g for g in run["generations"] if g["stepId"] == "generate")
    assert generate["costUsd"] is not None and float(generate["costUsd"]) > 0  # 12.5 GPU seconds on an A10G
