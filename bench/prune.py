"""Retention: how fast does ``toolweave prune`` remove old runs, and how long is its longest transaction?

    python bench/prune.py --runs 2000 --store sqlite --json
    python bench/prune.py --runs 2000 --store postgres --json

On a fresh store: ``--runs`` finished runs of a three-step chain of ``test.instant`` (made 40 days
old), each with an upload of its own as an input (an artifact record and a file per run, the upload
made old too), plus as many recent runs that stay. Then one prune (``App.prune``, 100 trees per
transaction):

- ``prune_s``: its wall time, ``runs_per_s``;
- ``tx_ms_max`` / ``tx_ms_mean``: the longest and the mean of its write transactions — what a
  worker may wait for on SQLite, whose writers take turns (on PostgreSQL they lock only the rows
  they delete);
- ``rows``: what went, as the prune reports it.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from engine import create_pg_database, drop_pg_database  # noqa: E402

from toolweave.app import App  # noqa: E402
from toolweave.model.definitions import JobDefinition  # noqa: E402
from toolweave.settings import Settings  # noqa: E402

JOB = JobDefinition.model_validate({
    "jobId": "bench_prune",
    "inputSchema": {"value": {"type": "integer", "default": 1}, "photo": {"type": "image", "required": True}},
    "outputSchema": {"value": {"type": "integer", "sourceStepId": "s3", "sourceOutputName": "value"}},
    "steps": [
        {"stepId": "s1", "toolId": "test.instant", "inputMappings": [{"sourceJobInput": "value", "targetInputName": "value"}]},
        {"stepId": "s2", "toolId": "test.instant",
         "inputMappings": [{"sourceStepId": "s1", "sourceOutputName": "value", "targetInputName": "value"}]},
        {"stepId": "s3", "toolId": "test.instant",
         "inputMappings": [{"sourceStepId": "s2", "sourceOutputName": "value", "targetInputName": "value"}]},
    ],
})


def png(i: int) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (4, 4), (i % 256, (i // 256) % 256, 7)).save(out, "PNG")
    return out.getvalue()


async def build(app: App, n: int) -> None:
    problems = app.registry.register(JOB)
    assert problems == [], problems
    for wave in ("old", "recent"):
        rows = []
        for i in range(n):
            photo = await app.put_media(png(i + (n if wave == "recent" else 0)), "bench", filename=f"{wave}{i}.png")
            rows.append({"value": i, "photo": photo})
        for start in range(0, n, 500):
            await app.submit_many("bench_prune", rows[start:start + 500], account_id="bench")
        await app.make_worker(8).run_until_idle(3600)
        if wave == "old":
            def age(tx: Any) -> None:
                tx.q("UPDATE runs SET created_at = created_at - :d, finished_at = finished_at - :d", {"d": 40 * 86400})
                tx.q("UPDATE artifacts SET created_at = created_at - :d", {"d": 40 * 86400})

            app.store.run_sync(age)
            old = time.time() - 40 * 86400
            for path in app.artifacts.root.rglob("*"):
                if path.is_file():
                    os.utime(path, (old, old))


async def measure(url: str, home: Path, n: int) -> dict[str, Any]:
    app = App(Settings(home=home, database_url=url, test_tools=True))
    try:
        await build(app, n)
        durations: list[float] = []
        slowest: dict[str, float] = {}
        run_sync = app.store.run_sync

        def timed(fn: Any, *args: Any) -> Any:
            started = time.perf_counter()
            try:
                return run_sync(fn, *args)
            finally:
                spent = time.perf_counter() - started
                durations.append(spent)
                name = getattr(fn, "__name__", str(fn))
                slowest[name] = max(slowest.get(name, 0.0), spent)

        app.store.run_sync = timed  # type: ignore[method-assign]
        started = time.perf_counter()
        report = await app.prune(30 * 86400)
        elapsed = time.perf_counter() - started
        left = app.store.read_sync(lambda tx: tx.one("SELECT COUNT(*) AS n FROM runs")).n
        return {
            "runs": n, "prune_s": round(elapsed, 2), "runs_per_s": round(report["runs"] / elapsed),
            "tx": len(durations), "tx_ms_max": round(max(durations) * 1000, 1),
            "tx_ms_mean": round(statistics.mean(durations) * 1000, 2), "runs_left": left,
            "tx_ms_max_by_kind": {k: round(v * 1000, 1) for k, v in sorted(slowest.items(), key=lambda kv: -kv[1])},
            "rows": report["rows"], "artifact_records": report["artifactRecords"], "files": report["files"],
        }
    finally:
        await app.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        if args.store == "postgres":
            url, name = create_pg_database()
            try:
                result = asyncio.run(measure(url, home, args.runs))
            finally:
                drop_pg_database(name)
        else:
            result = asyncio.run(measure(f"sqlite:///{home / 'bench.db'}", home, args.runs))
    result["store"] = args.store
    print(json.dumps(result, indent=2) if args.json else result)


if __name__ == "__main__":
    main()
