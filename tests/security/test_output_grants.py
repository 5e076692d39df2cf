"""A tool's outputs grant its run's account only the media the tool made.

An account reaches an artifact only through its uploads, its runs' outputs or a grant: a hash
alone is not enough (``docs/security.md``; inputs are checked at submit and again before each
step runs). A run's outputs were walked for anything shaped like an artifact reference, and every
one found was granted to the run's account. A hosted API whose answer the user steers (a language
model asked to answer with JSON) can answer another account's artifact reference in a ``json``
output, built from a hash given as plain text: the account then held that artifact and could
download it. Media the tool made (a media output: the adapter stored its bytes) is granted, as
before; a reference inside a non-media output grants nothing, nor does a run's final output (also
one of a media type that picks the reference out of a JSON output). Real http service, real
loopback backend, both stores."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from tests.fakes.apis import png
from tests.helpers.loopback import serve_asgi

from toolweave.app import App, NotFound
from toolweave.model.definitions import JobDefinition, ToolDefinition
from toolweave.settings import Settings
from toolweave.store import accounts as accounts_q

ANSWER = ToolDefinition.model_validate({
    # an API that answers JSON the user's text steers (as a language model does)
    "toolId": "echo.answer",
    "service": "echo",
    "inputSchema": {"q": {"type": "text", "required": True}},
    "outputSchema": {"answer": {"type": "json"}, "picture": {"type": "image"}},
    "metadata": {"http": {"request": {"path": "/answer", "json": {"q": {"$input": "q"}}},
                          "outputs": {"answer": {"path": "answer"}, "picture": {"path": "picture"}}}},
})


async def _answer(request: Request) -> JSONResponse:
    body = await request.json()
    picture = "data:image/png;base64," + __import__("base64").b64encode(png((1, 2, 3), (8, 8))).decode()
    return JSONResponse({
        "answer": {"found": {"kind": "artifact", "sha256": body["q"], "mimeType": "image/png", "size": 10}},
        "picture": picture,
    })


@pytest.fixture
async def app(db_url: str, tmp_path: Path) -> AsyncIterator[App]:
    async with serve_asgi(Starlette(routes=[Route("/answer", _answer, methods=["POST"])])) as base_url:
        instance = App(Settings(home=tmp_path / "home", database_url=db_url,
                                services={"echo": {"kind": "http", "base_url": base_url}}))
        assert instance.registry.register(ANSWER) == []
        assert instance.registry.register(JobDefinition.model_validate({
            "jobId": "ask-then-keep",
            "outputSchema": {"answer": {"type": "json", "sourceStepId": "a", "sourceOutputName": "answer"}},
            "steps": [{"stepId": "a", "toolId": "echo.answer",
                       "inputMappings": [{"sourceJobInput": "q", "targetInputName": "q"}]}],
            "inputSchema": {"q": {"type": "text", "required": True}},
        })) == []
        assert instance.registry.register(JobDefinition.model_validate({
            # a job output of a media type may pick a value out of a JSON output (``path``)
            "jobId": "ask-then-show",
            "outputSchema": {"pic": {"type": "image", "sourceStepId": "a", "sourceOutputName": "answer",
                                     "path": "found"}},
            "steps": [{"stepId": "a", "toolId": "echo.answer",
                       "inputMappings": [{"sourceJobInput": "q", "targetInputName": "q"}]}],
            "inputSchema": {"q": {"type": "text", "required": True}},
        })) == []
        yield instance
        await instance.aclose()


def _held(app: App, sha: str, account: str) -> Any:
    return app.store.read_sync(lambda tx: accounts_q.artifact_owned(tx, sha, account))


@pytest.mark.parametrize("target", ["echo.answer", "ask-then-keep", "ask-then-show"])
async def test_a_reference_in_a_json_output_grants_nothing(app: App, target: str) -> None:
    secret = await app.put_media(png((9, 9, 9), (16, 16)), "victim", filename="private.png")
    sha = secret["sha256"]
    run_id = await app.submit(target, {"q": sha}, account_id="mallory")
    await app.make_worker(2).run_until_idle(30)
    run = await app.get_run(run_id, "mallory")
    assert run["status"] == "completed", run.get("error")
    step = run["stepStatuses"][0]["outputs"]
    assert step["answer"]["found"]["sha256"] == sha  # the answer is kept as given
    assert _held(app, sha, "mallory") is None  # but it grants nothing
    with pytest.raises(NotFound):
        await app.artifact(sha, "mallory")
    assert _held(app, step["picture"]["sha256"], "mallory") is not None  # the media the tool made is its run's
    assert _held(app, sha, "victim") is not None
