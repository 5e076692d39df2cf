"""Retention with real processes: ``toolweave prune`` while a real ``toolweave worker`` process runs
new jobs, and a prune killed with SIGKILL at random moments, on both stores.

- Pruning while a worker works: the old runs go, every new run completes with its outputs on
  disk, the upload old and new runs share stays, and the store stays consistent
  (``tests/helpers/invariants.assert_store_consistent``).
- An interrupted prune leaves a consistent store after every kill (no row of a missing run, no
  record without its file, nothing a remaining run mentions gone); the next prune finishes the
  work, including the files the killed one had queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from PIL import Image
from tests.acceptance.test_crash import WorkerProcess
from tests.helpers.invariants import assert_store_consistent

from toolweave.app import App
from toolweave.settings import Settings

DAY = 86400.0

JOB = {
    "jobId": "brighten",
    "inputSchema": {"photo": {"type": "image", "required": True}, "brightness": {"type": "number", "default": 1.5}},
    "outputSchema": {"image": {"type": "image", "sourceStepId": "grey", "sourceOutputName": "image"}},
    "steps": [
        {"stepId": "adjust", "toolId": "image.adjust",
         "inputMappings": [{"sourceJobInput": "photo", "targetInputName": "image"},
                           {"sourceJobInput": "brightness", "targetInputName": "brightness"}]},
        {"stepId": "grey", "toolId": "image.adjust",
         "inputMappings": [{"sourceStepId": "adjust", "sourceOutputName": "image", "targetInputName": "image"},
                           {"value": 0.5, "targetInputName": "saturation"}]},
    ],
}


def png(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (12, 8), colour).save(out, "PNG")
    return out.getvalue()


def setup(db_url: str, tmp_path: Path) -> tuple[App, dict[str, str]]:
    definitions = tmp_path / "defs"
    definitions.mkdir()
    (definitions / "brighten.yaml").write_text(yaml.safe_dump(JOB))
    env = {
        **os.environ,
        "TOOLWEAVE_HOME": str(tmp_path / "home"),
        "TOOLWEAVE_DATABASE_URL": db_url,
        "TOOLWEAVE_DEFINITIONS": str(definitions),
        "TOOLWEAVE_TEST_TOOLS": "1",
    }
    app = App(Settings(home=tmp_path / "home", database_url=db_url, definitions=[definitions], test_tools=True))
    return app, env


async def old_runs(app: App, count: int, photo: dict[str, Any] | None = None) -> list[str]:
    """``count`` completed runs (each with its own photo unless one is given), made 40 days old."""
    ids = []
    for i in range(count):
        value = photo or await app.put_media(png((i % 256, (i * 7) % 256, 90)), "alice", filename=f"p{i}.png")
        ids.append(await app.submit("brighten", {"photo": value, "brightness": 0.5 + i / 100}, account_id="alice"))
    await app.make_worker(4).run_until_idle(120)

    def age(tx: Any) -> None:
        tx.q("UPDATE runs SET created_at = created_at - :d, finished_at = finished_at - :d", {"d": 40 * DAY})
        tx.q("UPDATE artifacts SET created_at = created_at - :d", {"d": 40 * DAY})

    app.store.run_sync(age)
    when = time.time() - 40 * DAY
    for path in app.artifacts.root.rglob("*"):
        if path.is_file():
            os.utime(path, (when, when))
    return ids


def count(app: App, sql: str) -> int:
    return int(app.store.read_sync(lambda tx: tx.one(sql)).n)


@contextlib.contextmanager
def writes_held(db_url: str) -> Iterator[None]:
    """Other connections' writes wait while the block runs (reads go on): SQLite's write lock, or on
    PostgreSQL the tables a prune writes locked against writers. Taking it waits for a write
    transaction under way to commit.

    On SQLite the lock is tried again every 0.2 ms rather than by SQLite's busy handler, which
    sleeps up to 100 ms between tries: the prune's own writer tries every 50 µs to 1 ms
    (``connections._begin_write``), so a busy handler lost the lock to each of its transactions in
    turn and got it only after the prune had deleted every run and record."""
    if db_url.startswith("sqlite"):
        conn = sqlite3.connect(db_url.split("///", 1)[1], timeout=0, isolation_level=None)
        try:
            deadline = time.time() + 30
            while True:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or time.time() > deadline:
                        raise
                    time.sleep(0.0002)
            yield
        finally:
            conn.rollback()
            conn.close()
        return
    import psycopg

    with psycopg.connect(db_url) as pg:
        # all of them at once or none (NOWAIT, tried again): waiting for one while holding another
        # could deadlock with the prune's transaction
        deadline = time.time() + 30
        while True:
            try:
                pg.execute("LOCK TABLE runs, step_runs, generations, events, tasks, artifacts, kv IN EXCLUSIVE MODE NOWAIT")
                break
            except psycopg.errors.LockNotAvailable:
                pg.rollback()
                if time.time() > deadline:
                    raise
                time.sleep(0.001)
        try:
            yield
        finally:
            pg.rollback()


def prune_process(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "toolweave.cli", "prune", "--older-than", "30d", *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


async def test_prune_while_a_worker_process_runs_jobs(db_url: str, tmp_path: Path) -> None:
    app, env = setup(db_url, tmp_path)
    try:
        shared = await app.put_media(png((10, 200, 30)), "alice", filename="shared.png")
        old = await old_runs(app, 30, photo=None)
        old += await old_runs(app, 5, photo=shared)
        old_files = count(app, "SELECT COUNT(DISTINCT sha256) AS n FROM artifacts")
        logs = tmp_path / "logs"
        logs.mkdir()
        worker = WorkerProcess(env, logs)
        try:
            worker.wait_ready()
            new: list[str] = []
            pruning = prune_process(env, "--batch", "2", "--json")
            while pruning.poll() is None or len(new) < 20:
                brightness = 1 + (len(new) % 100) / 50
                new.append(await app.submit("brighten", {"photo": shared, "brightness": brightness}, account_id="alice"))
                await asyncio.sleep(0.02)
            out, err = pruning.communicate(timeout=120)
            assert pruning.returncode == 0, err.decode()
            report = json.loads(out)
            finished = [await app.wait(run_id, 60) for run_id in new]
        finally:
            worker.stop()
        assert report["runs"] == len(old) and report["files"] > 0
        assert count(app, "SELECT COUNT(*) AS n FROM runs") == len(new)
        assert {r["status"] for r in finished} == {"completed"}, [r["error"] for r in finished if r["error"]][:3]
        for run in finished:
            path, _ = await app.artifact(run["finalOutputs"]["image"]["sha256"], "alice")
            assert path.read_bytes()
        assert (await app.artifact(shared["sha256"], "alice"))[0].exists()  # the new runs use it
        assert count(app, "SELECT COUNT(DISTINCT sha256) AS n FROM artifacts") < old_files + 2 * len(new)
        assert_store_consistent(app.store, app.artifacts)
    finally:
        await app.aclose()


async def test_a_prune_killed_at_random_moments_leaves_a_consistent_store(db_url: str, tmp_path: Path) -> None:
    app, env = setup(db_url, tmp_path)
    rng = random.Random(20261203)
    runs = "SELECT COUNT(*) AS n FROM runs"
    records = "SELECT COUNT(*) AS n FROM artifacts"
    queued = "SELECT COUNT(*) AS n FROM kv WHERE namespace = 'prune.files'"
    try:
        old = await old_runs(app, 60)
        kills_mid_way = 0
        # kill it while it deletes runs, while it deletes artifact records, while files are queued
        for moment in ("runs", "records", "files") * 3:
            if not count(app, runs) and not count(app, records) and not count(app, queued):
                break
            before = {"runs": count(app, runs), "records": count(app, records)}
            pruning = prune_process(env, "--batch", "1")
            deadline = time.time() + 60
            while pruning.poll() is None and time.time() < deadline:
                if moment == "files" and count(app, queued):
                    break
                if moment != "files" and count(app, runs if moment == "runs" else records) < before[moment]:
                    break
                await asyncio.sleep(0.002)
            # hold the prune's next write back (it has done some of the work, not all), then kill it at
            # a random moment of that wait: a fast machine cannot finish the work first
            with writes_held(db_url):
                await asyncio.sleep(rng.uniform(0, 0.02))
                if pruning.poll() is None:
                    pruning.send_signal(signal.SIGKILL)
                    kills_mid_way += 1
                    print(f"killed while {moment}: {count(app, runs)} runs, {count(app, records)} records, "
                          f"{count(app, queued)} files queued")
                pruning.wait()
            assert_store_consistent(app.store, app.artifacts)
        assert kills_mid_way >= 2
        done = prune_process(env, "--json")
        _out, err = done.communicate(timeout=120)
        assert done.returncode == 0, err.decode()
        assert count(app, runs) == 0 and count(app, records) == 0 and count(app, queued) == 0
        left = [p for p in app.artifacts.root.rglob("*") if p.is_file()]
        assert left == [], left[:5]  # every file went, those queued by killed prunes too
        assert len(old) == 60
        assert_store_consistent(app.store, app.artifacts)
    finally:
        await app.aclose()
