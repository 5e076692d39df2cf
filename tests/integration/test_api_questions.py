"""Answering a step that asks, over HTTP (a real server on loopback, its embedded worker): the
answer route and its problems (404 for another account, 409 when not waiting, 422 naming the
field, the same answer again answered as before), the question for an approver, the list of
waiting questions, the run's waiting status in its detail and its event stream, the OpenAPI
document."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from tests.helpers.accounts import run_with_status, web_login
from tests.integration.test_api import ADMIN_KEY, JOBS, Server, assert_problem, running_server

JOB = {
    "jobId": "approve_note",
    "inputSchema": {"value": {"type": "integer", "default": 1}},
    "steps": [
        {"stepId": "make", "toolId": "test.instant", "inputMappings": [{"sourceJobInput": "value", "targetInputName": "value"}]},
        {"stepId": "review", "dependencies": ["make"],
         "ask": {"kind": "edit", "question": "Check the note", "approvers": ["carol"], "timeout": "1h",
                 "fields": {"note": {"type": "string", "required": True}, "times": {"type": "integer", "minimum": 1,
                                                                                      "maximum": 5, "default": 2}}},
         "inputMappings": [{"template": "value is {{ steps.make.outputs.value }}", "targetInputName": "note"}]},
        {"stepId": "after", "toolId": "test.instant",
         "inputMappings": [{"sourceStepId": "review", "sourceOutputName": "values", "path": "times", "targetInputName": "value"},
                           {"sourceStepId": "review", "sourceOutputName": "values", "path": "note", "targetInputName": "note"}]},
    ],
}


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    folder = tmp_path / "defs"
    folder.mkdir()
    (folder / "approve_note.yaml").write_text(yaml.safe_dump(JOB))
    async with running_server(tmp_path / "home", definitions=[JOBS, folder]) as srv:
        yield srv


async def test_answering_over_http(server: Server) -> None:
    carol_key = (await server.app.create_key("carol", "tests"))[1]
    async with server.client(server.alice) as alice, server.client(server.bob) as bob, \
            server.client(carol_key) as carol:
        run_id = (await alice.post("/api/v1/runs", json={"jobId": "approve_note", "inputs": {"value": 4}})).json()["jobRunId"]
        run = await run_with_status(alice, run_id, "waiting_input")
        assert run["statusDetail"].startswith("your run needs you")
        (question,) = run["waitingFor"]
        assert question["values"] == {"note": "value is 5", "times": 2} and question["fields"][0]["name"] == "note"
        listed = (await alice.get("/api/v1/runs", params={"status": "waiting_input"})).json()["items"]
        assert [r["jobRunId"] for r in listed] == [run_id]
        answer_url = f"/api/v1/runs/{run_id}/steps/review/answer"

        # another account: as if the run did not exist, whatever it sends
        for body in ({"decision": "approve"}, {"values": {"times": 3}}, {"junk": True}):
            assert_problem(await bob.post(answer_url, json=body), 404 if "junk" not in body else 422)
        assert_problem(await bob.get(f"/api/v1/runs/{run_id}/steps/review/question"), 404)
        assert (await bob.get("/api/v1/questions")).json()["items"] == []
        # an approver sees the question (not the run)
        assert (await carol.get("/api/v1/questions")).json()["items"][0]["runId"] == run_id
        assert (await carol.get(f"/api/v1/runs/{run_id}/steps/review/question")).json()["text"] == "Check the note"
        assert_problem(await carol.get(f"/api/v1/runs/{run_id}"), 404)

        # garbage: 422 naming the field, nothing changes
        problem = assert_problem(await alice.post(answer_url, json={"values": {"times": 9, "colour": "red"}}), 422)
        assert {e["field"] for e in problem["errors"]} == {"values.times", "values.colour"}
        problem = assert_problem(await alice.post(answer_url, json={"chosen": [0]}), 422)
        assert problem["errors"][0]["field"] == "chosen"
        problem = assert_problem(await alice.post(answer_url, json={"decision": "perhaps"}), 422)
        assert problem["errors"][0]["field"] == "decision"
        assert_problem(await alice.post(answer_url, content=b"{not json", headers={"content-type": "application/json"}), 400)
        assert_problem(await alice.post(f"/api/v1/runs/{run_id}/steps/make/answer", json={"decision": "approve"}), 409)
        assert_problem(await alice.post(f"/api/v1/runs/{run_id}/steps/nope/answer", json={"decision": "approve"}), 404)
        assert (await alice.get(f"/api/v1/runs/{run_id}")).json()["status"] == "waiting_input"

        # the answer; the same again answers as before; another one is a conflict
        response = await carol.post(answer_url, json={"values": {"times": "3"}, "comment": "ok"})
        assert response.status_code == 200, response.text
        done = response.json()
        assert done["answeredBy"] == "carol" and done["answer"]["values"] == {"note": "value is 5", "times": 3}
        again = (await carol.post(answer_url, json={"values": {"times": 3}, "comment": "ok"})).json()
        assert again["repeated"] is True
        assert_problem(await alice.post(answer_url, json={"decision": "reject"}), 409)
        run = await run_with_status(alice, run_id, "completed")
        after = next(s for s in run["stepStatuses"] if s["stepId"] == "after")
        assert after["outputs"] == {"value": 4, "note": "value is 5"}

        # the event stream shows the wait and the answer
        async with alice.stream("GET", f"/api/v1/runs/{run_id}/events") as stream:
            text = "".join([chunk async for chunk in stream.aiter_text()])
        for name in ("step.waiting_input", "run.waiting_input", "step.answered", "run.resumed"):
            assert f"event: {name}" in text


async def test_the_answer_route_is_in_the_openapi_document(server: Server) -> None:
    async with server.client(ADMIN_KEY) as client:
        spec = (await client.get("/api/v1/openapi.json")).json()
    route = spec["paths"]["/api/v1/runs/{run_id}/steps/{step_id}/answer"]["post"]
    assert {"200", "404", "409", "422"} <= set(route["responses"])
    body = spec["components"]["schemas"]["AnswerRequest"]["properties"]
    assert set(body) == {"decision", "chosen", "values", "comment"}
    assert "/api/v1/questions" in spec["paths"]


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


async def test_the_run_page_asks_with_thumbnails_and_buttons_and_takes_the_answer(tmp_path: Path) -> None:
    examples = EXAMPLES
    async with running_server(tmp_path / "home", definitions=[JOBS, examples / "ask"]) as server:
        async with server.client(server.alice) as alice:
            sample = (examples / "assets" / "sample.png").read_bytes()
            response = await alice.post("/api/v1/runs", data={"jobId": "pick_best"}, files={"image": ("s.png", sample, "image/png")})
            run_id = response.json()["jobRunId"]
            run = await run_with_status(alice, run_id, "waiting_input")
            candidates = run["waitingFor"][0]["candidates"]
        async with server.client(follow_redirects=False) as web, server.client(follow_redirects=False) as mallory:
            await web_login(web, server.alice)
            await web_login(mallory, server.bob)
            page = (await web.get(f"/runs/{run_id}")).text
            assert "Your run needs you" in page and 'data-answer-form="pick"' in page
            for index, candidate in enumerate(candidates):  # each candidate a button with its thumbnail
                assert f'data-candidate="{index}"' in page and f'/api/v1/artifacts/{candidate["sha256"]}' in page
            assert 'data-decision="reject"' in page
            csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
            url = f"/runs/{run_id}/steps/pick/answer"
            assert (await web.post(url, data={"csrf": "forged", "chosen": "1"})).status_code == 403
            other = (await mallory.get("/runs")).text
            other_csrf = other.split('name="csrf" value="', 1)[1].split('"', 1)[0] if 'name="csrf"' in other else ""
            assert (await mallory.post(url, data={"csrf": other_csrf, "chosen": "1"})).status_code in (403, 404)
            assert (await web.post(url, data={"csrf": csrf, "chosen": "9"})).status_code == 422
            response = await web.post(url, data={"csrf": csrf, "chosen": "1"})
            assert response.status_code == 303 and response.headers["location"] == f"/runs/{run_id}#step-pick"
            assert (await web.post(url, data={"csrf": csrf, "chosen": "2"})).status_code == 409
        async with server.client(server.alice) as alice:
            run = await run_with_status(alice, run_id, "completed")
            pick = next(s for s in run["stepStatuses"] if s["stepId"] == "pick")
            assert pick["outputs"]["chosen"] == candidates[1] and pick["outputs"]["answeredBy"] == "alice"
        async with server.client(follow_redirects=False) as web:
            await web_login(web, server.alice)
            page = (await web.get(f"/runs/{run_id}")).text
            assert 'data-role="answer"' in page and "by alice" in page


async def test_the_callback_url_hears_that_the_run_needs_you(tmp_path: Path) -> None:
    from tests.helpers.loopback import serve_asgi
    from tests.integration.test_api_callbacks import Receiver

    receiver = Receiver([200])
    folder = tmp_path / "defs"
    folder.mkdir()
    (folder / "approve_note.yaml").write_text(yaml.safe_dump(JOB))
    async with serve_asgi(receiver.app) as hook_url, running_server(
        tmp_path / "home", definitions=[JOBS, folder]
    ) as server, server.client(server.alice) as alice:
        response = await alice.post("/api/v1/runs", json={"jobId": "approve_note", "callbackUrl": f"{hook_url}/hook"})
        run_id = response.json()["jobRunId"]
        await run_with_status(alice, run_id, "waiting_input")
        for _ in range(200):
            if receiver.received:
                break
            await asyncio.sleep(0.05)
        (_headers, body), *_ = receiver.received
        sent = json.loads(body)
        assert sent["type"] == "run.waiting_input"
        assert sent["data"]["status"] == "waiting_input" and sent["data"]["stepId"] == "review"
        assert sent["data"]["message"].startswith("Your run needs you: Check the note")
        assert sent["data"]["question"]["values"] == {"note": "value is 2", "times": 2}


async def test_an_approver_answers_from_the_needs_you_page(server: Server) -> None:
    carol_key = (await server.app.create_key("carol", "tests"))[1]
    async with server.client(server.alice) as alice:
        run_id = (await alice.post("/api/v1/runs", json={"jobId": "approve_note", "inputs": {"value": 1}})).json()["jobRunId"]
        await run_with_status(alice, run_id, "waiting_input")
    async with server.client(follow_redirects=False) as carol, server.client(follow_redirects=False) as bob:
        await web_login(carol, carol_key)
        await web_login(bob, server.bob)
        assert 'id="no-questions"' in (await bob.get("/questions")).text
        page = (await carol.get("/questions")).text
        assert "Check the note" in page and "you are an approver" in page and 'name="value.times"' in page
        csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        response = await carol.post(f"/runs/{run_id}/steps/review/answer",
                                    data={"csrf": csrf, "back": "/questions", "value.times": "4", "decision": "approve"})
        assert response.status_code == 303 and response.headers["location"] == "/questions"
        assert 'id="no-questions"' in (await carol.get("/questions")).text
    async with server.client(server.alice) as alice:
        run = await run_with_status(alice, run_id, "completed")
        assert next(s for s in run["stepStatuses"] if s["stepId"] == "after")["outputs"]["value"] == 5  # times + 1
