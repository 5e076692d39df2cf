"""Edges of the HTTP API that answered outside its problem format (both stores, the real API on
loopback): a malformed or unsatisfiable ``Range`` on an artifact, and a map step's items asked of a
step that is not a map step."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from tests.helpers.accounts import png, run_with_status, upload
from tests.integration.test_api import JOBS, Server, assert_problem, running_server

INC_ALL = {
    "jobId": "inc_all",
    "inputSchema": {"values": {"type": "json", "required": True}},
    "steps": [
        {"stepId": "first", "toolId": "test.instant", "inputMappings": [{"value": 0, "targetInputName": "value"}]},
        {"stepId": "inc", "toolId": "test.instant", "dependencies": ["first"],
         "map": {"over": {"sourceJobInput": "values"}},
         "inputMappings": [{"sourceItem": True, "targetInputName": "value"}]},
    ],
}


@pytest.fixture
async def server(tmp_path: Path, db_url: str) -> AsyncIterator[Server]:
    folder = tmp_path / "defs"
    folder.mkdir()
    (folder / "inc_all.yaml").write_text(yaml.safe_dump(INC_ALL))
    async with running_server(tmp_path / "home", database_url=db_url, definitions=[JOBS, folder]) as srv:
        yield srv


async def test_a_bad_range_on_an_artifact_is_a_problem_document(server: Server) -> None:
    async with server.client(server.alice) as alice:
        data = png()
        sha = (await upload(alice, data, "a.png"))["sha256"]
        url = f"/api/v1/artifacts/{sha}"
        for bad in ("bytes=abc", "pages=0-1", "bytes=5-2", "bytes=", "0-1", "bytes=-"):
            problem = assert_problem(await alice.get(url, headers={"Range": bad}), 400)
            assert [e["field"] for e in problem["errors"]] == ["header.Range"], (bad, problem)
        response = await alice.get(url, headers={"Range": f"bytes={len(data) + 10}-"})
        assert_problem(response, 416)
        assert response.headers["Content-Range"] == f"bytes */{len(data)}"
        # a good range, and none, are served as before
        part = await alice.get(url, headers={"Range": "bytes=0-3"})
        assert part.status_code == 206 and part.content == data[:4]
        assert (await alice.get(url)).content == data
        # another account's artifact is a 404 whatever the range
        async with server.client(server.bob) as bob:
            assert_problem(await bob.get(url, headers={"Range": "bytes=abc"}), 404)


async def test_the_items_of_a_step_that_is_not_a_map_step_are_a_422_naming_it(server: Server) -> None:
    async with server.client(server.alice) as alice:
        run_id = (await alice.post("/api/v1/runs", json={"jobId": "inc_all", "inputs": {"values": [1, 2, 3]}})).json()["jobRunId"]
        await run_with_status(alice, run_id, "completed")
        problem = assert_problem(await alice.get(f"/api/v1/runs/{run_id}/steps/first/items"), 422)
        assert problem["errors"][0]["field"] == "path.step_id" and "not a map step" in problem["detail"]
        page = (await alice.get(f"/api/v1/runs/{run_id}/steps/inc/items")).json()
        assert [i["index"] for i in page["items"]] == [0, 1, 2]
        assert_problem(await alice.get(f"/api/v1/runs/{run_id}/steps/nope/items"), 404)
        async with server.client(server.bob) as bob:  # another account learns nothing about the steps
            assert_problem(await bob.get(f"/api/v1/runs/{run_id}/steps/first/items"), 404)
