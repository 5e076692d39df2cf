"""Issue 10, attack 1: another account's files.

Bob (the attacker) knows the sha256 of one of Alice's files (it leaks easily: a shared output, a
log line). An account reaches an artifact only through its own uploads, its own runs' outputs, or
an explicit grant; every other reference, anywhere in a run's inputs, is refused with 422 naming the
field before anything is stored, on every front end. File names are per account; signed media URLs
expire and are bound to what they serve.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.helpers.accounts import png, runs_of, upload, web_login
from tests.integration.test_api import ADMIN_KEY, Server, assert_problem, running_server

from toolweave.cli.common import CliError
from toolweave.cli.submitting import retry_or_fork
from toolweave.cli.submitting import submit as cli_submit
from toolweave.inputs import InputError


async def _alice_file(server: Server) -> dict[str, Any]:
    async with server.client(server.alice) as alice:
        return await upload(alice, png((10, 200, 10)), "alice-holiday-2024.png")


def _hostile_bodies(sha: str, full: dict[str, Any]) -> list[tuple[dict[str, Any], str]]:
    """(request body, the field the 422 must name): every way to mention Alice's artifact."""
    short = {"kind": "artifact", "sha256": sha}
    return [
        ({"toolId": "media.fetch", "inputs": {"source": f"artifact:{sha}"}}, "inputs.source"),
        ({"toolId": "media.fetch", "inputs": {"source": short}}, "inputs.source"),
        ({"toolId": "image.resize", "inputs": {"image": short, "width": 8}}, "inputs.image"),
        ({"toolId": "image.resize", "inputs": {"image": full, "width": 8}}, "inputs.image"),
        ({"toolId": "image.grid", "inputs": {"images": [short]}}, "inputs.images[0]"),
        ({"toolId": "image.grid", "inputs": {"images": [full, full]}}, "inputs.images[0]"),
        ({"toolId": "image.grid", "inputs": {"images": [{"deep": [{"deeper": short}]}]}}, "inputs.images[0].deep[0].deeper"),
        ({"toolId": "image.grid", "inputs": {"images": [f"artifact:{sha}"]}}, "inputs.images[0]"),
        ({"toolId": "image.grid", "inputs": {"images": f'[{{"kind": "artifact", "sha256": "{sha}"}}]'}}, "inputs.images[0]"),
        ({"toolId": "test.instant", "inputs": {"note": f"artifact:{sha}"}}, "inputs.note"),
    ]


async def test_another_accounts_artifact_is_refused_anywhere_in_the_inputs(server: Server) -> None:
    full = await _alice_file(server)
    sha = full["sha256"]
    async with server.client(server.bob) as bob:
        for body, field in _hostile_bodies(sha, full):
            problem = assert_problem(await bob.post("/api/v1/runs", json=body), 422)
            assert field in [e["field"] for e in problem["errors"]], (body, problem)
            assert "not one of yours" in str(problem["errors"])
        assert await runs_of(bob) == []  # nothing was created
        assert_problem(await bob.get(f"/api/v1/artifacts/{sha}"), 404)  # and nothing was granted
        # multipart: the same, with a file upload for another input in the same request
        response = await bob.post(
            "/api/v1/runs", data={"toolId": "image.grid", "inputs": f'{{"images": [{{"kind": "artifact", "sha256": "{sha}"}}]}}'},
        )
        assert "inputs.images[0]" in [e["field"] for e in assert_problem(response, 422)["errors"]]
        assert await runs_of(bob) == []
    stored = await server.app.store.read(
        lambda tx: [r.account_id for r in tx.all("SELECT account_id FROM artifacts WHERE sha256 = :s", {"s": sha})]
    )
    assert stored == ["alice"]


async def test_a_fork_cannot_bring_in_another_accounts_artifact(server: Server) -> None:
    """Forking one's own run with changed inputs goes through the same checks as a submit."""
    full = await _alice_file(server)
    async with server.client(server.bob) as bob:
        own = await upload(bob, png((5, 6, 7)), "bob.png")
        response = await bob.post("/api/v1/runs", json={"jobId": "postcard", "inputs": {"photo": own, "width": 64}})
        run_id = response.json()["jobRunId"]
        assert (await server.app.wait(run_id, 60))["status"] == "completed"
        before = {r["jobRunId"] for r in await runs_of(bob)}
        for photo in ({"kind": "artifact", "sha256": full["sha256"]}, full):
            response = await bob.post(f"/api/v1/runs/{run_id}/retry", json={"inputs": {"photo": photo}})
            assert "inputs.photo" in [e["field"] for e in assert_problem(response, 422)["errors"]]
        response = await bob.post(f"/api/v1/runs/{run_id}/retry", json={"inputs": {"caption": f"artifact:{full['sha256']}"}})
        assert "inputs.caption" in [e["field"] for e in assert_problem(response, 422)["errors"]]
        assert {r["jobRunId"] for r in await runs_of(bob)} == before
        assert_problem(await bob.get(f"/api/v1/artifacts/{full['sha256']}"), 404)


async def test_a_refused_submit_stores_none_of_its_uploads(server: Server) -> None:
    """The upload in a multipart request is stored only once every input has been accepted."""
    full = await _alice_file(server)
    mine = png((1, 2, 3))
    async with server.client(server.bob) as bob:
        response = await bob.post(
            "/api/v1/runs",
            data={"jobId": "postcard", "inputs": f'{{"caption": "artifact:{full["sha256"]}"}}'},
            files={"photo": ("bob.png", mine, "image/png")},
        )
        assert_problem(response, 422)
    assert not server.app.artifacts.exists(hashlib.sha256(mine).hexdigest())


async def test_the_owner_may_use_the_short_form_and_artifact_uris(server: Server) -> None:
    full = await _alice_file(server)
    async with server.client(server.alice) as alice:
        short = {"kind": "artifact", "sha256": full["sha256"]}
        response = await alice.post("/api/v1/runs", json={"jobId": "postcard", "inputs": {"photo": short, "width": 64}})
        assert response.status_code == 201, response.text
        run = response.json()
        assert run["jobInputs"]["photo"]["filename"] == "alice-holiday-2024.png"  # written out in full
        assert run["jobInputs"]["photo"]["mimeType"] == "image/png"
        assert (await server.app.wait(run["jobRunId"], 60))["status"] == "completed"
        fetched = await alice.post("/api/v1/runs", json={"toolId": "media.fetch", "inputs": {"source": f"artifact:{full['sha256']}"}})
        assert fetched.status_code == 201, fetched.text
        done = await server.app.wait(fetched.json()["jobRunId"], 60)
        assert done["status"] == "completed" and done["finalOutputs"]["file"]["sha256"] == full["sha256"]
        grid = await alice.post("/api/v1/runs", json={"toolId": "image.grid", "inputs": {"images": [short, short]}})
        assert grid.status_code == 201, grid.text
        assert (await server.app.wait(grid.json()["jobRunId"], 60))["status"] == "completed"


async def test_a_template_cannot_turn_text_into_another_accounts_artifact(server: Server) -> None:
    """The submit check sees only text; the step is refused when it runs, before the tool reads."""
    full = await _alice_file(server)
    sha = full["sha256"]
    definition = {
        "jobId": "fetch_by_id", "inputSchema": {"id": {"type": "string", "required": True}},
        "outputSchema": {"file": {"type": "file", "sourceStepId": "fetch", "sourceOutputName": "file"}},
        "steps": [
            {"stepId": "fetch", "toolId": "media.fetch",
             "inputMappings": [{"template": "artifact:{{ job.id }}", "targetInputName": "source"}]},
        ],
    }
    grid = {
        "jobId": "grid_by_id", "inputSchema": {"id": {"type": "string", "required": True}},
        "steps": [
            {"stepId": "grid", "toolId": "image.grid",
             "inputMappings": [{"template": '[{"kind": "artifact", "sha256": "{{ job.id }}"}]', "targetInputName": "images"}]},
        ],
    }
    async with server.client(ADMIN_KEY) as admin:
        for job in (definition, grid):
            assert (await admin.post("/api/v1/jobs", json=job)).status_code == 201
    async with server.client(server.bob) as bob:
        for job_id in ("fetch_by_id", "grid_by_id"):
            response = await bob.post("/api/v1/runs", json={"jobId": job_id, "inputs": {"id": sha}})
            assert response.status_code == 201, response.text
            run = await server.app.wait(response.json()["jobRunId"], 60)
            assert run["status"] == "failed"
            error = run["stepStatuses"][0]["error"]
            assert error["code"] == "forbidden_artifact" and "not one of this run's account's" in error["message"]
            assert run["finalOutputs"] in (None, {})
        assert_problem(await bob.get(f"/api/v1/artifacts/{sha}"), 404)
    async with server.client(server.alice) as alice:  # the owner's run of the same job works
        response = await alice.post("/api/v1/runs", json={"jobId": "fetch_by_id", "inputs": {"id": sha}})
        assert (await server.app.wait(response.json()["jobRunId"], 60))["status"] == "completed"


async def test_the_same_bytes_keep_each_accounts_own_file_name(server: Server) -> None:
    data = png((77, 77, 77))
    async with server.client(server.alice) as alice:
        mine = await upload(alice, data, "alice-private-name.png")
    async with server.client(server.bob) as bob:
        theirs = await upload(bob, data, "bob.png")
        assert theirs["sha256"] == mine["sha256"] and theirs["filename"] == "bob.png"
        response = await bob.get(f"/api/v1/artifacts/{theirs['sha256']}?download=true")
        assert response.status_code == 200 and "bob.png" in response.headers["content-disposition"]
        assert "alice" not in response.headers["content-disposition"]
        short = {"kind": "artifact", "sha256": theirs["sha256"]}
        run = (await bob.post("/api/v1/runs", json={"toolId": "media.fetch", "inputs": {"source": short}})).json()
        assert run["jobInputs"]["source"]["filename"] == "bob.png"
        done = await server.app.wait(run["jobRunId"], 60)
        assert "alice" not in str(done)
    async with server.client(server.alice) as alice:
        response = await alice.get(f"/api/v1/artifacts/{mine['sha256']}?download=true")
        assert "alice-private-name.png" in response.headers["content-disposition"]
    # nothing on disk carries a file name either (the sidecar keeps what the content says)
    sidecar = server.app.artifacts.path(mine["sha256"]).with_suffix(".json").read_text()
    assert "alice" not in sidecar and "bob" not in sidecar


async def test_an_explicit_grant_shares_one_artifact(server: Server) -> None:
    full = await _alice_file(server)
    other = None
    async with server.client(server.alice) as alice:
        other = await upload(alice, png((9, 9, 9)), "not-shared.png")
        assert_problem(await alice.post(f"/api/v1/artifacts/{full['sha256']}/grants", json={"accountId": "nobody"}), 422)
        response = await alice.post(f"/api/v1/artifacts/{full['sha256']}/grants", json={"accountId": "bob"})
        assert response.status_code == 204, response.text
    async with server.client(server.bob) as bob:
        assert (await bob.get(f"/api/v1/artifacts/{full['sha256']}")).status_code == 200
        response = await bob.post("/api/v1/runs", json={"toolId": "image.grid", "inputs": {"images": [full]}})
        assert response.status_code == 201, response.text
        # a grant is for that artifact only, and bob cannot grant what he does not hold
        assert_problem(await bob.get(f"/api/v1/artifacts/{other['sha256']}"), 404)
        assert_problem(await bob.post(f"/api/v1/artifacts/{other['sha256']}/grants", json={"accountId": "bob"}), 404)


async def test_every_front_end_refuses_another_accounts_artifact(server: Server, tmp_path: Path) -> None:
    """The web form, the command line and the Telegram bot all submit through ``App.submit``."""
    full = await _alice_file(server)
    sha = full["sha256"]
    app = server.app
    # the command line (the bot calls App.submit the same way, with origin telegram)
    with pytest.raises(CliError) as refused:
        await cli_submit(app, "media.fetch", [f"source=artifact:{sha}"], "bob")
    assert "source" in str(refused.value.details)
    # the command line's fork (`runs retry RUN -i …`) of one of Bob's own runs
    own = await app.submit("test.instant", {"value": 1}, account_id="bob")
    await app.wait(own, 60)
    with pytest.raises(CliError) as refused:
        await retry_or_fork(app, own, "bob", None, [f"note=artifact:{sha}"])
    assert "note" in str(refused.value.details) and "not one of yours" in str(refused.value.details)
    forks = [r for r in (await app.list_runs("bob")).items if r["jobRunId"] != own]
    assert forks == []
    for origin in ({"platform": "telegram", "chatId": 1}, {"platform": "cli"}):
        with pytest.raises(InputError) as problem:
            await app.submit("image.grid", {"images": [{"kind": "artifact", "sha256": sha}]}, account_id="bob", origin=origin)
        assert problem.value.problems[0].field == "images[0]"
    # the web form
    async with server.client(follow_redirects=False) as web:
        await web_login(web, server.bob)
        page = (await web.get("/new/image.grid")).text
        csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        response = await web.post("/new/image.grid", data={"csrf": csrf, "images": f'[{{"kind":"artifact","sha256":"{sha}"}}]'})
        assert response.status_code == 422 and "not one of yours" in response.text
    assert [r["jobRunId"] for r in (await app.list_runs("bob")).items] == [own]


async def test_signed_media_urls_expire_and_are_bound_to_what_they_serve(tmp_path: Path, db_url: str) -> None:
    async with running_server(tmp_path / "home", database_url=db_url, public_base_url="http://backend.test",
                              media_url_ttl_seconds=60) as server:
        full = await _alice_file(server)
        other = await _alice_file_of(server, (1, 1, 1))
        app = server.app
        from toolweave.model.records import ArtifactRef

        url = app.host.media_url(ArtifactRef.model_validate(full))
        assert url.startswith("http://backend.test/media/")
        path = url.removeprefix("http://backend.test")
        query = dict(httpx.URL(url).params)
        assert 55 <= int(query["expires"]) - time.time() <= 60  # the setting
        async with server.client() as anyone:  # no key: the URL itself is the credential
            served = await anyone.get(path)
            assert served.status_code == 200 and served.headers["content-type"] == "image/png"
            assert served.content == app.artifacts.read(full["sha256"])
            # the same token for another artifact, another type or a later expiry: refused
            for changed in (
                path.replace(full["sha256"], other["sha256"]),
                path.replace("type=image%2Fpng", "type=text%2Fhtml"),
                path.replace(f"expires={query['expires']}", f"expires={int(query['expires']) + 3600}"),
            ):
                assert changed != path
                assert_problem(await anyone.get(changed), 404)
            # expired
            old = app.media_path(full["sha256"], "image/png", now=time.time() - 61)
            assert_problem(await anyone.get(old), 404)
            # the old form (an HMAC of the hash alone) is no credential
            legacy = app.engine.webhook_token("artifact", full["sha256"])
            assert_problem(await anyone.get(f"/media/{full['sha256']}?token={legacy}"), 422)
            assert_problem(await anyone.get(
                f"/media/{full['sha256']}?token={legacy}&type=image/png&expires={int(time.time()) + 60}"), 404)


async def _alice_file_of(server: Server, color: tuple[int, int, int]) -> dict[str, Any]:
    async with server.client(server.alice) as alice:
        return await upload(alice, png(color), "other.png")
