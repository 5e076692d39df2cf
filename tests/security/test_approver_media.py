"""An approver sees what it is asked to choose, and nothing else of the run (both stores, the real
API on loopback): the artifacts a question shows are readable by the accounts it names approvers
through ``GET /artifacts/{sha}?question=`` (and the web pages' thumbnails), before and after the
answer; the run's input, its other outputs and steps stay 404 for them, and everything stays 404
for an account the question does not name."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from tests.helpers.accounts import run_with_status, web_login
from tests.integration.test_api import JOBS, Server, assert_problem, running_server

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
async def server(tmp_path: Path, db_url: str) -> AsyncIterator[Server]:
    job = yaml.safe_load((EXAMPLES / "ask" / "pick_best.yaml").read_text())
    job.update(jobId="pick_reviewed", displayName="Pick reviewed")
    job["steps"][2]["ask"]["approvers"] = ["carol"]
    folder = tmp_path / "defs"
    folder.mkdir()
    (folder / "pick_reviewed.yaml").write_text(yaml.safe_dump(job))
    async with running_server(tmp_path / "home", database_url=db_url, definitions=[JOBS, folder]) as srv:
        await srv.app.ensure_account("carol")
        yield srv


async def test_an_approver_reads_the_candidates_of_its_question_and_nothing_else(server: Server) -> None:
    carol_key = (await server.app.create_key("carol", "tests"))[1]
    sample = (EXAMPLES / "assets" / "sample.png").read_bytes()
    async with server.client(server.alice) as alice, server.client(server.bob) as bob, \
            server.client(carol_key) as carol:
        response = await alice.post("/api/v1/runs", data={"jobId": "pick_reviewed"},
                                    files={"image": ("s.png", sample, "image/png")})
        run_id = response.json()["jobRunId"]
        run = await run_with_status(alice, run_id, "waiting_input")
        (listed,) = (await carol.get("/api/v1/questions")).json()["items"]
        qid, candidates = listed["questionId"], listed["candidates"]
        shas = [c["sha256"] for c in candidates]
        assert len(set(shas)) == 4
        small = next(s for s in run["stepStatuses"] if s["stepId"] == "small")["outputs"]["image"]["sha256"]
        others = [run["jobInputs"]["image"]["sha256"], small]
        assert not set(others) & set(shas)

        # the approver reads each candidate through its question, as the run's account knows it
        for sha in shas:
            response = await carol.get(f"/api/v1/artifacts/{sha}", params={"question": qid})
            assert response.status_code == 200, response.text
            assert response.headers["content-type"] == "image/png" and response.content[:4] == b"\x89PNG"
            assert_problem(await carol.get(f"/api/v1/artifacts/{sha}"), 404)  # not held: only through the question
        # nothing else of the run: its input, another step's output; not the run, its steps or its archive
        for sha in others:
            assert_problem(await carol.get(f"/api/v1/artifacts/{sha}", params={"question": qid}), 404)
        assert_problem(await carol.get(f"/api/v1/runs/{run_id}"), 404)
        assert_problem(await carol.get(f"/api/v1/runs/{run_id}/outputs.zip"), 404)
        assert_problem(await carol.get(f"/api/v1/runs/{run_id}/steps/variants/items"), 404)
        # another account, with or without the question's id; an unknown question
        for sha in shas:
            assert_problem(await bob.get(f"/api/v1/artifacts/{sha}", params={"question": qid}), 404)
            assert_problem(await carol.get(f"/api/v1/artifacts/{sha}", params={"question": "q_nope"}), 404)
        # an approver's own artifacts stay its own, whatever question it names
        assert (await alice.get(f"/api/v1/artifacts/{shas[0]}", params={"question": qid})).status_code == 200

        # the web page an approver answers from shows the thumbnails, and they load for it
        async with server.client(follow_redirects=False) as web:
            await web_login(web, carol_key)
            page = (await web.get("/questions")).text
            for sha in shas:
                url = f"/api/v1/artifacts/{sha}?question={qid}"
                assert url in page
                assert (await web.get(url)).status_code == 200

        answered = await carol.post(f"/api/v1/runs/{run_id}/steps/pick/answer", json={"chosen": 2})
        assert answered.status_code == 200, answered.text
        run = await run_with_status(alice, run_id, "completed")
        upscaled = run["finalOutputs"]["upscaled"]["sha256"]
        # answered: the question still reads for its approver, and so does what it showed
        assert (await carol.get(f"/api/v1/runs/{run_id}/steps/pick/question")).json()["answeredBy"] == "carol"
        for sha in shas:
            assert (await carol.get(f"/api/v1/artifacts/{sha}", params={"question": qid})).status_code == 200
        # the output made from the chosen candidate is not shown by the question
        assert_problem(await carol.get(f"/api/v1/artifacts/{upscaled}", params={"question": qid}), 404)
        assert_problem(await bob.get(f"/api/v1/artifacts/{shas[2]}", params={"question": qid}), 404)
