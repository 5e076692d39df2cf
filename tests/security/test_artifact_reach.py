"""Issue 10, attack 1, through the features that came after the first fix: bulk submission, map
steps, hosted HTTP APIs and cached steps. Bob (the attacker) knows the sha256 of Alice's file;
every way in is refused before anything is stored or sent, and a cached result never crosses
from one account to another."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.fakes.openai_api import FakeOpenAI
from tests.helpers.accounts import png, runs_of, upload
from tests.integration.test_api import ADMIN_KEY, JOBS, Server, assert_problem, running_server

ROOT = Path(__file__).resolve().parents[2]


async def _files(server: Server) -> tuple[dict[str, Any], dict[str, Any]]:
    """Alice's private file and one of Bob's own."""
    async with server.client(server.alice) as alice:
        theirs = await upload(alice, png((10, 200, 10)), "alice-private.png")
    async with server.client(server.bob) as bob:
        mine = await upload(bob, png((1, 2, 3)), "bob.png")
    return theirs, mine


async def _register(server: Server, *definitions: dict[str, Any]) -> None:
    async with server.client(ADMIN_KEY) as admin:
        for definition in definitions:
            response = await admin.post("/api/v1/jobs", json=definition)
            assert response.status_code == 201, response.text


async def test_the_batch_endpoint_refuses_the_item_that_mentions_it(server: Server) -> None:
    theirs, mine = await _files(server)
    short = {"kind": "artifact", "sha256": theirs["sha256"]}
    async with server.client(server.bob) as bob:
        before = len(await runs_of(bob))
        response = await bob.post("/api/v1/runs/batch", json={"toolId": "image.grid", "items": [
            {"inputs": {"images": [mine]}},
            {"inputs": {"images": [mine, short]}},
            {"inputs": {"images": [{"deep": [f"artifact:{theirs['sha256']}"]}]}},
            {"inputs": {"images": f'[{{"kind": "artifact", "sha256": "{theirs["sha256"]}"}}]'}},
        ]})
        assert response.status_code == 200, response.text
        batch = response.json()
        assert (batch["created"], batch["refused"]) == (1, 3)
        fields = [[e["field"] for e in item["error"]["errors"]] for item in batch["items"][1:]]
        assert fields == [["items[1].inputs.images[1]"], ["items[2].inputs.images[0].deep[0]"],
                          ["items[3].inputs.images[0]"]]
        assert all("not one of yours" in str(item["error"]) for item in batch["items"][1:])
        assert len(await runs_of(bob)) == before + 1
        assert_problem(await bob.get(f"/api/v1/artifacts/{theirs['sha256']}"), 404)
        # the batch's callback URL is named as itself, not as an input of each item
        response = await bob.post("/api/v1/runs/batch", json={
            "toolId": "test.instant", "callbackUrl": "http://0177.0.0.1/", "items": [{"inputs": {}}]})
        assert [e["field"] for e in response.json()["items"][0]["error"]["errors"]] == ["callbackUrl"]


MAP_RESIZE = {
    "jobId": "resize_each", "inputSchema": {"photos": {"type": "json", "required": True}},
    "outputSchema": {"small": {"type": "json", "sourceStepId": "each", "sourceOutputName": "image"}},
    "steps": [{
        "stepId": "each", "toolId": "image.resize", "map": {"over": {"sourceJobInput": "photos"}},
        "inputMappings": [{"sourceItem": True, "targetInputName": "image"}, {"value": 8, "targetInputName": "width"}],
    }],
}
MAP_FETCH_BY_ID = {
    "jobId": "fetch_each", "inputSchema": {"ids": {"type": "json", "required": True}},
    "outputSchema": {"files": {"type": "json", "sourceStepId": "each", "sourceOutputName": "file"}},
    "steps": [{
        "stepId": "each", "toolId": "media.fetch", "map": {"over": {"sourceJobInput": "ids"}, "minSuccess": 1},
        "inputMappings": [{"template": "artifact:{{ item }}", "targetInputName": "source"}],
    }],
}


async def test_a_map_step_cannot_reach_another_accounts_artifact(server: Server) -> None:
    """Items given as artifacts are checked at submit; items that a template turns into artifact
    references are refused one by one when they run, before the tool reads anything."""
    theirs, mine = await _files(server)
    await _register(server, MAP_RESIZE, MAP_FETCH_BY_ID)
    async with server.client(server.bob) as bob:
        before = len(await runs_of(bob))
        for photos, field in (
            ([mine, {"kind": "artifact", "sha256": theirs["sha256"]}], "inputs.photos[1]"),
            ([mine, theirs], "inputs.photos[1]"),
            ([f"artifact:{theirs['sha256']}"], "inputs.photos[0]"),
        ):
            problem = assert_problem(await bob.post("/api/v1/runs", json={"jobId": "resize_each", "inputs": {"photos": photos}}), 422)
            assert [e["field"] for e in problem["errors"]] == [field], problem
        assert len(await runs_of(bob)) == before
        # his own item runs, Alice's fails alone, refused before media.fetch read it
        response = await bob.post("/api/v1/runs", json={"jobId": "fetch_each", "inputs": {"ids": [mine["sha256"], theirs["sha256"]]}})
        assert response.status_code == 201, response.text
        run_id = response.json()["jobRunId"]
        run = await server.app.wait(run_id, 60)
        assert run["status"] == "partially_completed", run
        assert run["finalOutputs"]["files"][0]["sha256"] == mine["sha256"]
        assert run["finalOutputs"]["files"][1] is None
        items = (await bob.get(f"/api/v1/runs/{run_id}/steps/each/items")).json()["items"]
        assert [i["status"] for i in items] == ["succeeded", "failed"]
        assert items[1]["error"]["code"] == "forbidden_artifact"
        assert_problem(await bob.get(f"/api/v1/artifacts/{theirs['sha256']}"), 404)
    async with server.client(server.alice) as alice:  # the same job, Alice's own file: it works
        response = await alice.post("/api/v1/runs", json={"jobId": "fetch_each", "inputs": {"ids": [theirs["sha256"]]}})
        assert (await server.app.wait(response.json()["jobRunId"], 60))["status"] == "completed"


@pytest.fixture
async def with_openai(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Server, FakeOpenAI]]:
    """The API with the OpenAI presets, against the strict fake."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-openai")
    fake = FakeOpenAI("sk-test-openai")
    await fake.start()
    try:
        async with running_server(
            tmp_path / "home", database_url=db_url, definitions=[JOBS, ROOT / "examples" / "http"],
            services={"openai": {"base_url": f"{fake.base_url}/v1"}},
        ) as server:
            yield server, fake
    finally:
        await fake.stop()


async def test_a_hosted_api_is_never_sent_another_accounts_artifact(with_openai: tuple[Server, FakeOpenAI]) -> None:
    server, fake = with_openai
    theirs, mine = await _files(server)
    async with server.client(server.bob) as bob:
        before = len(await runs_of(bob))
        for image in ({"kind": "artifact", "sha256": theirs["sha256"]}, theirs):
            problem = assert_problem(await bob.post("/api/v1/runs", json={
                "toolId": "openai.vision.caption", "inputs": {"image": image}}), 422)
            assert [e["field"] for e in problem["errors"]] == ["inputs.image"]
        response = await bob.post("/api/v1/runs/batch", json={"toolId": "openai.gpt-image-1.edit", "items": [
            {"inputs": {"image": {"kind": "artifact", "sha256": theirs["sha256"]}, "prompt": "x"}},
            {"inputs": {"image": mine, "mask": theirs, "prompt": "x"}},
        ]})
        assert response.json()["refused"] == 2, response.text
        assert [e["field"] for e in response.json()["items"][1]["error"]["errors"]] == ["items[1].inputs.mask"]
        assert len(await runs_of(bob)) == before
        assert fake.requests == []  # nothing was sent
        # his own file goes out as usual (the fake sees it)
        response = await bob.post("/api/v1/runs", json={"toolId": "openai.vision.caption", "inputs": {"image": mine}})
        assert response.status_code == 201, response.text
        assert (await server.app.wait(response.json()["jobRunId"], 60))["status"] == "completed"
        assert [r.path for r in fake.requests] == ["/v1/chat/completions"]


CACHED = {
    "jobId": "cached_small", "inputSchema": {"photo": {"type": "image", "required": True}},
    "outputSchema": {"small": {"type": "image", "sourceStepId": "small", "sourceOutputName": "image"}},
    "steps": [{"stepId": "small", "toolId": "image.resize", "cache": True,
               "inputMappings": [{"sourceJobInput": "photo", "targetInputName": "image"},
                                 {"value": 8, "targetInputName": "width"}]}],
}


async def test_a_cached_result_never_crosses_to_another_account(server: Server) -> None:
    """The cache key holds artifacts by content hash, so Bob uploading the bytes of Alice's file
    makes the same key: he still gets no hit on her result (results are kept per account), and a
    reference to her file is refused as anywhere else."""
    await _register(server, CACHED)
    data = png((90, 90, 90))

    async def run(client: Any, photo: Any) -> dict[str, Any]:
        response = await client.post("/api/v1/runs", json={"jobId": "cached_small", "inputs": {"photo": photo}})
        assert response.status_code == 201, response.text
        done = await server.app.wait(response.json()["jobRunId"], 60)
        assert done["status"] == "completed", done
        return done

    async with server.client(server.alice) as alice:
        theirs = await upload(alice, data, "alice-private.png")
        first = await run(alice, theirs)
        again = await run(alice, {"kind": "artifact", "sha256": theirs["sha256"]})
        assert again["generations"][0]["cacheHit"]  # the cache works (else this test means nothing)
        assert again["generations"][0]["cachedFrom"] == first["generations"][0]["generationId"]
    async with server.client(server.bob) as bob:
        problem = assert_problem(await bob.post("/api/v1/runs", json={
            "jobId": "cached_small", "inputs": {"photo": {"kind": "artifact", "sha256": theirs["sha256"]}}}), 422)
        assert [e["field"] for e in problem["errors"]] == ["inputs.photo"]
        mine = await upload(bob, data, "bob.png")
        assert mine["sha256"] == theirs["sha256"]
        own = await run(bob, mine)
        assert not own["generations"][0]["cacheHit"] and own["generations"][0]["cachedFrom"] is None
        hit = await run(bob, mine)  # his own result, from now on
        assert hit["generations"][0]["cachedFrom"] == own["generations"][0]["generationId"]
        assert "alice" not in str(own) + str(hit)


async def test_another_accounts_run_cannot_be_forked_or_retried(server: Server) -> None:
    theirs, _mine = await _files(server)
    async with server.client(server.alice) as alice:
        response = await alice.post("/api/v1/runs", json={"toolId": "image.resize", "inputs": {"image": theirs, "width": 8}})
        run_id = response.json()["jobRunId"]
        await server.app.wait(run_id, 60)
    async with server.client(server.bob) as bob:
        before = len(await runs_of(bob))
        for body in ({}, {"inputs": {"width": 9}}, {"fromStep": "run"}):
            assert_problem(await bob.post(f"/api/v1/runs/{run_id}/retry", json=body), 404)
        assert len(await runs_of(bob)) == before


async def test_the_web_form_s_run_again_surfaces_reach_nothing_of_another_account(server: Server) -> None:
    """"Run again" sends an earlier input file back by reference (``<input>__artifact``): a
    reference to Alice's file is refused like any other, her run cannot prefill Bob's form, and
    the run page's actions on her run (again from a step, retry, cancel) are not Bob's."""
    from tests.helpers.accounts import web_login

    theirs, mine = await _files(server)
    async with server.client(server.alice) as alice:
        response = await alice.post("/api/v1/runs", json={"toolId": "image.resize", "inputs": {"image": theirs, "width": 8}})
        alice_run = response.json()["jobRunId"]
        await server.app.wait(alice_run, 60)
    async with server.client(follow_redirects=False) as web, server.client(server.bob) as bob:
        await web_login(web, server.bob)
        before = len(await runs_of(bob))
        page = await web.get(f"/new/image.resize?again={alice_run}")
        assert page.status_code == 404 and theirs["sha256"] not in page.text
        form = (await web.get("/new/image.resize")).text
        csrf = form.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        refused = await web.post("/new/image.resize", data={"csrf": csrf, "image__artifact": theirs["sha256"], "width": "8"})
        assert refused.status_code == 422 and "not one of yours" in refused.text
        for action, data in (("again", {"step": "image.resize"}), ("retry", {}), ("cancel", {})):
            response = await web.post(f"/runs/{alice_run}/{action}", data={"csrf": csrf, **data})
            assert response.status_code == 404, (action, response.status_code)
        assert len(await runs_of(bob)) == before
        # his own file by reference: accepted (the refusal above is about whose file it is)
        accepted = await web.post("/new/image.resize", data={"csrf": csrf, "image__artifact": mine["sha256"], "width": "8"})
        assert accepted.status_code == 303, accepted.text
        assert len(await runs_of(bob)) == before + 1
