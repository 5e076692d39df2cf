"""A poll that keeps failing retryably is tried again until the generation's time is up; the
timeout then says what the last poll met, not only that time ran out. Here ComfyUI Deploy reports
success while its output's storage keeps answering 404. On both stores."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from starlette.requests import Request
from starlette.responses import Response
from tests.fakes.comfydeploy_server import DeployCase, FakeComfyDeploy
from tests.helpers.worker import work_until_done

from toolweave.app import App
from toolweave.settings import Settings

TOOL = {
    "toolId": "cd-draw",
    "service": "comfydeploy",
    "inputSchema": {"prompt": {"type": "text", "default": "x"}},
    "outputSchema": {"image": {"type": "image"}},
    "timeoutSeconds": 7,  # the first poll comes after 5 s, the next one or two before the end
    "metadata": {"deploymentId": "d-1"},
}


class _MissingOutputs(FakeComfyDeploy):
    """Reports success with an output whose storage answers 404 (an expired or never-written key)."""

    async def file(self, request: Request) -> Response:
        return Response(b"<Error><Code>NoSuchKey</Code></Error>", status_code=404, media_type="application/xml")


@pytest.fixture
async def deploy() -> AsyncIterator[FakeComfyDeploy]:
    fake = await _MissingOutputs().start()
    fake.script(DeployCase([("success", 1.0, None)]))
    yield fake
    await fake.stop()


async def test_a_timeout_after_failing_polls_names_the_last_failure(
    tmp_path: Path, db_url: str, deploy: FakeComfyDeploy
) -> None:
    defs = tmp_path / "defs"
    defs.mkdir()
    (defs / "tool.yaml").write_text(yaml.safe_dump(TOOL))
    app = App(Settings(home=tmp_path / "home", database_url=db_url, definitions=[defs],
                       comfydeploy_api_key=deploy.api_key, comfydeploy_base_url=deploy.api_url,
                       media_allow_private_urls=True))  # the fake's storage is on loopback
    try:
        run_id = await app.submit("cd-draw", {}, account_id="acme")
        run = await work_until_done(app, run_id, timeout=30)
    finally:
        await app.aclose()
    assert run["status"] == "failed", run["status"]
    [gen] = run["generations"]
    assert gen["status"] == "timeout", gen
    for error in (run["error"], gen["error"]):
        message = error["message"]
        assert "last poll:" in message and "could not be downloaded (HTTP 404)" in message, error
        assert error["code"] == "timeout", error
