"""Running things again over HTTP: definition versions (list, submit a chosen one, pinned on the
run), forks (retry with fromStep or changed inputs), and the web page's "Run again" and "Run again
from here"."""

from __future__ import annotations

import copy
from typing import Any

from tests.helpers.accounts import web_login
from tests.integration.test_api import ADMIN_KEY, SAMPLE, Server, assert_problem, server, submit_postcard

__all__ = ["server"]  # the fixture

POSTCARD_V2_CAPTION = "made by version 2"


def _postcard_v2(v1: dict[str, Any]) -> dict[str, Any]:
    """Version 2 of the postcard job: the same graph with another default caption."""
    v2 = copy.deepcopy(v1)
    v2["version"] = "2"
    next(p for p in v2["inputSchema"] if p["name"] == "caption")["default"] = POSTCARD_V2_CAPTION
    return v2


async def _register_v2(server: Server) -> None:
    async with server.client(server.alice) as c:
        v1 = (await c.get("/api/v1/jobs/postcard")).json()["definition"]
    async with server.client(ADMIN_KEY) as admin:
        response = await admin.post("/api/v1/jobs", json=_postcard_v2(v1))
        assert response.status_code == 201, response.text


async def test_versions_are_listed_and_a_chosen_one_runs_and_is_pinned(server: Server) -> None:
    await _register_v2(server)
    async with server.client(server.alice) as c:
        versions = (await c.get("/api/v1/jobs/postcard/versions")).json()
        assert [(v["version"], v["latest"]) for v in versions] == [("1", False), ("2", True)]
        assert versions[0]["steps"] == 3
        old = (await c.get("/api/v1/jobs/postcard", params={"version": "1"})).json()
        caption = next(p for p in old["definition"]["inputSchema"] if p["name"] == "caption")
        assert old["version"] == "1" and caption["default"] != POSTCARD_V2_CAPTION
        assert (await c.get("/api/v1/jobs/postcard")).json()["version"] == "2"

        latest = await submit_postcard(c)
        pinned = await submit_postcard(c, version="1")
        assert latest["version"] == "2" and pinned["version"] == "1"
        done_latest = await server.app.wait(latest["jobRunId"], 30)
        done_pinned = await server.app.wait(pinned["jobRunId"], 30)
        assert done_latest["jobInputs"]["caption"] == POSTCARD_V2_CAPTION
        assert done_pinned["jobInputs"]["caption"] != POSTCARD_V2_CAPTION
        listed = (await c.get("/api/v1/runs")).json()["items"]
        assert {r["jobRunId"]: r["version"] for r in listed} == {latest["jobRunId"]: "2", pinned["jobRunId"]: "1"}

        photo = "data:image/png;base64," + __import__("base64").b64encode(SAMPLE.read_bytes()).decode()
        by_json = await c.post("/api/v1/runs", json={"jobId": "postcard", "version": "1", "inputs": {"photo": photo}})
        assert by_json.status_code == 201 and by_json.json()["version"] == "1"


async def test_an_unknown_version_is_a_404_naming_the_registered_ones(server: Server) -> None:
    await _register_v2(server)
    async with server.client(server.alice) as c:
        body = assert_problem(await c.post("/api/v1/runs", json={"jobId": "postcard", "version": "7", "inputs": {}}), 404)
        assert "'7'" in body["detail"] and "1, 2" in body["detail"]
        body = assert_problem(await c.get("/api/v1/jobs/postcard", params={"version": "7"}), 404)
        assert "1, 2" in body["detail"]
        assert_problem(await c.get("/api/v1/jobs/nothing/versions"), 404)
        assert [v["version"] for v in (await c.get("/api/v1/tools/image.resize/versions")).json()] == ["1"]
        body = assert_problem(await c.post("/api/v1/runs", json={"jobId": "postcard", "version": "", "inputs": {}}), 422)
        assert body["errors"][0]["field"] == "version"
        assert (await c.get("/api/v1/runs")).json()["items"] == []  # nothing was created


async def test_the_web_form_offers_versions_and_run_again_prefills_the_inputs(server: Server) -> None:
    await _register_v2(server)
    async with server.client(follow_redirects=False) as c:
        await web_login(c, server.alice)
        page = (await c.get("/new/postcard")).text
        assert 'id="version-pick"' in page and '<option value="1"' in page and "(latest)" in page
        assert 'name="version" value="2"' in page
        csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        files = {"photo": ("sample.png", SAMPLE.read_bytes(), "image/png")}
        response = await c.post(
            "/new/postcard", data={"csrf": csrf, "version": "1", "caption": "first", "width": "200"}, files=files
        )
        assert response.status_code == 303, response.text
        run_id = response.headers["location"].rsplit("/", 1)[1]
        run = await server.app.wait(run_id, 30)
        assert run["version"] == "1" and run["jobInputs"]["caption"] == "first"

        run_page = (await c.get(f"/runs/{run_id}")).text
        assert f'href="/new/postcard?again={run_id}"' in run_page
        again = (await c.get(f"/new/postcard?again={run_id}")).text
        assert 'id="run-again-note"' in again and 'name="version" value="1"' in again
        assert 'value="first"' in again and 'value="200"' in again
        sha = run["jobInputs"]["photo"]["sha256"]
        assert f'name="photo__artifact" value="{sha}"' in again
        # sent back as it is: the same photo (by reference), the same version, one changed input
        response = await c.post(
            "/new/postcard", data={"csrf": csrf, "version": "1", "photo__artifact": sha, "caption": "second", "width": "200"}
        )
        assert response.status_code == 303, response.text
        second = await server.app.wait(response.headers["location"].rsplit("/", 1)[1], 30)
        assert second["status"] == "completed" and second["version"] == "1"
        assert second["jobInputs"]["photo"]["sha256"] == sha and second["jobInputs"]["caption"] == "second"

    async with server.client(follow_redirects=False) as bob:
        await web_login(bob, server.bob)
        page = (await bob.get("/new/postcard")).text
        csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        # another account cannot prefill from alice's run, nor send her file back as its own
        assert (await bob.get(f"/new/postcard?again={run_id}")).status_code == 404
        stolen = await bob.post("/new/postcard", data={"csrf": csrf, "photo__artifact": sha, "width": "200"})
        assert stolen.status_code == 422 and "is not one of yours" in stolen.text


async def test_fork_over_http_from_a_step_or_with_changed_inputs(server: Server) -> None:
    async with server.client(server.alice) as c:
        origin = await submit_postcard(c, caption="first")
        done = await server.app.wait(origin["jobRunId"], 30)
        assert done["status"] == "completed"
        # a completed run is not retried in place; the problem says how to run it again
        body = assert_problem(await c.post(f"/api/v1/runs/{origin['jobRunId']}/retry"), 409)
        assert "step to run again from" in body["detail"]

        response = await c.post(f"/api/v1/runs/{origin['jobRunId']}/retry", json={"fromStep": "stamp"})
        assert response.status_code == 201, response.text
        fork = response.json()
        assert response.headers["location"] == f"/api/v1/runs/{fork['jobRunId']}"
        assert fork["forkedFromRunId"] == origin["jobRunId"] and fork["forkedFromStep"] == "stamp"
        finished = await server.app.wait(fork["jobRunId"], 30)
        reused = {s["stepId"]: s["reusedFromRunId"] for s in finished["stepStatuses"]}
        assert reused == {"resize": origin["jobRunId"], "stamp": None, "thumbnail": origin["jobRunId"]}
        assert [g["stepId"] for g in finished["generations"]] == ["stamp"]

        changed = await c.post(f"/api/v1/runs/{origin['jobRunId']}/retry", json={"inputs": {"caption": "second"}})
        assert changed.status_code == 201
        second = await server.app.wait(changed.json()["jobRunId"], 30)
        assert second["jobInputs"]["caption"] == "second" and [g["stepId"] for g in second["generations"]] == ["stamp"]

        body = assert_problem(await c.post(f"/api/v1/runs/{origin['jobRunId']}/retry", json={"fromStep": "nope"}), 422)
        assert body["errors"][0]["field"] == "fromStep" and "resize, stamp, thumbnail" in body["detail"]
        body = assert_problem(
            await c.post(f"/api/v1/runs/{origin['jobRunId']}/retry", json={"inputs": {"width": "wide"}}), 422
        )
        assert body["errors"][0]["field"] == "inputs.width"
        assert_problem(await c.post(f"/api/v1/runs/{origin['jobRunId']}/retry", json={"fromStep": "stamp", "x": 1}), 422)

    async with server.client(server.bob) as bob:
        assert_problem(await bob.post(f"/api/v1/runs/{origin['jobRunId']}/retry", json={"fromStep": "stamp"}), 404)
        assert_problem(await bob.post(f"/api/v1/runs/{origin['jobRunId']}/retry", json={"inputs": {"caption": "x"}}), 404)
        assert (await bob.get("/api/v1/runs")).json()["items"] == []


async def test_the_run_page_offers_run_again_from_each_step(server: Server) -> None:
    async with server.client(server.alice) as c:
        origin = await submit_postcard(c)
        await server.app.wait(origin["jobRunId"], 30)
    async with server.client(follow_redirects=False) as c:
        await web_login(c, server.alice)
        page = (await c.get(f"/runs/{origin['jobRunId']}")).text
        assert 'data-again-from="stamp"' in page and 'data-again-from="resize"' in page
        csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        response = await c.post(f"/runs/{origin['jobRunId']}/again", data={"csrf": csrf, "step": "thumbnail"})
        assert response.status_code == 303
        fork_id = response.headers["location"].rsplit("/", 1)[1]
        assert fork_id != origin["jobRunId"]
        fork = await server.app.wait(fork_id, 30)
        assert [g["stepId"] for g in fork["generations"]] == ["thumbnail"]
        page = (await c.get(f"/runs/{fork_id}")).text
        assert 'id="forked-from"' in page and "Reused from run" in page
        assert (await c.post(f"/runs/{origin['jobRunId']}/again", data={"csrf": csrf, "step": "nope"})).status_code == 422
        assert (await c.post(f"/runs/{origin['jobRunId']}/again", data={"csrf": "forged", "step": "stamp"})).status_code == 403
    async with server.client(follow_redirects=False) as bob:
        await web_login(bob, server.bob)
        page = (await bob.get("/")).text
        csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        assert (await bob.post(f"/runs/{origin['jobRunId']}/again", data={"csrf": csrf, "step": "stamp"})).status_code == 404


MAP_JOB = {
    "jobId": "captions",
    "inputSchema": {"photo": {"type": "image", "required": True}, "captions": {"type": "json", "required": True}},
    "outputSchema": {"cards": {"type": "json", "sourceStepId": "stamp", "sourceOutputName": "image"},
                     "sheet": {"type": "image", "sourceStepId": "sheet", "sourceOutputName": "image"}},
    "steps": [
        {"stepId": "small", "toolId": "image.resize",
         "inputMappings": [{"sourceJobInput": "photo", "targetInputName": "image"}, {"value": 96, "targetInputName": "width"}]},
        {"stepId": "stamp", "toolId": "image.watermark", "map": {"over": {"sourceJobInput": "captions"}, "concurrency": 2},
         "inputMappings": [{"sourceStepId": "small", "sourceOutputName": "image", "targetInputName": "image"},
                           {"sourceItem": True, "targetInputName": "text"}]},
        {"stepId": "sheet", "toolId": "image.grid",
         "inputMappings": [{"sourceStepId": "stamp", "sourceOutputName": "image", "targetInputName": "images"}]},
    ],
}


async def test_map_steps_over_http_items_are_listed_and_shown_on_the_run_page(server: Server) -> None:
    async with server.client(ADMIN_KEY) as admin:
        assert (await admin.post("/api/v1/jobs", json=MAP_JOB)).status_code == 201
    photo = "data:image/png;base64," + __import__("base64").b64encode(SAMPLE.read_bytes()).decode()
    async with server.client(server.alice) as c:
        created = await c.post("/api/v1/runs", json={"jobId": "captions", "inputs": {"photo": photo, "captions": ["one", "two", "three"]}})
        assert created.status_code == 201, created.text
        run = await server.app.wait(created.json()["jobRunId"], 60)
        assert run["status"] == "completed", run["error"]
        cards = run["finalOutputs"]["cards"]
        assert [card["kind"] for card in cards] == ["artifact"] * 3 and len({card["sha256"] for card in cards}) == 3
        stamp = next(s for s in run["stepStatuses"] if s["stepId"] == "stamp")
        assert stamp["items"]["succeeded"] == 3
        page = (await c.get(f"/api/v1/runs/{run['jobRunId']}/steps/stamp/items", params={"limit": 2})).json()
        assert [i["item"] for i in page["items"]] == ["one", "two"] and page["nextAfter"] == 1
        assert page["counts"]["total"] == 3
        rest = (await c.get(f"/api/v1/runs/{run['jobRunId']}/steps/stamp/items", params={"after": 1})).json()
        assert [i["index"] for i in rest["items"]] == [2] and rest["nextAfter"] is None
        assert (await c.get(f"/api/v1/artifacts/{cards[1]['sha256']}")).status_code == 200
        assert_problem(await c.get(f"/api/v1/runs/{run['jobRunId']}/steps/nope/items"), 404)
        assert_problem(await c.get(f"/api/v1/runs/{run['jobRunId']}/steps/stamp/items", params={"status": "weird"}), 422)

        # hostile inputs: not a list, and far too many items — clear errors, nothing run
        not_list = await c.post("/api/v1/runs", json={"jobId": "captions", "inputs": {"photo": photo, "captions": "one"}})
        failed = await server.app.wait(not_list.json()["jobRunId"], 30)
        assert failed["status"] == "failed" and "which is text ('one'), not a list" in failed["error"]["message"]
        huge = await c.post("/api/v1/runs", json={"jobId": "captions", "inputs": {"photo": photo, "captions": ["x"] * 10_001}})
        too_many = await server.app.wait(huge.json()["jobRunId"], 30)
        assert "maps over 10001 items; it takes at most 10000" in too_many["error"]["message"]
        assert [s["stepId"] for s in too_many["stepStatuses"] if s["status"] == "failed"] == ["stamp"]
    async with server.client(server.bob) as bob:
        assert_problem(await bob.get(f"/api/v1/runs/{run['jobRunId']}/steps/stamp/items"), 404)
        assert_problem(await bob.get(f"/api/v1/artifacts/{cards[1]['sha256']}"), 404)
    async with server.client(follow_redirects=False) as web:
        await web_login(web, server.alice)
        page_html = (await web.get(f"/runs/{run['jobRunId']}")).text
        assert 'class="fan"' in page_html and "× each item" in page_html  # the graph shows the fan-out
        assert "3 of 3 items done" in page_html and 'data-item="2"' in page_html
        assert " · 3/3" in page_html  # items done on the step's node
