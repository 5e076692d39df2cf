"""A failure the API billed for shows its cost: a usage-priced tool whose answer reports the usage
(a refusal that still spent tokens, a failed run that still used machine time) records that cost
on the generation and the run, as a static price does when the API took the call. A failure is
never charged to credits (docs/credits.md); the run's ``costUsd`` is the operator's book. On both
stores, against an API on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from tests.helpers.loopback import serve_asgi
from tests.helpers.worker import work_until_done

from toolweave.app import App
from toolweave.model.definitions import ToolDefinition
from toolweave.settings import Settings

TOKENS = {"rateSource": "usage", "usage": [
    {"path": "usage.prompt_tokens", "price": 1, "per": 1000},
    {"path": "usage.completion_tokens", "price": 2, "per": 1000},
]}


@pytest.fixture
async def app(tmp_path: Path, db_url: str) -> AsyncIterator[App]:
    instance = App(Settings(home=tmp_path / "home", database_url=db_url))
    yield instance
    await instance.aclose()


@pytest.fixture
async def api() -> AsyncIterator[tuple[str, list[str]]]:
    calls: list[str] = []

    async def chat(request: Request) -> JSONResponse:
        calls.append(request.url.path)
        return JSONResponse({"refusal": "I can't help with that.", "text": None,
                             "usage": {"prompt_tokens": 1000, "completion_tokens": 500}})

    async def start(request: Request) -> JSONResponse:
        calls.append(request.url.path)
        return JSONResponse({"id": "r-1", "status": "starting"}, status_code=201)

    async def status(request: Request) -> JSONResponse:
        calls.append(request.url.path)
        return JSONResponse({"id": "r-1", "status": "failed", "error": "CUDA out of memory",
                             "metrics": {"predict_time": 12.5}})

    routes = [Route("/chat", chat, methods=["POST"]), Route("/runs", start, methods=["POST"]),
              Route("/runs/r-1", status, methods=["GET"])]
    async with serve_asgi(Starlette(routes=routes)) as base_url:
        yield base_url, calls


async def _run(app: App, tool: dict[str, Any]) -> dict[str, Any]:
    assert app.registry.register(ToolDefinition.model_validate(tool)) == []
    run_id = await app.submit(tool["toolId"], {"prompt": "hello"}, account_id="acme")
    return await work_until_done(app, run_id, timeout=30)


async def test_a_refusal_that_spent_tokens_records_their_cost(app: App, api: tuple[str, list[str]]) -> None:
    base_url, calls = api
    run = await _run(app, {
        "toolId": "chat", "service": "http", "costingModel": TOKENS,
        "inputSchema": {"prompt": {"type": "text", "required": True}},
        "outputSchema": {"text": {"type": "text"}},
        "metadata": {"http": {"request": {"url": f"{base_url}/chat", "json": {"q": "{{ prompt }}"}},
                              "refusals": [{"path": "refusal"}]}},
    })
    assert calls == ["/chat"]
    assert run["status"] == "failed"
    [gen] = run["generations"]
    assert gen["error"]["code"] == "moderation", gen["error"]
    assert gen["costUsd"] == "2" and run["costUsd"] == "2"  # 1000 × 1/1000 + 500 × 2/1000


async def test_a_failed_run_that_used_machine_time_records_its_cost(app: App, api: tuple[str, list[str]]) -> None:
    base_url, calls = api
    run = await _run(app, {
        "toolId": "render", "service": "http",
        "costingModel": {"rateSource": "usage", "usage": [{"path": "metrics.predict_time", "price": 0.001, "per": 1}]},
        "inputSchema": {"prompt": {"type": "text", "required": True}},
        "outputSchema": {"text": {"type": "text"}},
        "metadata": {"http": {
            "request": {"url": f"{base_url}/runs", "json": {"q": "{{ prompt }}"}},
            "async": {"id": "id", "firstPollSeconds": 0.05,
                      "poll": {"method": "GET", "url": f"{base_url}/runs/{{{{ id }}}}"},
                      "status": {"path": "status", "running": ["starting"], "succeeded": ["succeeded"],
                                 "failed": ["failed"], "error": "error"}},
        }},
    })
    assert calls == ["/runs", "/runs/r-1"]
    assert run["status"] == "failed"
    [gen] = run["generations"]
    assert "CUDA out of memory" in gen["error"]["message"], gen["error"]
    assert gen["costUsd"] == "0.0125" and run["costUsd"] == "0.0125"
