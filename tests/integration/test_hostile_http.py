"""A hosted API that did the work (HTTP 200) and then answered something we cannot read: the call
was most likely paid for, so a retry would pay again. The step's retry policy does not repeat it
unless the tool says its request is harmless to repeat (``idempotent: true``), and the failed
generation records what the call probably cost. On both stores, against the strict fake OpenAI."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.fakes.openai_api import FakeOpenAI
from tests.helpers.worker import work_until_done

from toolweave.app import App
from toolweave.model.definitions import ToolDefinition
from toolweave.settings import Settings

PRESETS = Path(__file__).resolve().parents[2] / "examples" / "http"
TOKEN = "sk-test-openai"
BROKEN = "<html><body>502 Bad Gateway</body></html>"  # what a proxy says after the API answered


@pytest.fixture
async def openai() -> AsyncIterator[FakeOpenAI]:
    fake = await FakeOpenAI(TOKEN).start()
    yield fake
    await fake.stop()


@pytest.fixture
async def app(tmp_path: Path, db_url: str, openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[App]:
    monkeypatch.setenv("OPENAI_API_KEY", TOKEN)
    instance = App(Settings(home=tmp_path / "home", database_url=db_url, media_allow_private_urls=True,
                            services={"openai": {"base_url": f"{openai.base_url}/v1"}}))
    yield instance
    await instance.aclose()


def _dalle(idempotent: bool) -> ToolDefinition:
    data = yaml.safe_load((PRESETS / "openai-dall-e-3.yaml").read_text())
    data["metadata"]["http"]["idempotent"] = idempotent
    return ToolDefinition.model_validate(data)


async def _retrying_job(app: App, idempotent: bool) -> str:
    assert app.registry.register(_dalle(idempotent)) == []
    _, problems = await app.register_job({
        "jobId": "draw-once", "inputSchema": {"prompt": {"type": "text", "required": True}},
        "outputSchema": {"image": {"type": "image", "sourceStepId": "draw", "sourceOutputName": "image"}},
        "steps": [{"stepId": "draw", "toolId": "openai.dall-e-3",
                   "errorHandling": {"strategy": "retry", "maxAttempts": 3, "backoffSeconds": 0.01},
                   "inputMappings": [{"sourceJobInput": "prompt", "targetInputName": "prompt"}]}],
    })
    assert problems == []
    return await app.submit("draw-once", {"prompt": "a red fox"}, account_id="acme")


def _calls(openai: FakeOpenAI) -> list[Any]:
    return [r for r in openai.requests if r.path == "/v1/images/generations"]


async def test_a_sync_answer_we_cannot_read_is_not_paid_for_again(app: App, openai: FakeOpenAI) -> None:
    openai.fail_next(200, BROKEN, path="/v1/images/generations")
    run = await work_until_done(app, await _retrying_job(app, idempotent=False), timeout=30)
    assert run["status"] == "failed", run["status"]
    assert len(_calls(openai)) == 1  # the retry policy did not call the paid API again
    [gen] = run["generations"]
    error = gen["error"]
    assert error["code"] == "bad_response" and error["retryable"] is False, error
    assert "probably paid for" in error["message"] and "idempotent" in error["message"], error["message"]
    assert error["details"]["httpStatus"] == 200 and error["details"]["maybePaid"] is True
    assert gen["costUsd"] == "0.04"  # what the call most likely cost, on the run's books
    assert run["costUsd"] == "0.04"


async def test_an_idempotent_tool_is_retried_and_each_call_is_on_the_books(app: App, openai: FakeOpenAI) -> None:
    openai.fail_next(200, BROKEN, path="/v1/images/generations")
    run = await work_until_done(app, await _retrying_job(app, idempotent=True), timeout=30)
    assert run["status"] == "completed", run["error"]
    assert len(_calls(openai)) == 2
    first, second = run["generations"]
    assert first["error"]["retryable"] is True and first["error"]["details"]["maybePaid"] is True
    assert (first["costUsd"], second["costUsd"]) == ("0.04", "0.04")
    assert run["costUsd"] == "0.08"


def _progress_tool() -> ToolDefinition:
    return ToolDefinition.model_validate({
        "toolId": "progressing", "service": "http", "outputSchema": {"text": {"type": "text"}},
        "metadata": {"http": {
            "request": {"url": "https://api.example.com/runs"},
            "async": {"id": "id", "poll": {"method": "GET", "url": "https://api.example.com/runs/{{ id }}"},
                      "status": {"path": "status", "running": ["running"], "succeeded": ["done"],
                                 "progress": "progress"}},
        }},
    })


@pytest.mark.parametrize(("reported", "stored"), [
    (0, 0.0), (0.25, 0.25), (1, 1.0), (40, 0.4), (100, 1.0),  # a fraction, else a percentage
    (250, None), (-3, None), (float("inf"), None), (float("nan"), None), (1e300, None),  # neither: no progress
])
async def test_a_progress_is_a_fraction_or_a_percentage_and_nothing_else(
    tmp_path: Path, reported: float, stored: float | None
) -> None:
    """A status (here a webhook's; a poll's reads the same) reporting progress 250 is not 2.5:
    a progress that is neither 0..1 nor 0..100 is none at all, and the generation keeps its own."""
    from tests.helpers.host import LocalHost, generation_context

    from toolweave.services.catalog import ServiceCatalog
    from toolweave.services.http import HttpService

    host = LocalHost(tmp_path)
    try:
        service = ServiceCatalog(Settings(home=tmp_path), env={}, plugins=[]).build(host)["http"]
        assert isinstance(service, HttpService)
        gen = generation_context(_progress_tool(), platform_run_id="r-1")
        body = json.dumps({"id": "r-1", "status": "running", "progress": reported}).encode()
        update = service.parse_webhook_for(gen, {}, body).update
    finally:
        await host.aclose()
    assert update.status.value == "processing" and update.progress == stored, update


async def test_an_answer_that_breaks_off_after_its_200_is_not_paid_for_again(tmp_path: Path) -> None:
    """The API did the work and began its answer (HTTP 200), then the connection dropped: as with
    an answer we cannot read, sending again would pay again."""
    from collections.abc import AsyncIterator as Chunks

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response, StreamingResponse
    from starlette.routing import Route
    from tests.fakes.server import LoopbackServer
    from tests.helpers.host import LocalHost, generation_context

    from toolweave.model.status import GenerationStatus
    from toolweave.services.catalog import ServiceCatalog
    from toolweave.services.http import HttpService

    calls: list[str] = []

    async def answer(request: Request) -> Response:
        calls.append(request.url.path)

        async def body() -> Chunks[bytes]:
            yield b'{"text": "the work was do'
            raise ConnectionResetError("the proxy went away")
        return StreamingResponse(body(), media_type="application/json")

    server = LoopbackServer(Starlette(routes=[Route("/run", answer, methods=["POST"])]))
    await server.start()
    host = LocalHost(tmp_path)
    try:
        service = ServiceCatalog(Settings(home=tmp_path), env={}, plugins=[]).build(host)["http"]
        assert isinstance(service, HttpService)
        tool = ToolDefinition.model_validate({
            "toolId": "writer", "service": "http", "outputSchema": {"text": {"type": "text"}},
            "metadata": {"http": {"request": {"url": f"{server.base_url}/run", "json": {"q": 1}}}},
        })
        update = (await service.submit(generation_context(tool))).update
    finally:
        await host.aclose()
        await server.stop()
    assert calls == ["/run"]
    assert update is not None and update.status is GenerationStatus.FAILED and update.error is not None
    assert update.error.retryable is False and "probably paid for" in update.error.message, update.error
    assert update.error.details == {"httpStatus": 200, "maybePaid": True}
