"""Definitions are safe to load (issue 10, item 7).

- A 450-byte YAML alias bomb made ``toolweave validate`` take 31 s and 3.2 GB and print 800 MB: the
  expansion of aliases is now counted before anything is built, and the file is refused with one
  clear problem.
- A job registered through the API with the id ``../../../tmp/x`` was accepted (and lost on restart):
  ids are checked when a definition is read, and the problem names the id.
- Jobs registered through the API reached other server processes only after a restart: they live
  in the store now, and every process takes in what it has not seen before it answers.
"""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.helpers.loopback import serve_asgi

from toolweave.api import create_app
from toolweave.app import App, UnknownDefinition
from toolweave.settings import Settings

ALIAS_BOMB = """\
toolId: bomb
service: builtin
metadata:
  a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
  b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
  c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
  d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
  e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
  f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
  g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
  h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
  i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
inputSchema: {x: {type: json, default: *i}}
"""
ADMIN_KEY = "tw_admin_for_tests_only_0123456789"


def _at_most_one_gigabyte() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def test_an_alias_bomb_is_refused_with_one_clear_problem(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(ALIAS_BOMB)
    assert len(ALIAS_BOMB.encode()) < 460
    # a regression would need gigabytes: a gigabyte of address space and a minute make it fail fast
    done = subprocess.run(
        [sys.executable, "-m", "toolweave.cli", "validate", str(bomb)], capture_output=True, text=True,
        timeout=60, preexec_fn=_at_most_one_gigabyte,
        env={**os.environ, "TOOLWEAVE_HOME": str(tmp_path / "home"), "COLUMNS": "200"},
    )
    assert done.returncode != 0
    out = done.stdout + done.stderr
    assert "aliases expand to more than 100,000 values" in out and "Traceback" not in out
    assert len(out) < 2000


@pytest.mark.parametrize(("text", "message"), [
    ("jobId: loop\nsteps: &s [*s]\n", "an alias refers to the anchor that contains it"),
    ("jobId: deep\nmetadata: " + "[" * 5000 + "]" * 5000 + "\n", "is nested too deeply to read"),
])
def test_self_referring_aliases_and_deep_nesting_are_problems_not_tracebacks(
    tmp_path: Path, text: str, message: str
) -> None:
    (tmp_path / "defs").mkdir()
    (tmp_path / "defs" / "odd.yaml").write_text(text)
    app = App(Settings(home=tmp_path / "home", definitions=[tmp_path / "defs"]))
    try:
        assert [message in p.message for p in app.definition_problems] == [True]
    finally:
        app.store.close()


# --- registration through the API --------------------------------------------------------------

JOB: dict[str, Any] = {
    "jobId": "shared_job",
    "inputSchema": {"value": {"type": "integer", "default": 1}},
    "steps": [{"stepId": "a", "toolId": "test.instant", "inputMappings": [{"sourceJobInput": "value", "targetInputName": "value"}]}],
}


def make_app(home: Path, db_url: str) -> App:
    return App(Settings(home=home, database_url=db_url, test_tools=True, admin_key=ADMIN_KEY))


@pytest.fixture
async def server(db_url: str, tmp_path: Path) -> AsyncIterator[tuple[App, str]]:
    app = make_app(tmp_path / "home-a", db_url)
    try:
        api = create_app(app, run_worker=False)
        async with serve_asgi(api) as url:
            yield app, url
    finally:
        await app.aclose()


async def test_a_job_id_with_path_characters_is_refused_naming_the_id(server: tuple[App, str], tmp_path: Path) -> None:
    app, url = server
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as client:
        response = await client.post("/api/v1/jobs", json={**JOB, "jobId": "../../../tmp/x"})
    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    assert error["field"] == "jobId" and "'../../../tmp/x'" in error["message"]
    assert app.store.read_sync(lambda tx: tx.all("SELECT job_id FROM registered_jobs")) == []
    assert not (tmp_path / "home-a" / "registered").exists()


async def test_a_job_registered_through_one_server_is_known_to_another_at_once(
    server: tuple[App, str], db_url: str, tmp_path: Path
) -> None:
    app_a, url_a = server
    app_b = make_app(tmp_path / "home-b", db_url)  # another process on the same store
    try:
        with pytest.raises(UnknownDefinition):
            await app_b.submit("shared_job", {}, account_id="acme")
        async with httpx.AsyncClient(base_url=url_a, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as client:
            assert (await client.post("/api/v1/jobs", json=JOB)).status_code == 201
        run_id = await app_b.submit("shared_job", {"value": 2}, account_id="acme")  # no restart
        assert (await app_b.get_run(run_id))["jobDefinitionId"] == "shared_job"

        # a new version registered through B is what A lists and runs next
        new = {**JOB, "version": "2", "description": "the second version"}
        defn, problems = await app_b.register_job(new)
        assert problems == [] and defn is not None
        async with httpx.AsyncClient(base_url=url_a, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as client:
            listed = (await client.get("/api/v1/jobs/shared_job")).json()
        assert listed["version"] == "2" and listed["description"] == "the second version"
        run_a = await app_a.submit("shared_job", {}, account_id="acme")
        assert (await app_a.get_run(run_a))["version"] == "2"

        # the same version with other content is refused, whichever process registered it first
        _, problems = await app_a.register_job({**new, "description": "something else"})
        assert [p.path for p in problems] == ["version"]
    finally:
        await app_b.aclose()
    app_c = make_app(tmp_path / "home-c", db_url)  # a process started later knows both versions
    try:
        assert app_c.registry.versions("shared_job") == ["1", "2"]
    finally:
        await app_c.aclose()


async def test_concurrent_submits_share_one_read_of_the_registered_jobs(
    server: tuple[App, str], db_url: str, tmp_path: Path
) -> None:
    """A server's concurrent submits share one read of what other processes registered (the
    callers of one turn of the event loop), and each still knows a job registered before it
    called; a caller cancelled while it waits takes nothing from the others."""
    app_a, url_a = server
    app_b = make_app(tmp_path / "home-b", db_url)  # another process on the same store
    try:
        await app_b.sync_definitions()
        reads = app_b.definition_reads
        async with httpx.AsyncClient(base_url=url_a, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as client:
            assert (await client.post("/api/v1/jobs", json=JOB)).status_code == 201
        run_ids = await asyncio.gather(*(app_b.submit("shared_job", {"value": i}, account_id="acme") for i in range(20)))
        assert len(set(run_ids)) == 20
        assert app_b.definition_reads == reads + 1

        await app_b.register_job({**JOB, "version": "2"})
        calls = [asyncio.ensure_future(app_a.sync_definitions()) for _ in range(5)]
        await asyncio.sleep(0)
        calls[0].cancel()
        done = await asyncio.gather(*calls, return_exceptions=True)
        assert isinstance(done[0], asyncio.CancelledError) and done[1:] == [None] * 4
        assert app_a.registry.versions("shared_job") == ["1", "2"]
        before = app_a.definition_reads
        await app_a.sync_definitions()  # a later call reads again
        assert app_a.definition_reads == before + 1
    finally:
        await app_b.aclose()


async def test_jobs_registered_as_files_before_are_brought_into_the_store(db_url: str, tmp_path: Path) -> None:
    import json

    folder = tmp_path / "home" / "registered"
    folder.mkdir(parents=True)
    (folder / "shared_job@1.json").write_text(json.dumps(JOB))
    app = make_app(tmp_path / "home", db_url)
    try:
        rows = app.store.read_sync(lambda tx: tx.all("SELECT job_id, version FROM registered_jobs"))
        assert [(r.job_id, r.version) for r in rows] == [("shared_job", "1")]
        assert app.registry.get_job("shared_job") is not None
    finally:
        await app.aclose()
