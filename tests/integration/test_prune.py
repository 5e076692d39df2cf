"""Retention on real stores: ``App.prune`` removes finished runs older than the cutoff with all their
rows, and the artifacts (records and files) nothing refers to any more; it keeps what a remaining
run, another account or a cache entry still uses, runs still going and the trees they belong to."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest
from tests.helpers.accounts import png
from tests.helpers.invariants import assert_store_consistent
from tests.integration.test_engine import app, job, register, run_all

from toolweave.app import App, NotFound
from toolweave.model.status import TaskKind
from toolweave.store import tasks as tasks_q
from toolweave.store.db import in_list

__all__ = ["app"]  # the fixture

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "assets" / "sample.png"
DAY = 86400.0
MONTH = 30 * DAY


def brighten(cache: str | None = None) -> Any:
    """photo → adjust (brightness) → grey (saturation 0): two image outputs per run."""
    adjust: dict[str, Any] = {
        "stepId": "adjust", "toolId": "image.adjust",
        "inputMappings": [{"sourceJobInput": "photo", "targetInputName": "image"},
                          {"sourceJobInput": "brightness", "targetInputName": "brightness"}],
    }
    if cache:
        adjust["cache"] = cache
    return job({
        "jobId": "brighten",
        "inputSchema": {"photo": {"type": "image", "required": True}, "brightness": {"type": "number", "default": 1.5}},
        "outputSchema": {"image": {"type": "image", "sourceStepId": "grey", "sourceOutputName": "image"}},
        "steps": [
            adjust,
            {"stepId": "grey", "toolId": "image.adjust",
             "inputMappings": [{"sourceStepId": "adjust", "sourceOutputName": "image", "targetInputName": "image"},
                               {"value": 0.0, "targetInputName": "saturation"}]},
        ],
    })


def age(app: App, run_ids: list[str], days: float = 40) -> None:
    """Make runs (and their nested runs, their artifact records) look ``days`` older."""
    shift = days * DAY

    def tx_fn(tx: Any) -> None:
        ids = list(run_ids)
        level = list(run_ids)
        while level:
            marks, params = in_list("p", level)
            level = [r.run_id for r in tx.all(f"SELECT run_id FROM runs WHERE parent_run_id IN {marks}", params)]
            ids += level
        marks, params = in_list("r", ids)
        tx.q(
            f"UPDATE runs SET created_at = created_at - :d, finished_at = finished_at - :d WHERE run_id IN {marks}",
            {"d": shift, **params},
        )
        tx.q(f"UPDATE artifacts SET created_at = created_at - :d WHERE run_id IN {marks}", {"d": shift, **params})
        return [r.sha256 for r in tx.all(f"SELECT sha256 FROM artifacts WHERE run_id IN {marks}", params)]

    age_files(app, app.store.run_sync(tx_fn), days)


def age_files(app: App, shas: list[str], days: float = 40) -> None:
    """Files written long ago (retention leaves files used in the last minutes alone)."""
    for sha in shas:
        when = (app.artifacts.mtime(sha) or time.time()) - days * DAY
        os.utime(app.artifacts.path(sha), (when, when))


def age_upload(app: App, account: str, sha: str, days: float = 40) -> None:
    app.store.run_sync(lambda tx: tx.q(
        "UPDATE artifacts SET created_at = created_at - :d WHERE account_id = :a AND sha256 = :s",
        {"d": days * DAY, "a": account, "s": sha},
    ))
    age_files(app, [sha], days)


def count(app: App, sql: str, **params: Any) -> int:
    row = app.store.read_sync(lambda tx: tx.one(sql, params))
    return int(row.n)


def shas(run: dict[str, Any]) -> set[str]:
    found = {g["outputs"]["image"]["sha256"] for g in run["generations"] if g.get("outputs")}
    return found


async def finished(app: App, inputs: dict[str, Any], account: str = "alice") -> dict[str, Any]:
    run_id = await app.submit("brighten", inputs, account_id=account)
    await run_all(app)
    run = await app.get_run(run_id)
    assert run["status"] == "completed", run
    return run


async def test_old_finished_runs_go_with_every_row_and_the_files_nothing_else_uses(app: App) -> None:
    register(app, brighten())
    photo = await app.put_media(SAMPLE.read_bytes(), "alice", filename="sample.png")
    old = await finished(app, {"photo": photo})
    recent = await finished(app, {"photo": photo, "brightness": 0.5})
    waiting_id = await app.submit("brighten", {"photo": photo, "brightness": 2.0}, account_id="alice")  # no worker
    age(app, [old["jobRunId"], waiting_id])
    age_upload(app, "alice", photo["sha256"])
    outputs = shas(old)
    assert len(outputs) == 2 and all(app.artifacts.exists(s) for s in outputs)

    dry = await app.prune(MONTH, dry_run=True)
    assert dry["dryRun"] and dry["runs"] == 1 and dry["rows"]["events"] > 0 and dry["rows"]["generations"] == 2
    assert dry["rows"]["stepRuns"] == 2 and dry["artifactRecords"] == 2 and dry["files"] == 2 and dry["bytes"] > 0
    assert (await app.get_run(old["jobRunId"]))["status"] == "completed"  # a dry run removes nothing
    assert all(app.artifacts.exists(s) for s in outputs)

    report = await app.prune(MONTH)
    assert {k: report[k] for k in ("runs", "rows", "artifactRecords", "files", "bytes")} == {
        k: dry[k] for k in ("runs", "rows", "artifactRecords", "files", "bytes")
    }
    with pytest.raises(NotFound):
        await app.get_run(old["jobRunId"])
    assert not any(app.artifacts.exists(s) for s in outputs)
    for sha in outputs:
        with pytest.raises(NotFound):
            await app.artifact(sha, "alice")
    for table in ("events", "step_runs", "generations", "notifications", "tasks"):
        assert count(app, f"SELECT COUNT(*) AS n FROM {table} WHERE run_id = :r", r=old["jobRunId"]) == 0
    # the run still queued stays, however old; so do the upload it uses and the recent run
    assert (await app.get_run(waiting_id))["status"] == "queued"
    assert (await app.get_run(recent["jobRunId"]))["status"] == "completed"
    assert app.artifacts.exists(photo["sha256"]) and await app.artifact(photo["sha256"], "alice")
    assert_store_consistent(app.store, app.artifacts)

    again = await app.prune(MONTH)  # nothing left to do
    assert again["runs"] == 0 and again["artifactRecords"] == 0 and again["files"] == 0


async def test_an_artifact_a_remaining_run_uses_stays(app: App) -> None:
    register(app, brighten())
    photo = await app.put_media(SAMPLE.read_bytes(), "alice", filename="sample.png")
    old = await finished(app, {"photo": photo})
    made = old["finalOutputs"]["image"]
    newer = await finished(app, {"photo": made})  # the old run's output is this one's input
    age(app, [old["jobRunId"]])
    age_upload(app, "alice", photo["sha256"])

    report = await app.prune(MONTH)
    assert report["runs"] == 1
    with pytest.raises(NotFound):
        await app.get_run(old["jobRunId"])
    path, _ = await app.artifact(made["sha256"], "alice")  # still held, still on disk
    assert path.read_bytes() and (await app.get_run(newer["jobRunId"]))["status"] == "completed"
    # the photo only the pruned run used went; the intermediate image only it made too
    assert not app.artifacts.exists(photo["sha256"])
    assert_store_consistent(app.store, app.artifacts)


async def test_another_accounts_uploads_go_only_when_old_and_unreferenced(app: App) -> None:
    register(app, brighten())
    data = SAMPLE.read_bytes()
    alice_photo = await app.put_media(data, "alice", filename="mine.png")
    alice_run = await finished(app, {"photo": alice_photo})
    bob_same = await app.put_media(data, "bob", filename="bobs.png")  # the same bytes, bob's record (recent)
    bob_old = await app.put_media(png((255, 0, 0)), "bob", filename="old.png")
    bob_new = await app.put_media(png((0, 255, 0)), "bob", filename="new.png")
    bob_used = await app.put_media(png((0, 0, 255)), "bob", filename="used.png")
    bob_run = await finished(app, {"photo": bob_used}, account="bob")
    age(app, [alice_run["jobRunId"]])
    for account, value in (("alice", alice_photo), ("bob", bob_old), ("bob", bob_used)):
        age_upload(app, account, value["sha256"])

    await app.prune(MONTH)
    with pytest.raises(NotFound):
        await app.artifact(alice_photo["sha256"], "alice")  # alice's record went with her old run
    path, ref = await app.artifact(bob_same["sha256"], "bob")  # bob's record of the same bytes stays, file too
    assert path.read_bytes() == data and ref.filename == "bobs.png"
    with pytest.raises(NotFound):
        await app.artifact(bob_old["sha256"], "bob")  # old, and nothing uses it
    assert not app.artifacts.exists(bob_old["sha256"])
    assert (await app.artifact(bob_new["sha256"], "bob"))[0].exists()  # recent
    assert (await app.artifact(bob_used["sha256"], "bob"))[0].exists()  # old, but bob's recent run uses it
    assert (await app.get_run(bob_run["jobRunId"], "bob"))["status"] == "completed"
    assert_store_consistent(app.store, app.artifacts)


async def test_the_cache_entries_of_pruned_runs_are_dropped_and_a_later_run_misses(app: App) -> None:
    register(app, brighten(cache="7d"))
    photo = await app.put_media(SAMPLE.read_bytes(), "alice", filename="sample.png")
    first = await finished(app, {"photo": photo})
    hit = await finished(app, {"photo": photo})
    assert [g["cacheHit"] for g in hit["generations"] if g["stepId"] == "adjust"] == [True]
    await app.prune(MONTH)  # nothing old yet: the cache stays
    assert count(app, "SELECT COUNT(*) AS n FROM step_cache") == 1
    age(app, [first["jobRunId"], hit["jobRunId"]])
    age_upload(app, "alice", photo["sha256"])
    photo = await app.put_media(SAMPLE.read_bytes(), "alice", filename="sample.png")  # uploaded again today

    report = await app.prune(MONTH)
    assert report["runs"] == 2 and report["rows"]["cacheEntries"] == 1
    assert count(app, "SELECT COUNT(*) AS n FROM step_cache") == 0
    later = await finished(app, {"photo": photo})
    adjust = [g for g in later["generations"] if g["stepId"] == "adjust"]
    assert [g["cacheHit"] for g in adjust] == [False]  # a miss: the tool ran, its output is on disk again
    assert app.artifacts.exists(adjust[0]["outputs"]["image"]["sha256"])
    assert_store_consistent(app.store, app.artifacts)


async def test_a_fork_whose_origin_was_pruned_keeps_what_it_reused(app: App) -> None:
    register(app, brighten())
    photo = await app.put_media(SAMPLE.read_bytes(), "alice", filename="sample.png")
    origin = await finished(app, {"photo": photo})
    fork_id = await app.fork(origin["jobRunId"], "alice", from_step="grey")
    await run_all(app)
    age(app, [origin["jobRunId"]])
    age_upload(app, "alice", photo["sha256"])

    await app.prune(MONTH)
    fork = await app.get_run(fork_id, "alice")
    assert fork["status"] == "completed" and fork["forkedFromRunId"] == origin["jobRunId"]
    assert fork["forkedFromPruned"] is True
    reused = next(s for s in fork["stepStatuses"] if s["stepId"] == "adjust")
    assert reused["reusedFromRunId"] == origin["jobRunId"] and reused["reusedFromPruned"] is True
    assert (await app.artifact(reused["outputs"]["image"]["sha256"], "alice"))[0].exists()
    assert_store_consistent(app.store, app.artifacts)


async def test_a_tree_with_a_run_still_going_or_worked_on_stays(app: App) -> None:
    register(app, brighten())
    register(app, job({
        "jobId": "outer",
        "inputSchema": {"photo": {"type": "image", "required": True}},
        "outputSchema": {"image": {"type": "image", "sourceStepId": "inner", "sourceOutputName": "image"}},
        "steps": [{"stepId": "inner", "jobId": "brighten",
                   "inputMappings": [{"sourceJobInput": "photo", "targetInputName": "photo"}]}],
    }))
    photo = await app.put_media(SAMPLE.read_bytes(), "alice", filename="sample.png")
    outer_id = await app.submit("outer", {"photo": photo}, account_id="alice")
    other = await finished(app, {"photo": photo})
    await run_all(app)
    outer = await app.get_run(outer_id)
    assert outer["status"] == "completed"
    child = outer["stepStatuses"][0]["childRunId"]
    age(app, [outer_id, other["jobRunId"]])
    # the nested run is (made to look) still going; the other run still has a callback to deliver
    app.store.run_sync(lambda tx: tx.q("UPDATE runs SET status = 'running' WHERE run_id = :r", {"r": child}))
    app.store.run_sync(lambda tx: tasks_q.enqueue(tx, TaskKind.NOTIFY, run_id=other["jobRunId"], ref_id="n-1", now=time.time()))

    dry = await app.prune(MONTH, dry_run=True)
    report = await app.prune(MONTH)
    assert dry["runs"] == report["runs"] == 0 and report["runsKept"] == 2
    assert (await app.get_run(outer_id))["status"] == "completed"
    assert (await app.get_run(child))["status"] == "running"
    assert (await app.get_run(other["jobRunId"]))["status"] == "completed"
    app.store.run_sync(lambda tx: tx.q("UPDATE runs SET status = 'completed' WHERE run_id = :r", {"r": child}))
    report = await app.prune(MONTH)
    assert report["runs"] == 2 and report["runsKept"] == 1  # the tree goes whole; the other still waits
    for run_id in (outer_id, child):
        with pytest.raises(NotFound):
            await app.get_run(run_id)


async def test_prune_removes_in_batches_and_a_dry_run_counts_what_a_prune_removes(app: App) -> None:
    register(app, brighten())
    photo = await app.put_media(SAMPLE.read_bytes(), "alice", filename="sample.png")
    ids = []
    for i in range(7):
        ids.append((await finished(app, {"photo": photo, "brightness": 0.5 + i / 10}))["jobRunId"])
    age(app, ids)
    age_upload(app, "alice", photo["sha256"])
    from toolweave.retention import Pruner

    dry = (await Pruner(app.store, app.artifacts, batch_runs=2, batch_artifacts=3).prune(MONTH, dry_run=True)).as_dict()
    done = (await Pruner(app.store, app.artifacts, batch_runs=2, batch_artifacts=3).prune(MONTH)).as_dict()
    assert done["runs"] == 7 and done["batches"] >= 4
    assert {k: done[k] for k in ("rows", "artifactRecords", "files", "bytes")} == {
        k: dry[k] for k in ("rows", "artifactRecords", "files", "bytes")
    }
    assert done["files"] == 15  # two images a run, and the photo
    assert_store_consistent(app.store, app.artifacts)


async def test_pruned_runs_and_artifacts_answer_404_and_a_fork_page_shows_its_origin_pruned(
    db_url: str, tmp_path: Path
) -> None:
    from tests.helpers.accounts import web_login
    from tests.integration.test_api import assert_problem, running_server, submit_postcard

    async with running_server(tmp_path / "home", database_url=db_url) as server:
        app = server.app
        async with server.client(server.alice) as c:
            origin = await submit_postcard(c, caption="first")
            done = await app.wait(origin["jobRunId"], 30)
            response = await c.post(f"/api/v1/runs/{origin['jobRunId']}/retry", json={"inputs": {"caption": "second"}})
            assert response.status_code == 201, response.text
            fork = await app.wait(response.json()["jobRunId"], 30)
            assert done["status"] == fork["status"] == "completed"
            age(app, [origin["jobRunId"]])
            app.store.run_sync(lambda tx: tx.q("UPDATE artifacts SET created_at = created_at - :d", {"d": 40 * DAY}))
            age_files(app, [r.sha256 for r in app.store.read_sync(lambda tx: tx.all("SELECT sha256 FROM artifacts"))])
            report = await app.prune(MONTH)
            assert report["runs"] == 1 and report["files"] >= 1

            gone = done["finalOutputs"]["postcard"]["sha256"]  # the origin's stamp: the fork made its own
            kept = done["finalOutputs"]["thumbnail"]["sha256"]  # reused by the fork
            assert gone != fork["finalOutputs"]["postcard"]["sha256"]
            assert_problem(await c.get(f"/api/v1/runs/{origin['jobRunId']}"), 404)
            assert_problem(await c.get(f"/api/v1/runs/{origin['jobRunId']}/events"), 404)
            assert_problem(await c.post(f"/api/v1/runs/{origin['jobRunId']}/retry", json={"fromStep": "stamp"}), 404)
            assert_problem(await c.get(f"/api/v1/artifacts/{gone}"), 404)
            assert (await c.get(f"/api/v1/artifacts/{kept}")).status_code == 200
            detail = (await c.get(f"/api/v1/runs/{fork['jobRunId']}")).json()
            assert detail["forkedFromRunId"] == origin["jobRunId"] and detail["forkedFromPruned"] is True
            assert {s["stepId"]: s["reusedFromPruned"] for s in detail["stepStatuses"]} == {
                "resize": True, "stamp": None, "thumbnail": True,
            }
        async with server.client() as web:
            await web_login(web, server.alice)
            page = await web.get(f"/runs/{fork['jobRunId']}")
            assert page.status_code == 200
            assert 'data-role="pruned"' in page.text and f'href="/runs/{origin["jobRunId"]}"' not in page.text
            assert (await web.get(f"/runs/{origin['jobRunId']}")).status_code == 404
            assert (await web.get(f"/runs/{origin['jobRunId']}/live")).status_code == 404


def expire_lease(app: App) -> None:
    app.store.run_sync(lambda tx: tx.q("UPDATE kv SET expires_at = 0 WHERE namespace = 'prune.lease'"))


async def test_workers_prune_periodically_one_at_a_time(db_url: str, tmp_path: Path) -> None:
    from tests.helpers.worker import running_worker

    from toolweave.settings import Settings

    app = App(Settings(home=tmp_path / "home", database_url=db_url, test_tools=True, retention_days=30,
                       prune_every_minutes=60))
    try:
        register(app, brighten())
        photo = await app.put_media(SAMPLE.read_bytes(), "alice", filename="sample.png")
        first = await finished(app, {"photo": photo})  # its worker pruned at its start (nothing was old)
        age(app, [first["jobRunId"]])
        one, two = app.make_worker(2), app.make_worker(2)
        assert one.housekeeping is not None and two.housekeeping is not None
        assert await one.housekeeping(one.worker_id) is None  # pruned less than an interval ago, elsewhere
        expire_lease(app)  # an interval later
        report = await one.housekeeping(one.worker_id)
        assert report is not None and report.rows["runs"] == 1
        second = await finished(app, {"photo": photo})
        age(app, [second["jobRunId"]])
        assert await two.housekeeping(two.worker_id) is None
        assert await one.housekeeping(one.worker_id) is None  # by itself too
        assert (await app.get_run(second["jobRunId"]))["status"] == "completed"
        # an interval later (the lease made to expire), a running worker prunes at its start
        expire_lease(app)
        async with running_worker(app):
            for _ in range(100):
                if count(app, "SELECT COUNT(*) AS n FROM runs WHERE run_id = :r", r=second["jobRunId"]) == 0:
                    break
                await asyncio.sleep(0.05)
        with pytest.raises(NotFound):
            await app.get_run(second["jobRunId"])
        assert_store_consistent(app.store, app.artifacts)
    finally:
        await app.aclose()


async def test_a_file_used_moments_ago_waits_for_a_later_prune_and_one_held_again_stays(app: App) -> None:
    first = await app.put_media(png((1, 2, 3)), "alice", filename="a.png")
    second = await app.put_media(png((4, 5, 6)), "alice", filename="b.png")
    for value in (first, second):  # old records, files written moments ago
        app.store.run_sync(lambda tx, v=value: tx.q(
            "UPDATE artifacts SET created_at = created_at - :d WHERE sha256 = :s", {"d": 40 * DAY, "s": v["sha256"]}))
    dry = await app.prune(MONTH, dry_run=True)
    assert dry["artifactRecords"] == 2 and dry["files"] == 0 and dry["filesDeferred"] == 2
    report = await app.prune(MONTH)
    assert report["artifactRecords"] == 2 and report["files"] == 0 and report["filesDeferred"] == 2
    assert app.artifacts.exists(first["sha256"]) and app.artifacts.exists(second["sha256"])
    queued = "SELECT COUNT(*) AS n FROM kv WHERE namespace = 'prune.files'"
    assert count(app, queued) == 2
    with pytest.raises(NotFound):
        await app.artifact(first["sha256"], "alice")

    age_files(app, [first["sha256"], second["sha256"]])
    await app.put_media(png((4, 5, 6)), "bob", filename="bobs.png")  # the second file, held again
    report = await app.prune(MONTH)
    assert report["files"] == 1 and report["filesDeferred"] == 0 and count(app, queued) == 0
    assert not app.artifacts.exists(first["sha256"])
    assert (await app.artifact(second["sha256"], "bob"))[0].read_bytes() == png((4, 5, 6))
    assert_store_consistent(app.store, app.artifacts)


async def test_expired_cache_entries_go_and_the_recent_runs_that_made_them_stay(app: App) -> None:
    register(app, brighten(cache="1h"))
    photo = await app.put_media(SAMPLE.read_bytes(), "alice", filename="sample.png")
    run = await finished(app, {"photo": photo})
    assert count(app, "SELECT COUNT(*) AS n FROM step_cache") == 1
    app.store.run_sync(lambda tx: tx.q("UPDATE step_cache SET expires_at = :t", {"t": time.time() - 1}))
    report = await app.prune(MONTH)
    assert report["expiredCacheEntries"] == 1 and report["runs"] == 0
    assert count(app, "SELECT COUNT(*) AS n FROM step_cache") == 0
    assert (await app.get_run(run["jobRunId"]))["status"] == "completed"


async def test_the_check_under_locks_sees_what_changed_since_the_read(app: App) -> None:
    """The write transaction looks only at runs that may have changed since the read that found an
    artifact unmentioned: a run submitted meanwhile with it as an input keeps it."""
    from toolweave.store import prune as prune_q

    register(app, brighten())
    photo = await app.put_media(SAMPLE.read_bytes(), "alice", filename="sample.png")
    age_upload(app, "alice", photo["sha256"])
    old = await finished(app, {"photo": photo})
    age(app, [old["jobRunId"]])
    since = time.time()
    rows = [r for r in app.store.read_sync(prune_q.old_artifacts, time.time() - MONTH, None, 100)
            if r.sha256 == photo["sha256"]]
    assert len(rows) == 1

    def going(tx: Any) -> list[str]:
        return [r.sha256 for r in prune_q.unreferenced(tx, rows, time.time(), since=since)]

    assert app.store.read_sync(going) == [photo["sha256"]]  # the old run ended before: the read's to see
    assert app.store.read_sync(lambda tx: [r.sha256 for r in prune_q.unreferenced(tx, rows, time.time())]) == []
    await app.submit("brighten", {"photo": photo}, account_id="alice")  # meanwhile, a new run uses it
    assert app.store.read_sync(going) == []


async def test_a_forks_map_step_shows_its_origins_items_until_the_origin_is_pruned(app: App) -> None:
    register(app, job({
        "jobId": "mapped",
        "inputSchema": {"values": {"type": "json", "required": True}, "n": {"type": "integer", "default": 1}},
        "outputSchema": {"values": {"type": "json", "sourceStepId": "each", "sourceOutputName": "value"}},
        "steps": [
            {"stepId": "each", "toolId": "test.instant", "map": {"over": {"sourceJobInput": "values"}},
             "inputMappings": [{"sourceItem": True, "targetInputName": "value"}]},
            {"stepId": "tail", "toolId": "test.instant", "inputMappings": [{"sourceJobInput": "n", "targetInputName": "value"}]},
        ],
    }))
    origin_id = await app.submit("mapped", {"values": [1, 2, 3]}, account_id="alice")
    await run_all(app)
    fork_id = await app.fork(origin_id, "alice", from_step="tail")
    await run_all(app)
    page = await app.step_items(fork_id, "each", "alice")
    assert page["reusedFromRunId"] == origin_id and page["reusedFromPruned"] is False
    assert [i["item"] for i in page["items"]] == [1, 2, 3] and page["counts"]["succeeded"] == 3
    age(app, [origin_id])
    await app.prune(MONTH)
    page = await app.step_items(fork_id, "each", "alice")
    assert page["reusedFromPruned"] is True and page["items"] == [] and page["counts"]["succeeded"] == 3
    assert (await app.get_run(fork_id, "alice"))["finalOutputs"] == {"values": [2, 3, 4]}


async def test_a_run_waiting_for_a_person_stays_and_its_question_goes_with_it_once_answered(app: App) -> None:
    from tests.integration.test_ask_steps import pick_job

    register(app, pick_job())
    run_id = await app.submit("pick", {}, account_id="alice")
    await run_all(app)
    assert (await app.get_run(run_id))["status"] == "waiting_input"
    age(app, [run_id])
    app.store.run_sync(lambda tx: tx.q("UPDATE runs SET finished_at = created_at WHERE run_id = :r", {"r": run_id}))
    report = await app.prune(MONTH)  # old, but waiting for a person: it stays
    assert report["runs"] == 0 and (await app.get_run(run_id))["status"] == "waiting_input"
    app.store.run_sync(lambda tx: tx.q("UPDATE runs SET finished_at = NULL WHERE run_id = :r", {"r": run_id}))
    await app.answer(run_id, "pick", "alice", {"chosen": 2})
    await run_all(app)
    assert (await app.get_run(run_id))["status"] == "completed"
    age(app, [run_id])
    # the question's timeout is still scheduled (an advance that will find the run ended): it goes with the run
    assert count(app, "SELECT COUNT(*) AS n FROM tasks WHERE kind = 'advance'") == 1
    report = await app.prune(MONTH)
    assert report["runs"] == 1 and report["rows"]["questions"] == 1 and report["rows"]["tasks"] == 1
    assert count(app, "SELECT COUNT(*) AS n FROM questions") == 0
    assert_store_consistent(app.store, app.artifacts)


async def test_prune_removes_temporary_files_a_crash_left(app: App) -> None:
    """A ``.tmp-*`` file untouched for an hour was left by a crash mid-write and goes; a newer one
    may be a write in progress and stays; a dry run removes nothing."""
    ref = await asyncio.to_thread(app.artifacts.put_bytes, png())
    folder = app.artifacts.path(ref).parent
    stale, writing = folder / ".tmp-crashed", folder / ".tmp-writing"
    stale.write_bytes(b"half a file")
    writing.write_bytes(b"being written")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    dry = await app.prune(MONTH, dry_run=True)
    assert dry["temporaryFiles"] == 0 and stale.exists()
    report = await app.prune(MONTH)
    assert report["temporaryFiles"] == 1
    assert not stale.exists() and writing.exists()
    assert app.artifacts.read(ref) == png()
