"""A hostile review of the HTTP API: requests no client sends by mistake, on both stores.

Text with a NUL character cannot be stored nor even compared on PostgreSQL ("text fields cannot
contain NUL (0x00) bytes"): a NUL in a path or query parameter that is looked up (a step id, the
`job` filter, a cursor's run id, an account) was a 500 there, though SQLite answered; so were a NUL
in an artifact grant's account and in the admin's credit notes. A ledger cursor past 64 bits was a
500 on SQLite. A body nested past what the JSON parser reads was a 400 that named nothing on every
route but submit. Each is now a 4xx naming the field, and stores nothing.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from tests.helpers.accounts import png, run_with_status, upload, web_login
from tests.integration.test_api import ADMIN_KEY, JOBS, Server, assert_problem, running_server
from tests.integration.test_api_questions import JOB as ASKING_JOB


@pytest.fixture
async def server(tmp_path: Path, db_url: str) -> Any:
    folder = tmp_path / "defs"
    folder.mkdir()
    (folder / "approve_note.yaml").write_text(yaml.safe_dump(ASKING_JOB))
    async with running_server(tmp_path / "home", database_url=db_url, definitions=[JOBS, folder]) as srv:
        yield srv


def _fields(problem: dict[str, Any]) -> list[str]:
    return [e["field"] for e in problem.get("errors") or []]


async def _finished_run(client: httpx.AsyncClient) -> str:
    response = await client.post("/api/v1/runs", json={"toolId": "test.instant", "inputs": {"value": 1}})
    assert response.status_code == 201, response.text
    run_id: str = response.json()["jobRunId"]
    await run_with_status(client, run_id, "completed")
    return run_id


async def test_a_nul_in_a_path_or_query_parameter_is_a_422_naming_it(server: Server) -> None:
    async with server.client(server.alice) as alice, server.client(ADMIN_KEY) as admin:
        run_id = await _finished_run(alice)
        waiting = (await alice.post("/api/v1/runs", json={"jobId": "approve_note"})).json()["jobRunId"]
        await run_with_status(alice, waiting, "waiting_input")
        cases: list[tuple[httpx.AsyncClient, str, str, dict[str, Any], str]] = [
            (alice, "GET", "/api/v1/runs", {"job": "test\x00instant"}, "query.job"),
            (alice, "GET", f"/api/v1/runs/{run_id}/steps/a%00b/items", {}, "path.step_id"),
            (alice, "GET", f"/api/v1/runs/{waiting}/steps/rev%00iew/question", {}, "path.step_id"),
            (alice, "POST", f"/api/v1/runs/{waiting}/steps/rev%00iew/answer", {}, "path.step_id"),
            (alice, "GET", "/api/v1/tools/test.instant", {"version": "1\x00"}, "query.version"),
            (admin, "GET", "/api/v1/credits", {"account": "alice\x00"}, "query.account"),
            (admin, "GET", "/api/v1/credits/history", {"account": "alice\x00"}, "query.account"),
            (admin, "GET", "/api/v1/credits/spend", {"account": "alice\x00"}, "query.account"),
            (admin, "GET", "/api/v1/runs", {"job": "\x00"}, "query.job"),
        ]
        for client, method, path, params, field in cases:
            kwargs: dict[str, Any] = {"params": params}
            if path.endswith("/answer"):
                kwargs["json"] = {"decision": "approve"}
            problem = assert_problem(await client.request(method, path, **kwargs), 422)
            assert field in _fields(problem) and "NUL" in problem["detail"], (path, problem)
        # the question still waits, unanswered; the runs read back as before
        question = (await alice.get(f"/api/v1/runs/{waiting}/steps/review/question")).json()
        assert question["status"] == "waiting" and question["answer"] is None
        assert (await alice.get("/api/v1/runs", params={"job": "test.instant"})).json()["items"][0]["jobRunId"] == run_id


async def test_a_cursor_that_no_server_gave_out_is_a_400(server: Server) -> None:
    """A cursor is base64 of (time, run id): one whose run id holds a NUL, or whose time is not a
    finite number, is not one this server gave out (it was a 500 on PostgreSQL)."""
    async with server.client(server.alice) as alice:
        run_id = await _finished_run(alice)
        for raw in (b"1.5|run_\x00", b"nan|run_x", b"inf|run_x", b"1e400|run_x"):
            cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
            problem = assert_problem(await alice.get("/api/v1/runs", params={"cursor": cursor}), 400)
            assert _fields(problem) == ["query.cursor"], (raw, problem)
        await web_login(alice, server.alice)
        cursor = base64.urlsafe_b64encode(b"1.5|run_\x00").decode().rstrip("=")
        page = await alice.get("/runs", params={"cursor": cursor})  # the page starts over from the first
        assert page.status_code == 200 and run_id in page.text


async def test_the_web_pages_answer_a_nul_in_their_paths_with_a_4xx(server: Server) -> None:
    async with server.client(server.alice) as alice, server.client() as browser:
        run_id = await _finished_run(alice)
        await web_login(browser, server.alice)
        for path in ("/runs/run_%00x", "/runs/run_%00x/live", f"/runs/{run_id}%00"):
            response = await browser.get(path)
            assert 400 <= response.status_code < 500, (path, response.status_code, response.text[:200])


async def test_a_nul_in_stored_body_text_is_a_422_and_stores_nothing(server: Server) -> None:
    async with server.client(server.alice) as alice, server.client(ADMIN_KEY) as admin:
        sha = (await upload(alice, png(), "a.png"))["sha256"]
        problem = assert_problem(await alice.post(f"/api/v1/artifacts/{sha}/grants", json={"accountId": "bob\x00"}), 422)
        assert _fields(problem) == ["accountId"] and "NUL" in problem["detail"]
        before = (await admin.get("/api/v1/credits", params={"account": "alice"})).json()
        for route, body, field in (
            ("credits", {"amount": "5", "note": "a\x00b"}, "note"),
            ("refunds", {"amount": "5", "note": "ok", "runId": "run_\x00"}, "runId"),
        ):
            problem = assert_problem(await admin.post(f"/api/v1/accounts/alice/{route}", json=body), 422)
            assert _fields(problem) == [field] and "NUL" in problem["detail"], problem
        assert (await admin.get("/api/v1/credits", params={"account": "alice"})).json() == before
        history = (await admin.get("/api/v1/credits/history", params={"account": "alice"})).json()
        assert history["items"] == []


async def test_a_ledger_cursor_past_64_bits_is_a_422(server: Server) -> None:
    async with server.client(server.alice) as alice:
        for before in (2**63, 10**30):
            problem = assert_problem(await alice.get("/api/v1/credits/history", params={"before": before}), 422)
            assert _fields(problem) == ["query.before"], problem
        assert (await alice.get("/api/v1/credits/history", params={"before": 2**63 - 1})).status_code == 200


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


async def test_a_body_nested_past_the_parser_is_a_422_on_every_route(server: Server) -> None:
    """Submit answered this with a 422 naming the field; the routes whose body FastAPI reads said
    400 "There was an error parsing the body"."""
    async with server.client(server.alice) as alice, server.client(ADMIN_KEY) as admin:
        run_id = await _finished_run(alice)
        sha = (await upload(alice, png(), "a.png"))["sha256"]
        deep = _deep(100_000)
        cases = [
            (alice, "/api/v1/runs/batch", b'{"toolId": "test.instant", "items": [{"inputs": {"value": ' + deep + b"}}]}"),
            (alice, f"/api/v1/runs/{run_id}/retry", b'{"inputs": {"value": ' + deep + b"}}"),
            (alice, "/api/v1/estimates", b'{"toolId": "test.instant", "inputs": {"value": ' + deep + b"}}"),
            (alice, f"/api/v1/runs/{run_id}/steps/x/answer", b'{"values": {"v": ' + deep + b"}}"),
            (alice, f"/api/v1/artifacts/{sha}/grants", b'{"accountId": ' + deep + b"}"),
            (admin, "/api/v1/jobs", b'{"jobId": "x", "steps": ' + deep + b"}"),
            (admin, "/api/v1/jobs/validate", b'{"jobId": "x", "steps": ' + deep + b"}"),
        ]
        for client, path, body in cases:
            response = await client.post(path, content=body, headers={"Content-Type": "application/json"})
            problem = assert_problem(response, 422)
            assert _fields(problem) == ["body"] and "nested" in problem["detail"], (path, problem)
        assert len((await alice.get("/api/v1/runs")).json()["items"]) == 2  # the run, and the upload's


async def test_event_streams_closed_by_their_clients_leave_nothing_behind(server: Server) -> None:
    """Twenty clients follow an open run and hang up mid-stream: the process's event hub
    forgets each of them (no watcher, no reading task left). The run waits for a person: it stays
    open without a generation in flight, which the worker would finish before the server stops."""
    async with server.client(server.alice) as alice:
        response = await alice.post("/api/v1/runs", json={"jobId": "approve_note"})
        assert response.status_code == 201, response.text
        run_id = response.json()["jobRunId"]

        async def hang_up() -> None:
            async with server.client(server.alice) as follower, follower.stream("GET", f"/api/v1/runs/{run_id}/events") as stream:
                async for line in stream.aiter_lines():
                    if line.startswith("event: run.created"):
                        return  # leaves the stream open on the server's side until it notices

        await asyncio.gather(*(hang_up() for _ in range(20)))
        hub = server.app.event_hub
        for _ in range(200):
            if not hub._watchers and hub._task is None:
                break
            await asyncio.sleep(0.05)
        assert hub._watchers == {} and hub._task is None
        await alice.post(f"/api/v1/runs/{run_id}/cancel")
        assert (await run_with_status(alice, run_id, "cancelled"))["status"] == "cancelled"


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.name}: {record.getMessage()}")


async def _hang_up_mid_body(url: str, head: bytes, partial: bytes) -> None:
    """Send a request's head and part of its body, then close the connection."""
    host, port = url.removeprefix("http://").split(":")
    _reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(head + b"\r\n" + partial)
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.close()
    await writer.wait_closed()


async def test_clients_that_hang_up_mid_body_are_no_server_errors(server: Server) -> None:
    """A client that goes away while its submit's body (a file upload, a JSON body the route reads
    itself) is on its way was an "unhandled error" at ERROR, with a traceback, in the server's log
    (a 500 answered to nobody), each time. It stores nothing and logs no error."""
    errors = _Errors()
    watched = [logging.getLogger(name) for name in ("toolweave", "uvicorn.error")]
    for logger in watched:
        logger.addHandler(errors)
    auth = f"Authorization: Bearer {server.alice}\r\n".encode()
    boundary = b"----hostile"
    multipart = (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="toolId"\r\n\r\nimage.resize\r\n--'
                 + boundary + b'\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
                 b"Content-Type: image/png\r\n\r\n" + png()[:40])
    requests = [
        (b"POST /api/v1/runs HTTP/1.1\r\nHost: t\r\n" + auth + b"Content-Type: multipart/form-data; boundary="
         + boundary + b"\r\nContent-Length: 100000\r\n", multipart),
        # no Content-Type: read by the route (a JSON body)
        (b"POST /api/v1/runs HTTP/1.1\r\nHost: t\r\n" + auth + b"Content-Length: 1000\r\n", b'{"toolId": "test.inst'),
        (b"POST /api/v1/runs/batch HTTP/1.1\r\nHost: t\r\n" + auth + b"Content-Type: application/json\r\n"
         b"Content-Length: 1000\r\n", b'{"toolId": "test.inst'),
    ]
    try:
        for head, partial in requests:
            await _hang_up_mid_body(server.url, head, partial)
        await asyncio.sleep(0.5)  # the server notices
    finally:
        for logger in watched:
            logger.removeHandler(errors)
    assert errors.messages == []
    async with server.client(server.alice) as alice:
        assert (await alice.get("/api/v1/runs")).json()["items"] == []
    assert [p for p in server.app.settings.artifacts_dir.rglob("*") if p.is_file()] == []


async def test_an_upload_whose_file_name_or_type_holds_a_nul_is_a_422_and_stores_nothing(server: Server) -> None:
    """The file name and content type of a multipart file are kept in the account's artifact row:
    with a NUL they were a 500 on PostgreSQL, and on SQLite a file name no download header can carry."""
    async with server.client(server.alice) as alice:
        for filename, content_type in ((b"a\x00.png", b"image/png"), (b"a.png", b"image/png\x00")):
            body = (b'--XX\r\nContent-Disposition: form-data; name="toolId"\r\n\r\nimage.resize\r\n'
                    b'--XX\r\nContent-Disposition: form-data; name="width"\r\n\r\n8\r\n'
                    b'--XX\r\nContent-Disposition: form-data; name="image"; filename="' + filename + b'"\r\n'
                    b"Content-Type: " + content_type + b"\r\n\r\n" + png() + b"\r\n--XX--\r\n")
            response = await alice.post("/api/v1/runs", content=body,
                                        headers={"Content-Type": "multipart/form-data; boundary=XX"})
            problem = assert_problem(response, 422)
            assert _fields(problem) == ["inputs.image"] and "NUL" in problem["detail"], problem
        assert (await alice.get("/api/v1/runs")).json()["items"] == []
    assert [p for p in server.app.settings.artifacts_dir.rglob("*") if p.is_file()] == []


async def test_the_admin_key_reads_another_accounts_run_but_does_not_change_it(server: Server) -> None:
    """docs/security.md: the admin key is trusted with reading every account's runs and
    registering jobs, "nothing else". It could cancel, retry and fork another account's runs (a
    fork and a retry charged to that account's credits) and answer its questions, through the API
    and the web pages. Each is now a 403; the run and the account's ledger stay as they were."""
    async with server.client(server.alice) as alice, server.client(ADMIN_KEY) as admin, \
            server.client() as browser:
        await admin.post("/api/v1/accounts/alice/credits", json={"amount": "100"})
        done = await _finished_run(alice)
        waiting = (await alice.post("/api/v1/runs", json={"jobId": "approve_note"})).json()["jobRunId"]
        await run_with_status(alice, waiting, "waiting_input")
        ledger = (await alice.get("/api/v1/credits/history")).json()["items"]
        for path, body in (
            (f"/api/v1/runs/{waiting}/cancel", None),
            (f"/api/v1/runs/{done}/retry", {"fromStep": "test.instant"}),
            (f"/api/v1/runs/{done}/retry", {"inputs": {"value": 2}}),
            (f"/api/v1/runs/{waiting}/steps/review/answer", {"decision": "reject"}),
        ):
            problem = assert_problem(await admin.post(path, json=body), 403)
            assert "admin" in problem["detail"], problem
        await web_login(browser, ADMIN_KEY)
        page = await browser.get(f"/runs/{waiting}")
        assert page.status_code == 200 and 'id="cancel-run"' not in page.text  # reading is allowed, not changing
        csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        for path, data in ((f"/runs/{waiting}/cancel", {}), (f"/runs/{done}/again", {"step": "test.instant"}),
                           (f"/runs/{waiting}/steps/review/answer", {"decision": "reject"})):
            response = await browser.post(path, data={"csrf": csrf, **data})
            assert response.status_code == 403, (path, response.status_code)
        assert (await admin.get(f"/api/v1/runs/{waiting}")).json()["status"] == "waiting_input"
        assert [r["jobRunId"] for r in (await alice.get("/api/v1/runs")).json()["items"]] == [waiting, done]
        assert (await alice.get("/api/v1/credits/history")).json()["items"] == ledger
        # the admin's own runs are its own to change
        own = await _finished_run(admin)
        assert (await admin.post(f"/api/v1/runs/{own}/retry", json={"inputs": {"value": 3}})).status_code == 201
        assert_problem(await admin.post(f"/api/v1/runs/{own}/steps/nope/answer", json={"decision": "approve"}), 404)
        assert_problem(await admin.post("/api/v1/runs/run_nope/cancel"), 404)


async def test_a_flood_of_unauthenticated_scrapes_reads_the_store_a_few_times(server: Server) -> None:
    """``/metrics`` and ``/readyz`` need no key. Each scrape aggregated every stored step and
    generation (and each readiness check counted every run by status): forty clients at once were
    forty full aggregations. Scrapes now share one reading (made once at a time, reused for a
    second), and readiness asks the store one row."""
    async with server.client(server.alice) as alice:
        await _finished_run(alice)
    calls = {"work": 0, "stats": 0}
    app = server.app
    work_stats, stats = app.work_stats, app.stats

    async def counted_work(*args: Any) -> Any:
        calls["work"] += 1
        return await work_stats(*args)

    async def counted_stats() -> Any:
        calls["stats"] += 1
        return await stats()

    app.work_stats, app.stats = counted_work, counted_stats  # type: ignore[method-assign]
    try:
        async with server.client() as anyone:
            scrapes = await asyncio.gather(*(anyone.get("/metrics") for _ in range(40)))
            ready = await asyncio.gather(*(anyone.get("/readyz") for _ in range(40)))
    finally:
        del app.work_stats, app.stats
    assert {r.status_code for r in scrapes} == {200} and {r.status_code for r in ready} == {200}
    assert all('toolweave_runs{status="completed"} 1.0' in r.text for r in scrapes)
    assert calls["work"] <= 5 and calls["stats"] <= 5, calls


async def test_a_posted_definition_cannot_hold_minutes_of_template_parsing(server: Server) -> None:
    """Any account may ask ``POST /jobs/validate``. Each template is compiled under a 1 s CPU
    budget, but a definition could hold as many as its body had room for (an 8 MiB body: hundreds
    of 20,000-character templates, each taking up to half a second): minutes of CPU per request.
    A job's templates and conditions may now hold 200,000 characters together; past it the
    definition is refused (422, naming the problem) and none of them is compiled."""
    steps = [
        {"stepId": f"s{i}", "toolId": "test.instant",
         "inputMappings": [{"template": f"{{{{ job.note }}}} {i} " + "x" * 19_000, "targetInputName": "note"}]}
        for i in range(11)
    ]
    definition = {"jobId": "many_templates", "inputSchema": {"note": {"type": "string"}}, "steps": steps}
    async with server.client(server.bob) as bob, server.client(ADMIN_KEY) as admin:
        problem = assert_problem(await bob.post("/api/v1/jobs/validate", json=definition), 422)
        assert problem["type"].endswith("definition-too-costly"), problem
        assert _fields(problem) == ["steps"] and "200,000 characters" in problem["detail"], problem
        assert_problem(await admin.post("/api/v1/jobs", json=definition), 422)
        # ten of them are a job like any other
        ten = {**definition, "steps": steps[:10]}
        assert (await bob.post("/api/v1/jobs/validate", json=ten)).json() == {
            "valid": True, "jobId": "many_templates", "version": "1", "problems": []}


async def test_a_posted_definition_cannot_hold_seconds_of_condition_parsing(server: Server) -> None:
    """Within the 200,000 characters, 60 conditions of list literals (3,300 characters each, each
    parsed within its own second) took about 40 s of CPU to validate. Compiling a definition's
    templates and conditions may now take 2 s of CPU together: past it the definition is refused
    (422, naming the problem, how far it got) and the rest is not compiled."""
    ones = ",".join(["1"] * 1640)
    steps = [
        {"stepId": f"s{i}", "toolId": "test.instant", "condition": f"[{i},{ones}].size() > 0",
         "inputMappings": [{"value": 1, "targetInputName": "value"}]}
        for i in range(60)
    ]
    definition = {"jobId": "many_conditions", "steps": steps}
    assert sum(len(s["condition"]) for s in steps) < 200_000
    async with server.client(server.bob) as bob, server.client(ADMIN_KEY) as admin:
        problem = assert_problem(await bob.post("/api/v1/jobs/validate", json=definition), 422)
        assert problem["type"].endswith("definition-too-costly"), problem
        assert _fields(problem) == ["steps"], problem
        assert "take more than 2 s of CPU to compile together" in problem["detail"], problem
        compiled = int(problem["detail"].split("ran out after ")[1].split(" of 60")[0])
        assert compiled < 60, problem  # the work done: most conditions were never compiled
        assert_problem(await admin.post("/api/v1/jobs", json=definition), 422)
        # a few of them are a job like any other
        few = {**definition, "steps": steps[:2]}
        assert (await bob.post("/api/v1/jobs/validate", json=few)).json() == {
            "valid": True, "jobId": "many_conditions", "version": "1", "problems": []}


async def test_a_runs_outputs_zip_is_streamed_without_a_copy_on_disk(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``outputs.zip`` was built whole in a temporary file for every request before a byte was
    sent: an account downloading its run's large outputs many times at once filled the server's
    disk. It is now written as it is sent (nothing on disk), and a download abandoned half-way
    stops its writer."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # the server runs in this process
    photo = png((10, 200, 30), size=(1200, 900))
    async with server.client(server.alice) as alice:
        created = await alice.post("/api/v1/runs", data={"toolId": "image.resize", "width": "1100"},
                                   files={"image": ("big.png", photo, "image/png")})
        assert created.status_code == 201, created.text
        run_id = created.json()["jobRunId"]
        run = await run_with_status(alice, run_id, "completed")
        url = f"/api/v1/runs/{run_id}/outputs.zip"
        async with alice.stream("GET", url) as response:
            assert response.status_code == 200 and response.headers["content-type"] == "application/zip"
            async for _chunk in response.aiter_bytes():
                assert list(scratch.iterdir()) == []  # being sent, and nothing on disk
                break  # and hang up half-way
        whole = await asyncio.gather(*(alice.get(url) for _ in range(4)))
    assert list(scratch.iterdir()) == []
    for response in whole:
        assert f"image.resize-{run_id}.zip" in response.headers["content-disposition"]
        with zipfile.ZipFile(io.BytesIO(response.content)) as bundle:
            assert bundle.testzip() is None
            assert json.loads(bundle.read("outputs.json")) == run["finalOutputs"]
            assert len(bundle.namelist()) == 1 + sum(
                1 for v in run["finalOutputs"].values() if isinstance(v, dict) and v.get("kind") == "artifact")


async def test_an_error_lists_at_most_fifty_problems(server: Server) -> None:
    """Every bad field was listed, twice (``detail`` and ``errors``): 500,000 unknown inputs in a
    6 MB submit were answered with 77 MB, an answer choosing a million times a candidate that is not
    there with 234 MB (seconds of the server's time). An error now lists the first 50 problems and
    says how many there were."""
    async with server.client(server.alice) as alice:
        response = await alice.post("/api/v1/runs", json={"toolId": "test.instant",
                                                          "inputs": {f"k{i}": 1 for i in range(5000)}})
        problem = assert_problem(response, 422)
        assert len(problem["errors"]) == 50 and problem["errors"][0]["field"].startswith("inputs.k")
        assert problem["detail"].startswith("5000 problems with the inputs (the first 50)")
        assert len(response.content) < 20_000
        batch = await alice.post("/api/v1/runs/batch", json={
            "toolId": "test.instant", "items": [{"inputs": {f"k{i}": 1 for i in range(500)}}, {"inputs": {}}]})
        assert batch.status_code == 200 and batch.json()["created"] == 1
        assert len(batch.json()["items"][0]["error"]["errors"]) == 50
        waiting = (await alice.post("/api/v1/runs", json={"jobId": "approve_note"})).json()["jobRunId"]
        await run_with_status(alice, waiting, "waiting_input")
        response = await alice.post(f"/api/v1/runs/{waiting}/steps/review/answer",
                                    json={"values": {f"f{i}": 1 for i in range(5000)}})
        problem = assert_problem(response, 422)
        assert 0 < len(problem["errors"]) <= 50 and len(response.content) < 20_000
        assert (await alice.get(f"/api/v1/runs/{waiting}")).json()["status"] == "waiting_input"
