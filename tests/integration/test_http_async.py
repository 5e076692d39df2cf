"""Hosted APIs through the engine, on both stores: Replicate predictions and fal.ai's queue, by
webhook (through the real HTTP API's webhook route) and by polling; Hugging Face Inference
synchronously; and the example job across services (examples/http/illustrate.yaml: an OpenAI chat
→ Replicate → builtin upscale and watermark → an OpenAI vision caption). The fakes are strict
(tests/fakes/*_api.py)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.fakes.fal_api import FakeFal
from tests.fakes.hf_api import FakeHuggingFace
from tests.fakes.openai_api import FakeOpenAI
from tests.fakes.replicate_api import FakeReplicate
from tests.helpers.invariants import assert_no_stranded_runs
from tests.helpers.loopback import serve_asgi
from tests.helpers.worker import lease_dispatch, sent_at, submit_context, work_until_done

from toolweave.api.server import create_app
from toolweave.app import App
from toolweave.engine.worker import Worker
from toolweave.services.base import NotHeld
from toolweave.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PRESETS = ROOT / "examples" / "http"


@dataclass
class World:
    app: App
    replicate: FakeReplicate
    fal: FakeFal
    hf: FakeHuggingFace
    openai: FakeOpenAI
    base_url: str | None
    worker: Worker


async def until(check: Any, timeout: float = 20.0) -> Any:
    """The first truthy value of ``check()`` (a plain or async callable), polled."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("the condition never held")
        await asyncio.sleep(0.05)


Fakes = tuple[FakeReplicate, FakeFal, FakeHuggingFace, FakeOpenAI]


@pytest.fixture
async def fakes() -> AsyncIterator[Fakes]:
    started: Fakes = (FakeReplicate(), FakeFal(), FakeHuggingFace(), FakeOpenAI("sk-test-openai"))
    for fake in started:
        await fake.start()
    yield started
    for fake in started:
        await fake.stop()


def make_app(tmp_path: Path, db_url: str, fakes: Fakes) -> App:
    replicate, fal, hf, openai = fakes
    return App(Settings(
        home=tmp_path / "home", database_url=db_url, definitions=[PRESETS],
        media_allow_private_urls=True,  # the fakes serve their files on loopback
        services={"replicate": {"base_url": f"{replicate.base_url}/v1"}, "fal": {"base_url": fal.base_url},
                  "huggingface": {"base_url": hf.base_url}, "openai": {"base_url": f"{openai.base_url}/v1"}},
    ))


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_test_replicate")
    monkeypatch.setenv("FAL_KEY", "fal-key-id:fal-key-secret")
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-openai")


async def _world(tmp_path: Path, db_url: str, fakes: Any, *, webhooks: bool) -> AsyncIterator[World]:
    app = make_app(tmp_path, db_url, fakes)
    assert app.definition_problems == []
    worker = app.make_worker(4, idle_poll_seconds=0.05)
    task: asyncio.Task[None] | None = None
    try:
        if webhooks:
            async with serve_asgi(create_app(app, run_worker=False)) as base_url:
                app.settings.public_base_url = base_url
                task = asyncio.create_task(worker.run())
                yield World(app, *fakes, base_url, worker)
                worker.stop()
                await task
        else:
            task = asyncio.create_task(worker.run())
            yield World(app, *fakes, None, worker)
            worker.stop()
            await task
    finally:
        if task is not None and not task.done():
            worker.stop()
            await task
        await app.aclose()


@pytest.fixture
async def hooked(tmp_path: Path, db_url: str, fakes: Any, credentials: None) -> AsyncIterator[World]:
    async for world in _world(tmp_path, db_url, fakes, webhooks=True):
        yield world


@pytest.fixture
async def polled(tmp_path: Path, db_url: str, fakes: Any, credentials: None) -> AsyncIterator[World]:
    async for world in _world(tmp_path, db_url, fakes, webhooks=False):
        yield world


async def wait_run(app: App, run_id: str) -> dict[str, Any]:
    return await app.wait(run_id, timeout=30)


# --- Replicate -----------------------------------------------------------------------------------


async def test_replicate_by_webhook(hooked: World) -> None:
    app, replicate = hooked.app, hooked.replicate
    run_id = await app.submit("replicate.flux-schnell", {"prompt": "a lighthouse", "seed": 7}, account_id="acme")
    prediction = await until(lambda: _one(replicate.predictions))
    created = replicate.requests[0]
    assert (created.method, created.path) == ("POST", "/v1/models/black-forest-labs/flux-schnell/predictions")
    assert created.headers["authorization"] == "Bearer r8_test_replicate"
    body = created.json
    assert body["input"] == {"prompt": "a lighthouse", "aspect_ratio": "1:1", "output_format": "png", "seed": 7,
                             "num_outputs": 1}
    assert body["webhook_events_filter"] == ["start", "completed"]
    gen_id = (await app.get_run(run_id))["generations"][0]["generationId"]
    assert body["webhook"].startswith(f"{hooked.base_url}/webhooks/replicate/{gen_id}?token=")
    assert await replicate.play(prediction.id) == [200, 200]  # start, completed
    run = await wait_run(app, run_id)
    assert run["status"] == "completed", run["error"]
    image = run["finalOutputs"]["image"]
    assert image["mimeType"] == "image/png" and image["width"] == 48
    generation = run["generations"][0]
    assert generation["platformSpecificRunId"] == prediction.id and generation["costUsd"] == "0.003"
    assert run["costUsd"] == "0.003"
    # No status poll was needed: the webhooks carried it all (the first poll is a fallback).
    assert [r.path for r in replicate.requests if r.method == "GET" and r.path.startswith("/v1/")] == []
    # A repeated webhook changes nothing.
    url = body["webhook"]
    async with httpx.AsyncClient() as client:
        again = await client.post(url, json=replicate.prediction_body(prediction))
    assert again.status_code == 200
    assert (await app.get_run(run_id))["costUsd"] == "0.003"


async def test_replicate_by_polling_when_there_is_no_public_url(polled: World) -> None:
    app, replicate = polled.app, polled.replicate
    run_id = await app.submit("replicate.flux-schnell", {"prompt": "a lighthouse"}, account_id="acme")
    run = await wait_run(app, run_id)
    assert run["status"] == "completed", run["error"]
    created = replicate.requests[0].json
    assert "webhook" not in created and "webhook_events_filter" not in created
    prediction = _one(replicate.predictions)
    polls = [r.path for r in replicate.requests if r.method == "GET" and r.path.startswith("/v1/")]
    assert polls and set(polls) == {f"/v1/predictions/{prediction.id}"}


async def test_replicate_refusal_is_moderation(polled: World) -> None:
    run_id = await polled.app.submit("replicate.flux-schnell", {"prompt": "NSFW please"}, account_id="acme")
    run = await wait_run(polled.app, run_id)
    assert run["status"] == "failed"
    error = run["generations"][0]["error"]
    assert error["code"] == "moderation" and error["retryable"] is False
    assert "NSFW content detected" in error["message"]
    assert run["generations"][0]["costUsd"] is None


async def test_replicate_garbage_and_forged_webhooks_change_nothing(hooked: World) -> None:
    app, replicate = hooked.app, hooked.replicate
    run_id = await app.submit("replicate.flux-schnell", {"prompt": "a lighthouse"}, account_id="acme")
    prediction = await until(lambda: _one(replicate.predictions))
    url = replicate.requests[0].json["webhook"]
    forged = url.split("?token=")[0] + "?token=forged"
    async with httpx.AsyncClient() as client:
        codes = [
            (await client.post(forged, json=replicate.prediction_body(prediction))).status_code,
            (await client.post(url, content=b"{not json")).status_code,
            (await client.post(url, json={"id": prediction.id, "status": "exploded"})).status_code,
            (await client.post(url, json={**replicate.prediction_body(prediction), "id": "someone-else"})).status_code,
        ]
    assert codes[0] == 404 and all(400 <= c < 500 for c in codes[1:]), codes
    assert (await app.get_run(run_id))["status"] == "running"
    await replicate.play(prediction.id)
    assert (await wait_run(app, run_id))["status"] == "completed"


async def test_replicate_cancel_reaches_the_backend(polled: World) -> None:
    app, replicate = polled.app, polled.replicate
    run_id = await app.submit("replicate.flux-schnell", {"prompt": "slow"}, account_id="acme")
    prediction = await until(lambda: _one(replicate.predictions))
    prediction.states = ["starting", "processing", "processing", "processing", "processing", "succeeded"] * 10
    await app.cancel(run_id, "acme")
    run = await wait_run(app, run_id)
    assert run["status"] == "cancelled"
    await until(lambda: any(r.path == f"/v1/predictions/{prediction.id}/cancel" for r in replicate.requests))


def short_leases(app: App) -> App:
    app.settings.lease_seconds = 0.5
    app.engine.lease_seconds = 0.5
    return app


def creates(replicate: FakeReplicate) -> list[Any]:
    """The requests that created a prediction (what Replicate charges for)."""
    return [r for r in replicate.requests if r.method == "POST" and r.path.endswith("/predictions")]


async def test_a_crash_between_sending_and_recording_is_not_paid_twice(
    tmp_path: Path, db_url: str, fakes: Any, credentials: None
) -> None:
    """The worker dies after Replicate accepted the prediction but before its id was recorded: the
    next worker finds the generation recovering (its dispatch was marked as sent) and fails it,
    naming the unknown outcome, instead of creating a second prediction."""
    replicate = fakes[0]
    app = short_leases(make_app(tmp_path, db_url, fakes))
    try:
        run_id = await app.submit("replicate.flux-schnell", {"prompt": "once"}, account_id="acme")
        work = await lease_dispatch(app)
        await app.services["replicate"].submit(submit_context(app, work, "replicate"))  # Replicate has it now...
        assert sent_at(app, work.generation_id) is not None
        await asyncio.sleep(0.6)  # ...and the worker is gone
        worker = app.make_worker(2, idle_poll_seconds=0.05)
        runner = asyncio.create_task(worker.run())
        try:
            run = await wait_run(app, run_id)
        finally:
            worker.stop()
            await runner
        assert run["status"] == "failed"
        assert run["generations"][0]["error"]["code"] == "unknown_outcome"
        assert len(replicate.predictions) == 1 and len(creates(replicate)) == 1
        assert_no_stranded_runs(app.store)
    finally:
        await app.aclose()


async def test_a_crash_after_the_mark_leaves_the_outcome_unknown_even_if_nothing_went_out(
    tmp_path: Path, db_url: str, fakes: Any, credentials: None
) -> None:
    """The mark is written before the request goes out: a worker that dies between the two looks,
    to the next one, like one that sent. It fails ``unknown_outcome`` as before, sending nothing."""
    replicate = fakes[0]
    app = short_leases(make_app(tmp_path, db_url, fakes))
    try:
        run_id = await app.submit("replicate.flux-schnell", {"prompt": "once"}, account_id="acme")
        work = await lease_dispatch(app)
        mark = submit_context(app, work, "replicate").on_sending
        assert mark is not None and await mark() is True
        await asyncio.sleep(0.6)  # the worker dies before its request goes out
        run = await work_until_done(app, run_id, idle_poll_seconds=0.05)
        assert run["status"] == "failed" and run["generations"][0]["error"]["code"] == "unknown_outcome"
        assert creates(replicate) == []
        assert_no_stranded_runs(app.store)
    finally:
        await app.aclose()


async def test_a_crash_before_anything_was_sent_sends_once_and_completes(
    tmp_path: Path, db_url: str, fakes: Any, credentials: None
) -> None:
    """The worker dies after the transaction that leased it the dispatch and before it sent
    anything (no mark): its lease runs out, and the next worker's claim is a second attempt of the
    task, but not ``recovering``: it creates the prediction once and the step completes."""
    replicate = fakes[0]
    app = short_leases(make_app(tmp_path, db_url, fakes))
    try:
        run_id = await app.submit("replicate.flux-schnell", {"prompt": "once"}, account_id="acme")
        work = await lease_dispatch(app)  # ...and the worker is gone before it sent anything
        await asyncio.sleep(0.6)
        run = await work_until_done(app, run_id, idle_poll_seconds=0.05)
        assert run["status"] == "completed", run["error"]
        assert len(run["generations"]) == 1 and run["generations"][0]["generationId"] == work.generation_id
        assert len(creates(replicate)) == 1 and len(replicate.predictions) == 1
        assert sent_at(app, work.generation_id) is not None
        assert_no_stranded_runs(app.store)
    finally:
        await app.aclose()


async def test_a_mark_the_store_failed_to_write_hands_the_dispatch_back_unsent(
    tmp_path: Path, db_url: str, fakes: Any, credentials: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mark's transaction fails (the store, not the service): nothing is sent and the step is
    not failed; the worker hands the dispatch back, and it is sent once when tried again."""
    replicate = fakes[0]
    app = short_leases(make_app(tmp_path, db_url, fakes))
    real = app.engine.mark_sending_tx
    failures: list[str] = []

    def flaky(tx: Any, *args: Any) -> bool:
        if not failures:
            failures.append("once")
            raise RuntimeError("the store went away")
        return real(tx, *args)

    monkeypatch.setattr(app.engine, "mark_sending_tx", flaky)
    try:
        run_id = await app.submit("replicate.flux-schnell", {"prompt": "once"}, account_id="acme")
        run = await work_until_done(app, run_id, idle_poll_seconds=0.05)
        assert failures == ["once"]
        assert run["status"] == "completed", run["error"]
        assert len(run["generations"]) == 1 and len(creates(replicate)) == 1
    finally:
        await app.aclose()


async def test_a_worker_whose_dispatch_was_taken_over_cannot_mark_and_sends_nothing(
    tmp_path: Path, db_url: str, fakes: Any, credentials: None
) -> None:
    """A worker stalls past its lease; another takes the dispatch over. The stalled one's mark is
    refused (its claim no longer holds the task): its submit raises ``NotHeld`` before sending,
    and its worker records nothing. The dispatch is the other worker's, which sends it once."""
    replicate = fakes[0]
    app = short_leases(make_app(tmp_path, db_url, fakes))
    try:
        run_id = await app.submit("replicate.flux-schnell", {"prompt": "once"}, account_id="acme")
        stalled = await lease_dispatch(app, "stalled-worker")
        await asyncio.sleep(0.6)
        taken = await lease_dispatch(app, "other-worker")
        assert taken.generation_id == stalled.generation_id and taken.claim != stalled.claim
        with pytest.raises(NotHeld):
            await app.services["replicate"].submit(submit_context(app, stalled, "replicate"))
        worker = app.make_worker(1)
        assert await worker._dispatch_one(stalled) == []  # what a real worker does: nothing recorded
        assert creates(replicate) == [] and sent_at(app, stalled.generation_id) is None
        assert (await app.get_run(run_id))["generations"][0]["status"] == "pending"
        context = submit_context(app, taken, "replicate")
        assert not context.recovering  # a second lease, but nothing was sent
        submission = await app.services["replicate"].submit(context)
        assert submission.platform_run_id == _one(replicate.predictions).id
        assert len(creates(replicate)) == 1 and sent_at(app, taken.generation_id) is not None
    finally:
        await app.aclose()


async def test_an_output_url_on_a_private_address_is_not_fetched(
    tmp_path: Path, fakes: Any, credentials: None
) -> None:
    """The API's answer names where to download the output; a URL on this machine's own network is
    refused like a user's would be (the fake serves on loopback; media_allow_private_urls is off)."""
    app = make_app(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", fakes)
    app.settings.media_allow_private_urls = False
    try:
        run_id = await app.submit("replicate.flux-schnell", {"prompt": "a lighthouse"}, account_id="acme")
        await app.make_worker(2, idle_poll_seconds=0.05).run_until_idle(30)
        run = await app.get_run(run_id)
    finally:
        await app.aclose()
    assert run["status"] == "failed"
    error = run["generations"][0]["error"]
    assert error["code"] == "download_refused" and error["retryable"] is False
    assert "private or local address" in error["message"]
    assert fakes[0].downloads == 0


async def test_a_key_never_reaches_a_stored_row_or_a_log_line(
    polled: World, caplog: pytest.LogCaptureFixture
) -> None:
    """Even when the provider echoes the key back in its error, and when a run succeeds: no run,
    step, generation, event or log line holds it."""
    import logging

    from toolweave.store.db import Tx

    app, replicate = polled.app, polled.replicate
    key = "r8_test_replicate"
    caplog.set_level(logging.DEBUG)
    replicate.fail_next(401, {"title": "Unauthenticated", "detail": f"Invalid token {key}", "status": 401})
    failed = await wait_run(app, await app.submit("replicate.flux-schnell", {"prompt": "a"}, account_id="acme"))
    done = await wait_run(app, await app.submit("replicate.flux-schnell", {"prompt": "b"}, account_id="acme"))
    assert failed["status"] == "failed" and done["status"] == "completed"
    assert "***" in failed["error"]["message"] and failed["generations"][0]["error"]["code"] == "unauthorized"

    def everything(tx: Tx) -> str:
        tables = ("runs", "step_runs", "generations", "events", "tasks", "notifications")
        return "\n".join(repr(list(tx.all(f"SELECT * FROM {table}"))) for table in tables)

    stored = await app.store.read(everything)
    assert "Invalid token" in stored  # the error was recorded...
    assert key not in stored  # ...without the key
    assert key not in caplog.text


# --- fal ------------------------------------------------------------------------------------------


async def test_fal_by_webhook_reads_the_payload(hooked: World) -> None:
    app, fal = hooked.app, hooked.fal
    run_id = await app.submit("fal.flux-schnell", {"prompt": "a lemon", "seed": 3}, account_id="acme")
    queued = await until(lambda: _one(fal.queued))
    submit = fal.requests[0]
    assert (submit.method, submit.path) == ("POST", "/fal-ai/flux/schnell")
    assert submit.headers["authorization"] == "Key fal-key-id:fal-key-secret"
    assert submit.query["fal_webhook"].startswith(f"{hooked.base_url}/webhooks/fal/")
    assert submit.json == {"prompt": "a lemon", "image_size": "landscape_4_3", "num_inference_steps": 4,
                           "seed": 3, "num_images": 1, "enable_safety_checker": True}
    assert await fal.play(queued.id) == 200
    run = await wait_run(app, run_id)
    assert run["status"] == "completed", run["error"]
    assert run["finalOutputs"]["image"]["mimeType"] == "image/jpeg"
    # The payload carried the outputs: the result endpoint was not needed.
    assert not [r for r in fal.requests if r.path == f"/fal-ai/flux/requests/{queued.id}"]


async def test_fal_by_polling_fetches_the_result(polled: World) -> None:
    app, fal = polled.app, polled.fal
    run_id = await app.submit("fal.flux-schnell", {"prompt": "a lemon"}, account_id="acme")
    run = await wait_run(app, run_id)
    assert run["status"] == "completed", run["error"]
    queued = _one(fal.queued)
    paths = [r.path for r in fal.requests]
    assert paths[0] == "/fal-ai/flux/schnell" and "fal_webhook" not in fal.requests[0].query
    assert f"/fal-ai/flux/requests/{queued.id}/status" in paths
    assert paths.count(f"/fal-ai/flux/requests/{queued.id}") == 1
    assert run["generations"][0]["costUsd"] == "0.003"


async def test_fal_safety_checker_is_a_refusal(polled: World) -> None:
    run_id = await polled.app.submit("fal.flux-schnell", {"prompt": "NSFW"}, account_id="acme")
    run = await wait_run(polled.app, run_id)
    assert run["status"] == "failed"
    error = run["generations"][0]["error"]
    assert error["code"] == "moderation" and "has_nsfw_concepts[0]" in error["message"]


async def test_fal_error_webhook_fails_the_generation(hooked: World) -> None:
    app, fal = hooked.app, hooked.fal
    run_id = await app.submit("fal.flux-schnell", {"prompt": "a lemon"}, account_id="acme")
    queued = await until(lambda: _one(fal.queued))
    queued.body = {**queued.body, "num_images": 9}  # the model refuses it when it runs
    assert await fal.play(queued.id) == 200
    run = await wait_run(app, run_id)
    assert run["status"] == "failed"
    assert "Invalid status code: 422" in run["generations"][0]["error"]["message"]


# --- Hugging Face -------------------------------------------------------------------------------------


async def test_hf_text_to_image_answers_the_image_itself(polled: World) -> None:
    run_id = await polled.app.submit("hf.flux-schnell", {"prompt": "violet", "width": 512, "height": 256},
                                     account_id="acme")
    run = await wait_run(polled.app, run_id)
    assert run["status"] == "completed", run["error"]
    image = run["finalOutputs"]["image"]
    assert (image["mimeType"], image["width"], image["height"]) == ("image/jpeg", 32, 16)
    sent = polled.hf.requests[0]
    assert sent.json["parameters"]["width"] == 512 and sent.headers["authorization"] == "Bearer hf_test_token"


async def test_hf_loading_model_is_retried_after_its_estimate(polled: World) -> None:
    app, hf = polled.app, polled.hf
    _, problems = await app.register_job({
        "jobId": "patient", "inputSchema": {"prompt": {"type": "text", "required": True}},
        "outputSchema": {"image": {"type": "image", "sourceStepId": "draw", "sourceOutputName": "image"}},
        "steps": [{"stepId": "draw", "toolId": "hf.flux-schnell",
                   "errorHandling": {"strategy": "retry", "maxAttempts": 3, "backoffSeconds": 0.01},
                   "inputMappings": [{"sourceJobInput": "prompt", "targetInputName": "prompt"},
                                     {"value": 256, "targetInputName": "width"},
                                     {"value": 256, "targetInputName": "height"}]}],
    })
    assert problems == []
    hf.loading = 1
    started = time.monotonic()
    run_id = await app.submit("patient", {"prompt": "violet"}, account_id="acme")
    run = await wait_run(app, run_id)
    assert run["status"] == "completed", run["error"]
    first, second = run["generations"]
    assert first["error"]["code"] == "server_error" and first["error"]["retryable"] is True
    assert "is currently loading" in first["error"]["message"]
    # The 503 said estimated_time 3 s: the retry waited for it, not for the 10 ms backoff.
    assert time.monotonic() - started >= 3.0
    assert second["status"] == "completed"


async def test_hf_caption_sends_the_image_bytes(polled: World) -> None:
    from tests.fakes.apis import png

    app, hf = polled.app, polled.hf
    image = await app.put_media(png((1, 1, 1), (30, 20)), "acme", filename="x.png")
    run_id = await app.submit("hf.blip-caption", {"image": image}, account_id="acme")
    run = await wait_run(app, run_id)
    assert run["status"] == "completed", run["error"]
    assert run["finalOutputs"]["caption"] == "a picture of 30x20 pixels"
    sent = hf.requests[0]
    assert sent.headers["content-type"] == "image/png" and sent.content == app.artifacts.read(image["sha256"])


# --- the example job across services ----------------------------------------------------------------


async def test_the_example_job_across_services(hooked: World) -> None:
    """examples/http/illustrate.yaml end to end: chat prompt enhancement (OpenAI) → image generation
    (Replicate, completed by its webhook through the real API route) → builtin upscale and
    watermark → a vision caption (OpenAI) of the signed image."""
    app, replicate, openai = hooked.app, hooked.replicate, hooked.openai
    run_id = await app.submit("illustrate", {"idea": "a lighthouse in a storm", "signature": "tw"}, account_id="acme")

    async def prediction() -> Any:
        return _one(replicate.predictions)

    created = await until(prediction)
    assert await replicate.play(created.id) == [200, 200]
    run = await wait_run(app, run_id)
    assert run["status"] == "completed", run["error"]
    steps = {s["stepId"]: s for s in run["stepStatuses"]}
    assert [s["status"] for s in steps.values()] == ["succeeded"] * 5
    # 1. the chat model's prompt went to Replicate
    prompt = run["finalOutputs"]["prompt"]
    assert prompt.startswith("a lighthouse in a storm, golden hour")
    assert replicate.requests[0].json["input"]["prompt"] == prompt
    assert replicate.requests[0].json["input"]["aspect_ratio"] == "3:2"
    # 2. Replicate's 48×32 image, enlarged twice and signed in-process
    drawn = steps["draw"]["outputs"]["image"]
    signed = run["finalOutputs"]["image"]
    assert (drawn["width"], drawn["height"]) == (48, 32)
    assert (signed["width"], signed["height"]) == (96, 64) and signed["sha256"] != drawn["sha256"]
    # 3. the vision model saw the signed image itself (sent inline) and described it
    vision = openai.requests[-1].json["messages"][0]["content"][1]["image_url"]["url"]
    import base64

    assert base64.b64decode(vision.split(",", 1)[1]) == app.artifacts.read(signed["sha256"])
    assert "96 by 64 pixels" in run["finalOutputs"]["caption"]
    # Cost: the two chat calls by their token usage, the image at Replicate's price.
    costs = {g["stepId"]: g["costUsd"] for g in run["generations"]}
    assert costs["draw"] == "0.003" and costs["enlarge"] in ("0", None)
    assert Decimal(costs["enhance"]) > 0 and Decimal(costs["caption"]) > 0
    assert Decimal(run["costUsd"]) == sum(Decimal(c) for c in costs.values() if c)


async def test_the_example_job_rides_out_a_rate_limit(polled: World) -> None:
    """The image step meets a 429 with Retry-After: 1; its retry waits that long and the job completes."""
    app, replicate = polled.app, polled.replicate
    replicate.fail_next(429, {"title": "Request was throttled", "detail": "Request was throttled. Expected "
                                                                          "available in 1 second.", "status": 429},
                        headers={"Retry-After": "1"}, path="/v1/models/black-forest-labs/flux-schnell/predictions")
    run_id = await app.submit("illustrate", {"idea": "a fox"}, account_id="acme")
    run = await wait_run(app, run_id)
    assert run["status"] == "completed", run["error"]
    draws = [g for g in run["generations"] if g["stepId"] == "draw"]
    assert [g["status"] for g in draws] == ["failed", "completed"]
    assert draws[0]["error"]["code"] == "rate_limited" and draws[0]["error"]["retry_after_seconds"] == 1.0


# --- helpers --------------------------------------------------------------------------------------------


def _one(items: dict[str, Any]) -> Any:
    values = list(items.values())
    assert len(values) <= 1, values
    return values[0] if values else None
