"""/healthz while worst-case conditions and templates are evaluated (issue 10, bounded evaluation).

    python bench/evaluation.py --submits 20 --store sqlite --json
    python bench/evaluation.py --submits 20 --store postgres --json

Starts ``toolweave serve`` (the HTTP API with its embedded worker, as shipped) on a fresh store,
with three jobs a hostile user can feed: ``worst_condition`` (the issue's
``job.items.all(a, job.items.all(b, a >= 0))``), ``worst_template`` (three nested loops over the
items) and ``worst_map`` (a map step over three rows whose every item's template runs those loops),
and 300 items per submit. Then, while a client asks ``/healthz`` over and over (one request at a
time, 10 ms apart), it sends ``--submits`` submits at once, a third to each job, and waits until
every run has ended. It reports the latency of ``/healthz`` while the runs were in flight
(``healthz_p50_ms``, ``healthz_p99_ms``, ``healthz_max_ms``, and when idle before, for
comparison), how long the submits took to answer, how long until the last run ended, and how the
runs ended (each should fail with ``evaluation_budget``; a map run with ``map_items_failed``, its
items with ``evaluation_budget``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get("TOOLWEAVE_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
ADMIN_KEY = "tw_bench_admin_key_0123456789abcdef"
ITEMS = list(range(300))
TRIPLE_LOOP = "{% for a in job['items'] %}{% for b in job['items'] %}{% for c in job['items'] %}{% endfor %}{% endfor %}{% endfor %}"
JOBS = [
    {"jobId": "worst_condition", "inputSchema": {"items": {"type": "json", "required": True}},
     "steps": [{"stepId": "s", "toolId": "test.instant", "condition": "job.items.all(a, job.items.all(b, a >= 0))",
                "inputMappings": [{"value": 1, "targetInputName": "value"}]}]},
    {"jobId": "worst_template", "inputSchema": {"items": {"type": "json", "required": True}},
     "steps": [{"stepId": "s", "toolId": "test.instant", "inputMappings": [{
         "template": TRIPLE_LOOP, "targetInputName": "value"}]}]},
    {"jobId": "worst_map", "inputSchema": {"items": {"type": "json", "required": True}},
     "steps": [{"stepId": "s", "toolId": "test.instant", "map": {"over": {"value": [1, 2, 3]}},
                "inputMappings": [{"template": TRIPLE_LOOP + "{{ item }}", "targetInputName": "value"}]}]},
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


async def sample_healthz(client: httpx.AsyncClient, stop: asyncio.Event, into: list[float]) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        response = await client.get("/healthz")
        into.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.text
        await asyncio.sleep(0.01)


async def measure(url: str, submits: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with httpx.AsyncClient(base_url=url, timeout=120, headers=headers,
                                 limits=httpx.Limits(max_connections=submits + 4)) as client:
        idle: list[float] = []
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_healthz(client, stop, idle))
        await asyncio.sleep(2.0)
        stop.set()
        await sampler

        busy: list[float] = []
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_healthz(client, stop, busy))
        started = time.perf_counter()

        async def submit(i: int) -> tuple[float, str]:
            t0 = time.perf_counter()
            response = await client.post("/api/v1/runs", json={"jobId": JOBS[i % len(JOBS)]["jobId"], "inputs": {"items": ITEMS}})
            assert response.status_code == 201, response.text
            return (time.perf_counter() - t0) * 1000, response.json()["jobRunId"]

        answered = await asyncio.gather(*(submit(i) for i in range(submits)))
        codes: Counter[str] = Counter()
        for _, run_id in answered:
            while True:
                run = (await client.get(f"/api/v1/runs/{run_id}")).json()
                if run["status"] in ("completed", "partially_completed", "failed", "cancelled"):
                    break
                await asyncio.sleep(0.05)
            error = run["stepStatuses"][0].get("error") or {}
            over_budget = error.get("code") == "map_items_failed" and "template_budget_ms" in str(error.get("message"))
            codes[f"{run['status']}:{error.get('code')}{' (items: evaluation_budget)' if over_budget else ''}"] += 1
        all_done = time.perf_counter() - started
        stop.set()
        await sampler
    submit_ms = [ms for ms, _ in answered]
    return {
        "submits": submits,
        "healthz_idle_p50_ms": round(statistics.median(idle), 2),
        "healthz_idle_p99_ms": round(percentile(idle, 0.99), 2),
        "healthz_samples": len(busy),
        "healthz_p50_ms": round(statistics.median(busy), 2),
        "healthz_p99_ms": round(percentile(busy, 0.99), 2),
        "healthz_max_ms": round(max(busy), 2),
        "submit_p50_ms": round(statistics.median(submit_ms), 1),
        "submit_max_ms": round(max(submit_ms), 1),
        "all_runs_ended_s": round(all_done, 2),
        "runs": dict(codes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--submits", type=int, default=20)
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tw-bench-eval-") as tmp:
        home, defs = Path(tmp) / "home", Path(tmp) / "defs"
        defs.mkdir()
        (defs / "worst.yaml").write_text(yaml.safe_dump(JOBS))
        env = {**os.environ, "TOOLWEAVE_HOME": str(home), "TOOLWEAVE_DEFINITIONS": str(defs),
               "TOOLWEAVE_ADMIN_KEY": ADMIN_KEY, "TOOLWEAVE_TEST_TOOLS": "1",
               "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
        database = None
        if args.store == "postgres":
            import psycopg

            database = f"tw_bench_eval_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{database}"')
            env["TOOLWEAVE_DATABASE_URL"] = PG_ADMIN.rsplit("/", 1)[0] + "/" + database
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "toolweave.cli", "serve", "--port", str(port),
                                   "--log-level", "warning"], env=env, cwd=tmp)
        try:
            url = f"http://127.0.0.1:{port}"
            for _ in range(300):
                try:
                    if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            result = asyncio.run(measure(url, args.submits))
            result["store"] = args.store
        finally:
            server.terminate()
            server.wait(30)
            if database is not None:
                import psycopg

                with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:24} {value}")


if __name__ == "__main__":
    main()
