"""Engine throughput, step latency and memory, measured with worker processes.

    python bench/engine.py --n 1000 --variant chain  --store sqlite --json
    python bench/engine.py --n 1000 --variant fanout --store postgres --json
    python bench/engine.py --n 1000 --variant chain --store postgres --workers 2 --json
    python bench/engine.py --n 10000 --variant waiting --store sqlite --json

- ``chain``: 3 steps of ``test.instant``, each output feeding the next.
- ``fanout``: 1 → 4 parallel → 1; ``fanout32``, ``fanout256``: 1 → 32 (256) → 1, the wide ones
  (``worker_cpu_ms_per_step`` compares them).
- ``templated``: the chain, each step's input a straight-line template
  (``"{{ steps.s1.outputs.value }}"``), which the planner renders where it stands.
- ``looping``: the chain, each step's input a template with a loop
  (``"{% for v in [steps.s1.outputs.value] %}{{ v }}{% endfor %}"``): a template that can loop is
  rendered in an evaluator process, under its budget (``engine/evaluate.py``), before its step
  starts.
- ``waiting``: one ``test.slow_async`` step that does not finish during the measurement: every run
  is parked on the backend (a generation row and a poll task), and the figure that matters is the
  worker's memory.

The worker processes (``--workers``, 8 slots each) start first and say they are ready; then this
process submits the runs — ``App.submit_many`` in chunks of ``--chunk`` (``--submit batch``, the
default) or one ``App.submit`` per run (``--submit one``) — while the workers already work. The
clock runs from the first submit to the last run's end as recorded in the store: ``jobs_per_s``,
the clock ``bench/celery_reference.py`` uses too. Submission is reported on its own (``submit_s``,
``submit_per_s``), and ``jobs_per_s_from_first_call`` runs from the first tool call instead.
``step_gap`` is the time from a step's end (the moment its tool answered) to the moment its
successor's tool is called (for a fan-in, from the last of its dependencies): recording the step,
starting the successor and any wait for the worker in between. ``worker_cpu_ms_per_job`` is the
workers' CPU time (all of them) divided by the runs; on PostgreSQL ``postgres_cpu_ms_per_job`` is
the CPU time of the server processes serving the benchmark's database (the worker's and this
process's connections), and ``postgres_backends`` what those backends were doing, sampled every
50 ms: how many on average waited on a lock (``Lock:…``), on a commit's flush (``IO:WALSync``…),
ran (``cpu``) or sat in a transaction waiting for the worker's next statement (``client``).
``submitter_cpu_ms_per_job`` is this process's CPU time (submitting, then watching the store every
50 ms), and ``busy_cores`` how many of the machine's cores were busy on average from the first
submit to the last check (every process, other sessions' too). ``peak_rss_mb`` is the largest worker's high-water resident memory (VmHWM).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from procstat import PgBackends, busy_cores, cpu_seconds, machine_jiffies, positive, vm_hwm_mb  # noqa: E402

from toolweave.app import App  # noqa: E402
from toolweave.model.definitions import JobDefinition  # noqa: E402
from toolweave.settings import Settings  # noqa: E402

PG_ADMIN = os.environ.get("TOOLWEAVE_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


VARIANTS = ("chain", "fanout", "fanout32", "fanout256", "templated", "looping", "waiting")


def steps_per_job(variant: str) -> int:
    return len(job_for(variant).steps)


def job_for(variant: str) -> JobDefinition:
    instant = "test.instant"
    if variant == "chain":
        steps: list[dict[str, Any]] = [
            {"stepId": "s1", "toolId": instant, "inputMappings": [{"sourceJobInput": "value", "targetInputName": "value"}]},
            {"stepId": "s2", "toolId": instant,
             "inputMappings": [{"sourceStepId": "s1", "sourceOutputName": "value", "targetInputName": "value"}]},
            {"stepId": "s3", "toolId": instant,
             "inputMappings": [{"sourceStepId": "s2", "sourceOutputName": "value", "targetInputName": "value"}]},
        ]
    elif variant in ("templated", "looping"):
        steps = []
        for i in (1, 2, 3):
            source = f"steps.s{i - 1}.outputs.value" if i > 1 else "job.value"
            template = f"{{{{ {source} }}}}" if variant == "templated" else f"{{% for v in [{source}] %}}{{{{ v }}}}{{% endfor %}}"
            steps.append({"stepId": f"s{i}", "toolId": instant, "dependencies": [f"s{i - 1}"] if i > 1 else [],
                          "inputMappings": [{"template": template, "targetInputName": "value"}]})
    elif variant.startswith("fanout"):
        width = int(variant.removeprefix("fanout") or 4)
        steps = [{"stepId": "root", "toolId": instant, "inputMappings": [{"sourceJobInput": "value", "targetInputName": "value"}]}]
        steps += [
            {"stepId": f"b{i}", "toolId": instant,
             "inputMappings": [{"sourceStepId": "root", "sourceOutputName": "value", "targetInputName": "value"}]}
            for i in range(width)
        ]
        steps.append(
            {"stepId": "join", "toolId": instant, "dependencies": [f"b{i}" for i in range(width)],
             "inputMappings": [{"sourceStepId": "b0", "sourceOutputName": "value", "targetInputName": "value"}]}
        )
    else:
        steps = [{"stepId": "wait", "toolId": "test.slow_async",
                  "inputMappings": [{"value": 86400, "targetInputName": "seconds"}]}]
    return JobDefinition.model_validate(
        {"jobId": f"bench_{variant}", "inputSchema": {"value": {"type": "integer", "default": 0}}, "steps": steps}
    )


def make_app(home: Path, url: str | None) -> App:
    app = App(Settings(home=home, database_url=url, test_tools=True))
    problems = [p for variant in VARIANTS for p in app.registry.register(job_for(variant))]
    assert not problems, problems
    return app


# --- the worker process -------------------------------------------------------------------------


async def worker_main(home: Path, url: str | None, slots: int) -> None:
    app = make_app(home, url)
    worker = app.make_worker(slots)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, worker.stop)
    print("ready", flush=True)
    profile = os.environ.get("TOOLWEAVE_BENCH_PROFILE")
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    await worker.run()
    if profile:
        profiler.disable()
        profiler.dump_stats(profile)
    await app.aclose()


# --- the measuring process ----------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def measure(app: App, variant: str, first_submit: float) -> dict[str, Any]:
    def collect(tx: Any) -> dict[str, Any]:
        first = tx.one("SELECT MIN(request_timestamp) AS t FROM generations").t
        last = tx.one("SELECT MAX(finished_at) AS t FROM runs").t
        done = tx.one("SELECT COUNT(*) AS n FROM runs WHERE status = 'completed'").n
        calls = tx.all("SELECT run_id, step_id, request_timestamp, response_timestamp FROM generations")
        return {"first": first, "last": last, "done": done, "calls": calls}

    data = app.store.read_sync(collect)
    # a step ends when its tool answers (every step here has one generation)
    ended = {(c.run_id, c.step_id): c.response_timestamp for c in data["calls"]}
    job = job_for(variant)
    deps = {s.step_id: s.all_dependencies for s in job.steps}
    gaps = []
    for call in data["calls"]:
        before = deps.get(call.step_id) or []
        if not before or call.request_timestamp is None:
            continue
        ends = [ended.get((call.run_id, d)) for d in before]
        if any(e is None for e in ends):
            continue
        gaps.append((call.request_timestamp - max(ends)) * 1000)  # type: ignore[type-var]
    last = data["last"] or 0
    elapsed = last - first_submit
    from_first_call = last - (data["first"] or 0)
    return {
        "completed": data["done"],
        "elapsed_s": round(elapsed, 3),
        "jobs_per_s": round(data["done"] / elapsed, 1) if elapsed > 0 else None,
        "jobs_per_s_from_first_call": round(data["done"] / from_first_call, 1) if from_first_call > 0 else None,
        "step_gap_p50_ms": round(percentile(gaps, 0.5), 3),
        "step_gap_p95_ms": round(percentile(gaps, 0.95), 3),
    }


def parked(app: App) -> int:
    row = app.store.read_sync(lambda tx: tx.one("SELECT COUNT(*) AS n FROM generations WHERE status = 'processing'"))
    return int(row.n)


def unfinished(app: App) -> int:
    row = app.store.read_sync(lambda tx: tx.one("SELECT COUNT(*) AS n FROM runs WHERE status IN ('queued', 'running')"))
    return int(row.n)


def created(app: App) -> int:
    row = app.store.read_sync(lambda tx: tx.one("SELECT COUNT(*) AS n FROM runs"))
    return int(row.n)


def create_pg_database() -> tuple[str, str]:
    import psycopg

    name = f"toolweave_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name, name


def drop_pg_database(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def submit_all(app: App, job_id: str, n: int, mode: str, chunk: int) -> list[str]:
    """Submit ``n`` runs: ``one`` call of ``App.submit`` per run, or ``batch``: ``App.submit_many``
    with ``chunk`` runs per call (the library's bulk submission)."""
    if mode == "one":
        return [await app.submit(job_id, {"value": i}, account_id="bench") for i in range(n)]
    run_ids: list[str] = []
    for first in range(0, n, chunk):
        rows = [{"value": i} for i in range(first, min(n, first + chunk))]
        for item in await app.submit_many(job_id, rows, account_id="bench"):
            assert item.run_id is not None, item.error
            run_ids.append(item.run_id)
    return run_ids


def start_workers(home: Path, url: str | None, count: int, slots: int) -> list[subprocess.Popen[str]]:
    env = {k: v for k, v in os.environ.items() if k != "TOOLWEAVE_TEST_LEDGER"}
    env.update(PYTHONPATH=str(ROOT / "src"), TOOLWEAVE_TEST_STATE=str(home / "state"))
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", str(home), url or "-", "--slots", str(slots)],
            stdout=subprocess.PIPE, env=env, text=True,
        )
        for _ in range(count)
    ]
    for proc in procs:
        assert proc.stdout is not None
        proc.stdout.readline()  # ready
    return procs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=positive, default=1000)
    parser.add_argument("--variant", choices=VARIANTS, default="chain")
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--slots", type=positive, default=8)
    parser.add_argument("--workers", type=positive, default=1, help="worker processes")
    parser.add_argument("--submit", choices=["batch", "one"], default="batch",
                        help="App.submit_many in chunks (default) or one App.submit per run")
    parser.add_argument("--chunk", type=positive, default=500, help="runs per App.submit_many call")
    parser.add_argument("--submit-only", action="store_true", help="measure the submission alone (no worker)")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--worker", nargs=2, metavar=("HOME", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        home, url = args.worker
        asyncio.run(worker_main(Path(home), None if url == "-" else url, args.slots))
        return

    home = Path(tempfile.mkdtemp(prefix="toolweave-bench-"))
    pg_name = None
    url = None
    if args.store == "postgres":
        url, pg_name = create_pg_database()
    try:
        app = make_app(home, url)
        if args.submit_only:
            started = time.perf_counter()
            asyncio.run(submit_all(app, f"bench_{args.variant}", args.n, args.submit, args.chunk))
            submit_s = time.perf_counter() - started
            result = {"variant": args.variant, "store": args.store, "n": args.n, "submit": args.submit,
                      "submit_s": round(submit_s, 3), "submit_per_s": round(args.n / submit_s, 1),
                      "runs_stored": created(app), "load_avg_1m": round(os.getloadavg()[0], 2)}
            asyncio.run(app.aclose())
            print(json.dumps(result) if args.json else result)
            return
        procs = start_workers(home, url, args.workers, args.slots)
        backends = PgBackends(PG_ADMIN, pg_name) if pg_name else None
        cpu_at_start = [cpu_seconds(p.pid) for p in procs]
        load = os.getloadavg()[0]
        machine_at_start = machine_jiffies()
        own_cpu_at_start = time.process_time()

        first_submit = time.time()
        started = time.perf_counter()
        asyncio.run(submit_all(app, f"bench_{args.variant}", args.n, args.submit, args.chunk))
        submit_s = time.perf_counter() - started

        deadline = time.time() + max(120.0, args.n / 20)
        waiting = args.variant == "waiting"
        while time.time() < deadline:
            if backends is not None:
                backends.sample()
            remaining = args.n - parked(app) if waiting else unfinished(app)
            if remaining <= 0:
                break
            time.sleep(0.05)
        if waiting:
            time.sleep(2.0)  # let the parked runs be polled a few times
        if backends is not None:
            backends.sample()
        machine_at_end = machine_jiffies()
        own_cpu = time.process_time() - own_cpu_at_start
        rss = max(vm_hwm_mb(p.pid) for p in procs)
        worker_cpu = sum(cpu_seconds(p.pid) - at for p, at in zip(procs, cpu_at_start, strict=True))
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=60)
        result: dict[str, Any] = {
            "variant": args.variant,
            "store": args.store,
            "n": args.n,
            "workers": args.workers,
            "slots": args.slots,
            "submit": args.submit,
            "submit_s": round(submit_s, 3),
            "submit_per_s": round(args.n / submit_s, 1),
        }
        if waiting:
            result["parked"] = parked(app)
        else:
            result.update(measure(app, args.variant, first_submit))
        result["worker_cpu_ms_per_job"] = round(worker_cpu * 1000 / args.n, 3)
        result["worker_cpu_ms_per_step"] = round(worker_cpu * 1000 / args.n / steps_per_job(args.variant), 4)
        result["submitter_cpu_ms_per_job"] = round(own_cpu * 1000 / args.n, 3)
        if backends is not None:
            result["postgres_cpu_ms_per_job"] = round(backends.cpu_seconds() * 1000 / args.n, 3)
            result["postgres_backends"] = backends.wait_shares()
            backends.close()
        result["busy_cores"] = busy_cores(machine_at_start, machine_at_end)
        result["peak_rss_mb"] = round(rss, 1)
        result["load_avg_1m"] = [round(load, 2), round(os.getloadavg()[0], 2)]
        asyncio.run(app.aclose())
    finally:
        if pg_name:
            drop_pg_database(pg_name)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>24}: {value}")


if __name__ == "__main__":
    main()
