"""Backend webhooks that cannot be completed: a ComfyUI Deploy success whose output cannot be
downloaded (a storage URL that answers 404) is answered with a clear 503 problem that asks for it
again — never a 500 — and changes nothing: the poll or a later webhook finishes the run once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import yaml
from tests.fakes.comfydeploy_server import DEPLOY_TOOL, DeployCase, FakeComfyDeploy
from tests.integration.test_api import running_server


async def test_a_success_whose_output_cannot_be_downloaded_is_a_503_and_changes_nothing(
        db_url: str, tmp_path: Path, deploy: FakeComfyDeploy) -> None:
    defs = tmp_path / "defs"
    defs.mkdir()
    (defs / "tool.yaml").write_text(yaml.safe_dump(DEPLOY_TOOL))
    deploy.script(DeployCase.endless())
    async with running_server(tmp_path / "home", database_url=db_url, definitions=[defs],
                              comfydeploy_api_key=deploy.api_key, comfydeploy_base_url=deploy.api_url,
                              media_allow_private_urls=True) as server:
        app = server.app
        run_id = await app.submit("cd-invert", {}, account_id="alice")
        for _ in range(300):
            run = await app.get_run(run_id, "alice")
            gens = run.get("generations") or []
            if gens and gens[0].get("platformSpecificRunId"):
                break
            await asyncio.sleep(0.1)
        gen = gens[0]
        platform_run = gen["platformSpecificRunId"]
        body: dict[str, Any] = {"event_type": "run.updated", "status": "success", "progress": 1.0,
                                "run_id": platform_run, "outputs": [{
                                    "id": "o1", "run_id": platform_run, "output_id": "output_images",
                                    "data": {"images": [{"url": f"{deploy.base_url}/files/{platform_run}/gone.png",
                                                         "filename": "gone.png", "type": "output"}]},
                                    "node_meta": {"node_id": "9", "node_class": "ComfyDeployOutputImage"}}]}
        token = app.engine.webhook_token("comfydeploy", gen["generationId"])
        async with httpx.AsyncClient(base_url=server.url) as http:
            answer = await http.post(f"/webhooks/comfydeploy/{gen['generationId']}?token={token}", json=body)
        assert answer.status_code == 503, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert "gone.png" in answer.json()["detail"] and answer.headers.get("retry-after")
        run = await app.get_run(run_id, "alice")
        assert run["status"] == "running" and run["generations"][0]["status"] != "completed"
        await app.cancel(run_id, "alice")
