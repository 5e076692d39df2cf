"""The HTTP API on a real uvicorn server on loopback, with an embedded worker and a SQLite store."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from tests.helpers.databases import seed_home_store
from tests.helpers.loopback import serve_asgi

from toolweave.api import create_app
from toolweave.app import App
from toolweave.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
JOBS = ROOT / "tests" / "acceptance" / "jobs"
SAMPLE = ROOT / "examples" / "assets" / "sample.png"
ADMIN_KEY = "tw_admin_for_tests_only_0123456789"


@dataclass
class Server:
    app: App
    url: str
    alice: str
    bob: str

    def client(self, key: str | None = None, **kwargs: Any) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30, **kwargs)


@contextlib.asynccontextmanager
async def running_server(home: Path, *, send_buffer_bytes: int | None = None, **settings: Any) -> AsyncIterator[Server]:
    """The API with an embedded worker on 127.0.0.1 (port 0), and keys for two accounts
    (``send_buffer_bytes``: see ``serve_asgi``)."""
    options: dict[str, Any] = {
        "home": home, "definitions": [JOBS], "test_tools": True, "admin_key": ADMIN_KEY,
        "callback_allow_private_urls": True, "worker_slots": 4,
    }
    options.update(settings)
    seed_home_store(options["home"], options.get("database_url"))
    app = App(Settings(**options))
    try:
        _, alice = await app.create_key("alice", "tests")
        _, bob = await app.create_key("bob", "tests")
        api = create_app(app, run_worker=True, slots=4)
        async with api.router.lifespan_context(api), serve_asgi(api, send_buffer_bytes=send_buffer_bytes) as url:
            yield Server(app, url, alice, bob)
    finally:
        await app.aclose()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running_server(tmp_path / "home") as srv:
        yield srv


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["title"]
    return body


async def follow(client: httpx.AsyncClient, run_id: str, last_event_id: int | None = None) -> list[dict[str, Any]]:
    """Read a run's SSE stream to its end; returns the events."""
    headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
    events: list[dict[str, Any]] = []
    async with client.stream("GET", f"/api/v1/runs/{run_id}/events", headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        fields: dict[str, str] = {}
        async for line in response.aiter_lines():
            if line == "":
                if "data" in fields:
                    event = json.loads(fields["data"])
                    assert event["type"] == fields["event"] and str(event["id"]) == fields["id"]
                    events.append(event)
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
    return events


async def submit_postcard(client: httpx.AsyncClient, **data: str) -> dict[str, Any]:
    files = {"photo": ("sample.png", SAMPLE.read_bytes(), "image/png")}
    response = await client.post("/api/v1/runs", data={"jobId": "postcard", **data}, files=files)
    assert response.status_code == 201, response.text
    assert response.headers["location"] == f"/api/v1/runs/{response.json()['jobRunId']}"
    run: dict[str, Any] = response.json()
    return run


async def test_tools_and_jobs_are_listed_with_a_json_schema_of_their_inputs(server: Server) -> None:
    async with server.client(server.alice) as c:
        tools = (await c.get("/api/v1/tools")).json()
        resize = next(t for t in tools if t["toolId"] == "image.resize")
        assert resize["inputSchema"]["properties"]["width"]["type"] == "integer"
        assert "image" in resize["inputSchema"]["required"]
        shown = (await c.get("/api/v1/tools/image.resize")).json()
        assert shown["definition"]["toolId"] == "image.resize"
        jobs = (await c.get("/api/v1/jobs")).json()
        assert [j["jobId"] for j in jobs] == ["postcard"]
        job = (await c.get("/api/v1/jobs/postcard")).json()
        assert {s["stepId"]: s["dependencies"] for s in job["steps"]} == {
            "resize": [], "stamp": ["resize"], "thumbnail": ["resize"]
        }
        assert job["inputSchema"]["required"] == ["photo"]
        body = assert_problem(await c.get("/api/v1/tools/nope"), 404)
        assert "nope" in body["detail"]
        assert_problem(await c.get("/api/v1/jobs/nope"), 404)


async def test_submit_with_a_file_follow_the_stream_and_download_the_output(server: Server) -> None:
    async with server.client(server.alice) as c:
        run = await submit_postcard(c, caption="Hello", width="320")
        assert run["status"] in ("queued", "running")
        events = await follow(c, run["jobRunId"])
        types = [e["type"] for e in events]
        assert types[0] == "run.created" and types[-1] == "run.completed"
        assert [e["id"] for e in events] == sorted(e["id"] for e in events)
        assert {e["stepId"] for e in events if e["type"] == "step.succeeded"} == {"resize", "stamp", "thumbnail"}
        detail = (await c.get(f"/api/v1/runs/{run['jobRunId']}")).json()
        assert detail["status"] == "completed"
        assert detail["costUsd"] == "0" and detail["durationMs"] is not None
        assert [s["status"] for s in detail["stepStatuses"]] == ["succeeded"] * 3
        assert len(detail["generations"]) == 3
        postcard = detail["finalOutputs"]["postcard"]
        response = await c.get(f"/api/v1/artifacts/{postcard['sha256']}")
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        with Image.open(io.BytesIO(response.content)) as image:
            assert image.width == 320
        download = await c.get(f"/api/v1/artifacts/{postcard['sha256']}?download=true")
        assert download.headers["content-disposition"].startswith("attachment")
        archive = await c.get(f"/api/v1/runs/{run['jobRunId']}/outputs.zip")
        assert archive.status_code == 200 and archive.headers["content-type"] == "application/zip"
        assert f"postcard-{run['jobRunId']}.zip" in archive.headers["content-disposition"]
        with zipfile.ZipFile(io.BytesIO(archive.content)) as bundle:
            assert sorted(bundle.namelist()) == ["outputs.json", "postcard.png", "thumbnail.png"]
            assert bundle.read("postcard.png") == response.content
            assert json.loads(bundle.read("outputs.json"))["postcard"]["sha256"] == postcard["sha256"]


async def test_the_stream_replays_from_last_event_id_and_says_204_when_nothing_is_left(server: Server) -> None:
    async with server.client(server.alice) as c:
        run = await submit_postcard(c)
        everything = await follow(c, run["jobRunId"])
        middle = everything[2]["id"]
        rest = await follow(c, run["jobRunId"], last_event_id=middle)
        assert [e["id"] for e in rest] == [e["id"] for e in everything if e["id"] > middle]
        done = await c.get(f"/api/v1/runs/{run['jobRunId']}/events", headers={"Last-Event-ID": str(everything[-1]["id"])})
        assert done.status_code == 204
        assert_problem(
            await c.get(f"/api/v1/runs/{run['jobRunId']}/events", headers={"Last-Event-ID": "x"}), 422
        )


async def test_an_idempotency_key_returns_the_same_run(server: Server) -> None:
    async with server.client(server.alice) as c:
        body = {"toolId": "test.instant", "inputs": {"value": 1}}
        first = await c.post("/api/v1/runs", json=body, headers={"Idempotency-Key": "abc"})
        again = await c.post("/api/v1/runs", json=body, headers={"Idempotency-Key": "abc"})
        other = await c.post("/api/v1/runs", json=body, headers={"Idempotency-Key": "def"})
        assert first.status_code == 201 and again.status_code == 200
        assert first.json()["jobRunId"] == again.json()["jobRunId"] != other.json()["jobRunId"]
    async with server.client(server.bob) as c:  # keys are per account
        mine = await c.post("/api/v1/runs", json=body, headers={"Idempotency-Key": "abc"})
        assert mine.status_code == 201 and mine.json()["jobRunId"] != first.json()["jobRunId"]


async def test_another_account_sees_404_for_runs_events_artifacts_and_actions(server: Server) -> None:
    async with server.client(server.alice) as alice:
        run = await submit_postcard(alice)
        await follow(alice, run["jobRunId"])
        detail = (await alice.get(f"/api/v1/runs/{run['jobRunId']}")).json()
    run_id = run["jobRunId"]
    sha = detail["finalOutputs"]["postcard"]["sha256"]
    input_sha = detail["jobInputs"]["photo"]["sha256"]
    async with server.client(server.bob) as bob:
        for method, path in [
            ("GET", f"/api/v1/runs/{run_id}"),
            ("GET", f"/api/v1/runs/{run_id}/events"),
            ("POST", f"/api/v1/runs/{run_id}/cancel"),
            ("POST", f"/api/v1/runs/{run_id}/retry"),
            ("GET", f"/api/v1/artifacts/{sha}"),
            ("GET", f"/api/v1/artifacts/{input_sha}"),
            ("GET", f"/api/v1/runs/{run_id}/outputs.zip"),
        ]:
            assert_problem(await bob.request(method, path), 404)
        assert (await bob.get("/api/v1/runs")).json()["items"] == []
        # nor can bob use alice's upload as an input
        stolen = await bob.post("/api/v1/runs", json={"jobId": "postcard", "inputs": {"photo": detail["jobInputs"]["photo"]}})
        body = assert_problem(stolen, 422)
        assert body["errors"][0]["field"] == "inputs.photo"
    async with server.client(ADMIN_KEY) as admin:  # the admin key sees every account
        assert (await admin.get(f"/api/v1/runs/{run_id}")).status_code == 200


async def test_bad_input_is_a_4xx_problem_naming_each_field(server: Server) -> None:
    async with server.client(server.alice) as c:
        body = assert_problem(
            await c.post("/api/v1/runs", json={"jobId": "postcard", "inputs": {"width": "wide", "colour": 1}}), 422
        )
        assert {e["field"] for e in body["errors"]} == {"inputs.width", "inputs.colour", "inputs.photo"}
        body = assert_problem(await c.post("/api/v1/runs", json={"toolId": "image.resize", "jobId": "postcard"}), 422)
        assert body["errors"][0]["field"] == "toolId"
        body = assert_problem(await c.post("/api/v1/runs", json={"toolId": "x", "priority": "high", "callbackUrl": "ftp://x"}), 422)
        assert {e["field"] for e in body["errors"]} == {"priority", "callbackUrl"}
        assert_problem(await c.post("/api/v1/runs", json={"toolId": "nope"}), 404)
        assert_problem(await c.post("/api/v1/runs", content=b"{not json", headers={"content-type": "application/json"}), 400)
        assert_problem(await c.post("/api/v1/runs", content=b"x", headers={"content-type": "text/plain"}), 415)
        assert_problem(await c.post("/api/v1/runs", json=[1, 2]), 422)
        media = assert_problem(
            await c.post("/api/v1/runs", json={"jobId": "postcard", "inputs": {"photo": "/etc/passwd"}}), 422
        )
        assert media["errors"][0]["field"] == "inputs.photo"
        body = assert_problem(await c.get("/api/v1/runs?limit=0&status=bogus"), 422)
        assert {e["field"] for e in body["errors"]} == {"query.limit", "query.status[0]"}
        assert_problem(await c.get("/api/v1/runs?cursor=garbage"), 400)
        assert_problem(await c.get("/api/v1/runs?since=yesterday"), 422)
        assert_problem(await c.get("/api/v1/artifacts/not-a-hash"), 422)
        assert_problem(await c.delete("/api/v1/runs"), 405)
    async with server.client() as anonymous:
        response = await anonymous.get("/api/v1/runs")
        assert_problem(response, 401)
        assert response.headers["www-authenticate"].startswith("Bearer")
    async with server.client("tw_wrong") as wrong:
        assert_problem(await wrong.get("/api/v1/runs"), 401)


async def test_list_filters_and_cursor_pagination(server: Server) -> None:
    async with server.client(server.alice) as c:
        ids = []
        for value in range(5):
            response = await c.post("/api/v1/runs", json={"toolId": "test.instant", "inputs": {"value": value}})
            ids.append(response.json()["jobRunId"])
        await server.app.make_worker(2).run_until_idle(30)
        for run_id in ids:
            await server.app.wait(run_id, 30)
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 2, "job": "test.instant", "status": "completed"}
            if cursor:
                params["cursor"] = cursor
            page = (await c.get("/api/v1/runs", params=params)).json()
            seen += [r["jobRunId"] for r in page["items"]]
            cursor = page["nextCursor"]
            if not cursor:
                break
        assert seen == list(reversed(ids))
        assert (await c.get("/api/v1/runs", params={"status": "failed"})).json()["items"] == []
        assert (await c.get("/api/v1/runs", params={"job": "postcard"})).json()["items"] == []
        assert len((await c.get("/api/v1/runs", params={"since": "2000-01-01T00:00:00Z"})).json()["items"]) == 5
        assert (await c.get("/api/v1/runs", params={"since": "2999-01-01T00:00:00Z"})).json()["items"] == []


async def test_cancel_and_retry(server: Server) -> None:
    async with server.client(server.alice) as c:
        slow = (await c.post("/api/v1/runs", json={"toolId": "test.slow_async", "inputs": {"seconds": 600}})).json()
        response = await c.post(f"/api/v1/runs/{slow['jobRunId']}/cancel")
        assert response.status_code == 202
        events = await follow(c, slow["jobRunId"])
        assert events[-1]["type"] == "run.cancelled"
        failing = (await c.post("/api/v1/runs", json={
            "toolId": "test.fail_n_times", "inputs": {"n": 1, "retryable": False, "key": "api-retry"}
        })).json()
        events = await follow(c, failing["jobRunId"])
        assert events[-1]["type"] == "run.failed"
        assert_problem(await c.post(f"/api/v1/runs/{slow['jobRunId']}x/retry"), 404)
        retried = await c.post(f"/api/v1/runs/{failing['jobRunId']}/retry")
        assert retried.status_code == 202
        final = await server.app.wait(failing["jobRunId"], 30)
        assert final["status"] == "completed"
        body = assert_problem(await c.post(f"/api/v1/runs/{failing['jobRunId']}/retry"), 409)
        assert "completed" in body["detail"]


async def test_webhooks_reject_unknown_generations_and_bad_tokens(server: Server) -> None:
    async with server.client() as c:
        assert_problem(await c.post("/webhooks/comfydeploy/gen_x?token=abc", json={}), 404)
        assert_problem(await c.post("/webhooks/nothing/gen_x?token=abc", json={}), 404)
        assert_problem(await c.post("/webhooks/comfydeploy/gen_x"), 422)
        assert_problem(await c.get(server.app.media_path("0" * 64, "image/png")), 404)  # signed, but no such file
        assert_problem(await c.get(f"/media/{'0' * 64}?type=image/png&expires=9999999999&token=wrong"), 404)


async def test_every_response_carries_the_security_headers(server: Server) -> None:
    """Answers of routes, problems, static files and pages."""
    async with server.client(server.alice) as c:
        answers = [
            await c.get("/healthz"),
            await c.get("/api/v1/runs/run_nosuch"),
            await c.post("/api/v1/runs", content=b"x", headers={"Content-Type": "text/plain"}),
            await c.get("/static/logo.svg"),
            await c.get("/"),
        ]
    assert [a.status_code for a in answers][:3] == [200, 404, 415]
    for answer in answers:
        assert answer.headers["x-content-type-options"] == "nosniff", answer.request.url
        assert answer.headers["referrer-policy"] == "same-origin"
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers.get_list("x-frame-options") == ["DENY"]


async def test_health_readiness_metrics_and_openapi(server: Server) -> None:
    async with server.client(server.alice) as c:
        run = await submit_postcard(c)
        await follow(c, run["jobRunId"])
        await c.post("/webhooks/comfydeploy/gen_x?token=abc", json={})
    async with server.client() as c:
        assert (await c.get("/healthz")).json() == {"status": "ok"}
        assert (await c.get("/readyz")).json() == {"status": "ready"}
        metrics = (await c.get("/metrics")).text
        assert 'toolweave_runs{status="completed"} 1.0' in metrics
        assert 'toolweave_step_duration_seconds_count{status="succeeded"} 3.0' in metrics
        assert "toolweave_queue_depth" in metrics and "toolweave_queue_lag_seconds" in metrics
        assert 'toolweave_webhook_handling_seconds_count{outcome="not_found",service="comfydeploy"} 1.0' in metrics
        assert "toolweave_backend_errors" in metrics
        spec = (await c.get("/api/v1/openapi.json")).json()
        assert spec["paths"]["/api/v1/runs"]["post"]["requestBody"]["content"].keys() == {
            "application/json", "multipart/form-data"
        }
        assert "HTTPValidationError" not in spec["components"]["schemas"]


async def test_jobs_validate_and_register(server: Server) -> None:
    definition = {
        "jobId": "small_stamp",
        "inputSchema": {"image": {"type": "image", "required": True}},
        "steps": [
            {"stepId": "small", "toolId": "image.resize",
             "inputMappings": [{"sourceJobInput": "image", "targetInputName": "image"}, {"value": 64, "targetInputName": "width"}]},
        ],
    }
    broken = {**definition, "steps": [{"stepId": "small", "toolId": "image.nothing"}]}
    async with server.client(server.alice) as c:
        ok = (await c.post("/api/v1/jobs/validate", json=definition)).json()
        assert ok == {"valid": True, "jobId": "small_stamp", "version": "1", "problems": []}
        bad = (await c.post("/api/v1/jobs/validate", json=broken)).json()
        assert bad["valid"] is False and bad["problems"][0]["path"].startswith("steps[0]")
        assert (await c.post("/api/v1/jobs/validate", json={"jobId": 3})).json()["valid"] is False
        assert_problem(await c.post("/api/v1/jobs", json=definition), 403)
    async with server.client(ADMIN_KEY) as admin:
        body = assert_problem(await admin.post("/api/v1/jobs", json=broken), 422)
        assert body["errors"][0]["field"].startswith("steps[0]")
        created = await admin.post("/api/v1/jobs", json=definition)
        assert created.status_code == 201 and created.json()["jobId"] == "small_stamp"
    async with server.client(server.alice) as c:
        assert "small_stamp" in [j["jobId"] for j in (await c.get("/api/v1/jobs")).json()]
        photo = "data:image/png;base64," + __import__("base64").b64encode(SAMPLE.read_bytes()).decode()
        run = (await c.post("/api/v1/runs", json={"jobId": "small_stamp", "inputs": {"image": photo}})).json()
        assert (await server.app.wait(run["jobRunId"], 30))["status"] == "completed"
    # kept across restarts: a new App over the same folder has it
    again = App(server.app.settings)
    try:
        assert again.registry.get_job("small_stamp") is not None
        assert again.definition_problems == []
    finally:
        await again.aclose()


async def test_web_login_session_and_csrf(server: Server) -> None:
    async with server.client(follow_redirects=False) as c:
        response = await c.get("/runs")
        assert response.status_code == 303 and response.headers["location"].startswith("/login")
        assert (await c.post("/login", data={"api_key": server.alice})).status_code == 403  # no login CSRF token
        login_form = (await c.get("/login")).text
        login_csrf = login_form.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        assert (await c.post("/login", data={"api_key": "tw_wrong", "csrf": login_csrf})).status_code == 401
        login_csrf = c.cookies["tw_login_csrf"]  # the 401 page came with a fresh form
        response = await c.post("/login", data={"api_key": server.alice, "next": "https://evil.example/", "csrf": login_csrf})
        assert response.status_code == 303 and response.headers["location"] == "/"
        assert "httponly" in response.headers["set-cookie"].lower()
        assert (await c.get("/")).status_code == 200
        assert (await c.get("/api/v1/runs")).status_code == 200  # the session reads the API
        assert_problem(await c.post("/api/v1/runs", json={"toolId": "test.instant"}), 403)  # no CSRF header
        page = (await c.get("/new/postcard")).text
        csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        files = {"photo": ("sample.png", SAMPLE.read_bytes(), "image/png")}
        response = await c.post("/new/postcard", data={"csrf": csrf, "caption": "web", "width": "200"}, files=files)
        assert response.status_code == 303 and response.headers["location"].startswith("/runs/run_")
        run_id = response.headers["location"].rsplit("/", 1)[1]
        assert (await server.app.wait(run_id, 30))["status"] == "completed"
        page = (await c.get(f"/runs/{run_id}")).text
        assert "Completed" in page and 'data-output="postcard"' in page
        live = await c.get(f"/runs/{run_id}/live")  # what the page swaps in as the run moves
        assert live.status_code == 200 and 'data-step-row="stamp"' in live.text and "<html" not in live.text
        assert (await c.get("/runs/run_not_mine/live")).status_code == 404
        bad = await c.post("/new/postcard", data={"csrf": csrf, "width": "huge"})
        assert bad.status_code == 422 and "must be a whole number" in bad.text and "is required" in bad.text
        assert (await c.post("/new/postcard", data={"csrf": "forged", "width": "1"})).status_code == 403
        await c.post("/logout", data={"csrf": csrf})
        assert (await c.get("/")).status_code == 303


async def test_status_shows_the_embedded_worker_and_hides_other_accounts_runs(server: Server) -> None:
    async with server.client(server.alice) as c:
        deadline = time.monotonic() + 30
        while not (body := (await c.get("/api/v1/status")).json())["workers"]:
            assert time.monotonic() < deadline, "the embedded worker never announced itself"
            await asyncio.sleep(0.1)
        (worker,) = body["workers"]
        assert worker["kind"] == "serve" and worker["slots"] == 4 and worker["heartbeatAt"]
        assert body["queuedRuns"] == 0 and body["waitingReason"] is None
    async with server.client() as anonymous:
        assert_problem(await anonymous.get("/api/v1/status"), 401)


async def test_with_no_worker_a_run_is_queued_on_the_api_and_the_pages(tmp_path: Path) -> None:
    app = App(Settings(home=tmp_path / "home", definitions=[JOBS], test_tools=True))
    try:
        _, key = await app.create_key("alice", "tests")
        api = create_app(app, run_worker=False)
        async with api.router.lifespan_context(api), serve_asgi(api) as url, \
                httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}) as c:
            created = await c.post("/api/v1/runs", json={"toolId": "test.instant", "inputs": {"value": 1}})
            run_id = created.json()["jobRunId"]
            assert created.json()["status"] == "queued"
            shown = (await c.get(f"/api/v1/runs/{run_id}")).json()
            assert shown["status"] == "queued" and shown["statusDetail"].startswith("no worker is running")
            assert [r["jobRunId"] for r in (await c.get("/api/v1/runs?status=queued")).json()["items"]] == [run_id]
            status = (await c.get("/api/v1/status")).json()
            assert status["workers"] == [] and status["queuedRuns"] == 1
            assert status["oldestWaiting"]["runId"] == run_id
            async with httpx.AsyncClient(base_url=url) as web:
                form = (await web.get("/login")).text
                login_csrf = form.split('name="csrf" value="', 1)[1].split('"', 1)[0]
                await web.post("/login", data={"api_key": key, "csrf": login_csrf})
                page = (await web.get(f"/runs/{run_id}")).text
                assert 'id="queue-note"' in page and "no worker is running" in page and "Queued" in page
                overview = (await web.get("/status")).text
                assert 'id="no-workers"' in overview and "1 run queued" in overview
    finally:
        await app.aclose()
