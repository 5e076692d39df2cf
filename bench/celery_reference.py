"""The engine benchmark's shapes run on Celery with Redis, as a reference measured on the same machine.

    python bench/celery_reference.py --n 1000 --variant chain  --json
    python bench/celery_reference.py --n 1000 --variant fanout --pool solo --json

Needs ``pip install -e '.[bench]'`` (Celery with its Redis extra) and a Redis server; the broker and
the result backend both use ``TOOLWEAVE_BENCH_REDIS`` (default ``redis://127.0.0.1:6379/15``), and
that database is FLUSHED at the start of every run: give it a database number nothing else uses.

The shapes match ``bench/engine.py`` (its ``test.instant`` returns ``value + 1``):

- ``chain``: ``chain(instant.s(i), instant.s(), instant.s())``; each result feeds the next task.
- ``fanout``: ``chain(instant.s(i), chord(group(instant.s() x 4), join.s()))``; the root's result goes
  to the 4 branches, and ``join`` receives the 4 branch results and returns the first plus one (our
  join step waits for the 4 branches and maps ``b0``'s output). Every run must end with ``i + 3``;
  ``completed`` counts the runs that did.

Every task's result is stored in the Redis backend (Celery's default, and the nearest to our engine,
which stores every step's outputs); other settings are Celery's defaults (early acknowledgement,
prefetch multiplier 4) unless ``--acks-late`` is given.

One worker: ``--pool threads --concurrency 8`` (the default) is one process with 8 task threads, the
nearest to our one worker process with 8 slots. ``--pool solo`` is one process running one task at a
time. ``--pool prefork`` is a parent plus ``concurrency`` child processes: not one process, and
reported for completeness (its CPU time and peak memory are summed over the parent and children).

The worker starts first; once it is ready (its ``worker_ready`` signal, recorded in Redis) the runs
are submitted, one ``apply_async`` each, while it works. The clock runs from the first submit to the
last run's end (the ``date_done`` Celery stores with the last task's result) — the clock
``bench/engine.py`` uses too; submission is reported on its own (``submit_s``, ``submit_per_s``), and
``jobs_per_s_from_first_call`` runs from the first task's start instead (recorded by the worker in
Redis, from ``task_prerun``). ``worker_cpu_ms_per_job`` is
the worker's user+system CPU time (``/proc/<pid>/stat``) from ``worker_ready`` to the last result;
``peak_rss_mb`` its high-water resident memory (``VmHWM``). ``redis_cpu_ms_per_job`` is the Redis
server's CPU time over the same span (``INFO cpu``; it includes this script's polling for results,
one EXISTS per 1000 runs every 50 ms): Celery hands its queue and results to Redis, where our engine
does that work in its own process, so the worker's CPU alone flatters Celery.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from procstat import cpu_seconds, positive, vm_hwm_mb

REDIS_URL = os.environ.get("TOOLWEAVE_BENCH_REDIS", "redis://127.0.0.1:6379/15")
POOLS = ("threads", "solo", "prefork")
READY_KEY = "toolweave-bench:ready"  # worker_ready: {"t": wall clock, "cpu": worker CPU seconds}
FIRST_KEY = "toolweave-bench:first-start"  # hash: pid -> wall clock of that process's first task
META_PREFIX = "celery-task-meta-"


class BenchError(Exception):
    """A problem the user can fix (missing package, unreachable Redis, bad argument)."""


def require_celery() -> None:
    try:
        import celery  # noqa: F401
        import redis  # noqa: F401
    except ImportError as exc:
        raise BenchError(
            f"Celery with Redis support is not installed ({exc.name} is missing): "
            "run `.venv/bin/pip install -e '.[bench]'`"
        ) from exc


def redis_client(url: str) -> Any:
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise BenchError(f"cannot reach Redis at {url}: {exc}") from exc
    return client


# --- the Celery application (built in a function: no module-level singleton) ---------------------


@dataclass
class Bench:
    app: Any
    instant: Any
    join: Any


def make_celery(url: str, acks_late: bool) -> Bench:
    from celery import Celery

    app = Celery("toolweave_bench", broker=url, backend=url)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=acks_late,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
    )

    @app.task(name="toolweave_bench.instant")
    def instant(value: int) -> int:
        return value + 1

    @app.task(name="toolweave_bench.join")
    def join(values: list[int]) -> int:
        return values[0] + 1

    return Bench(app, instant, join)


def workflow(bench: Bench, variant: str, i: int) -> Any:
    from celery import chain, chord, group

    instant = bench.instant
    if variant == "chain":
        return chain(instant.s(i), instant.s(), instant.s())
    return chain(instant.s(i), chord(group(instant.s() for _ in range(4)), bench.join.s()))


# --- /proc readings ------------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    """All descendants of ``pid`` (the prefork pool's processes)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def redis_cpu_seconds(client: Any) -> float:
    """The Redis server's own user+system CPU time (``INFO cpu``), work the worker hands to it."""
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def tree(pid: int) -> list[int]:
    return [pid, *children(pid)]


# --- the worker process --------------------------------------------------------------------------


def worker_main(url: str, pool: str, concurrency: int, acks_late: bool) -> None:
    from celery.signals import task_prerun, worker_ready

    bench = make_celery(url, acks_late)
    client = redis_client(url)
    lock = threading.Lock()
    started: list[int] = []  # the pid whose first task was recorded (a forked child starts empty)

    def on_prerun(**_: Any) -> None:
        pid = os.getpid()
        if started and started[0] == pid:
            return
        with lock:
            if started and started[0] == pid:
                return
            started[:] = [pid]
        client.hsetnx(FIRST_KEY, str(pid), repr(time.time()))

    def on_ready(**_: Any) -> None:
        cpu = sum(cpu_seconds(p) for p in tree(os.getpid()))
        client.set(READY_KEY, json.dumps({"t": time.time(), "cpu": cpu, "redis_cpu": redis_cpu_seconds(client)}))

    task_prerun.connect(on_prerun, weak=False)
    worker_ready.connect(on_ready, weak=False)
    argv = [
        "worker", f"--pool={pool}", f"--concurrency={concurrency}", "--loglevel=WARNING",
        "--without-heartbeat", "--without-gossip", "--without-mingle", "--hostname=toolweave-bench@%h",
    ]
    bench.app.worker_main(argv)


# --- the measuring process -----------------------------------------------------------------------


def wait_for(predicate: Any, timeout: float, what: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise BenchError(f"the Celery worker exited ({proc.returncode}) before {what}; its log:\n"
                             + log.read_text(errors="replace")[-4000:])
        if time.time() > deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}; worker log: {log}")
        time.sleep(0.01 if what == "the worker to be ready" else 0.05)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)  # warm shutdown
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)


def run(n: int, variant: str, pool: str, concurrency: int, acks_late: bool, url: str) -> dict[str, Any]:
    client = redis_client(url)
    client.flushdb()
    bench = make_celery(url, acks_late)

    log = Path(tempfile.mkstemp(prefix="toolweave-celery-bench-", suffix=".log")[1])
    args = [sys.executable, __file__, "--worker", "--pool", pool, "--concurrency", str(concurrency)]
    if acks_late:
        args.append("--acks-late")
    env = dict(os.environ, TOOLWEAVE_BENCH_REDIS=url)
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        wait_for(lambda: client.exists(READY_KEY), 120, "the worker to be ready", proc, log)
        ready = json.loads(client.get(READY_KEY))
        load_before = os.getloadavg()[0]

        first_submit = time.time()
        started = time.perf_counter()
        final_ids = [workflow(bench, variant, i).apply_async().id for i in range(n)]
        submit_s = time.perf_counter() - started
        gc.collect()  # drop the AsyncResults now (each unsubscribes from its result channel), not at exit
        keys = [META_PREFIX + task_id for task_id in final_ids]

        def all_done() -> bool:
            # EXISTS on a batch of keys returns how many of them exist; batches keep each call short
            return sum(client.exists(*keys[j:j + 1000]) for j in range(0, n, 1000)) >= n

        wait_for(all_done, max(120.0, n / 5), f"{n} results", proc, log)
        pids = tree(proc.pid)
        worker_cpu = sum(cpu_seconds(p) for p in pids) - ready["cpu"]
        redis_cpu = redis_cpu_seconds(client) - ready["redis_cpu"]
        rss = sum(vm_hwm_mb(p) for p in pids)
        load_after = os.getloadavg()[0]
    finally:
        stop(proc)

    metas = [json.loads(raw) for raw in client.mget(keys)]
    completed = sum(1 for i, m in enumerate(metas) if m["status"] == "SUCCESS" and m["result"] == i + 3)
    last = max(datetime.fromisoformat(m["date_done"]).timestamp() for m in metas)
    first_call = min(float(v) for v in client.hgetall(FIRST_KEY).values())
    elapsed = last - first_submit
    from_first_call = last - first_call
    log.unlink(missing_ok=True)
    import celery

    return {
        "variant": variant,
        "system": "celery",
        "celery": celery.__version__,
        "pool": pool,
        "concurrency": 1 if pool == "solo" else concurrency,
        "processes": len(pids),
        "acks_late": acks_late,
        "n": n,
        "submit_s": round(submit_s, 3),
        "submit_per_s": round(n / submit_s, 1),
        "completed": completed,
        "elapsed_s": round(elapsed, 3),
        "jobs_per_s": round(completed / elapsed, 1) if elapsed > 0 else None,
        "jobs_per_s_from_first_call": round(completed / from_first_call, 1) if from_first_call > 0 else None,
        "worker_cpu_ms_per_job": round(worker_cpu * 1000 / n, 3),
        "peak_rss_mb": round(rss, 1),
        "redis_cpu_ms_per_job": round(redis_cpu * 1000 / n, 3),
        "load_avg_1m": [round(load_before, 2), round(load_after, 2)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=positive, default=1000)
    parser.add_argument("--variant", choices=["chain", "fanout"], default="chain")
    parser.add_argument("--pool", choices=POOLS, default="threads")
    parser.add_argument("--concurrency", type=positive, default=8)
    parser.add_argument("--acks-late", action="store_true", help="acknowledge each task after it ran")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    try:
        require_celery()
        if args.worker:
            worker_main(REDIS_URL, args.pool, args.concurrency, args.acks_late)
            return
        result = run(args.n, args.variant, args.pool, args.concurrency, args.acks_late, REDIS_URL)
    except BenchError as exc:
        print(f"celery_reference: {exc}", file=sys.stderr)
        sys.exit(2)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>21}: {value}")
    # Celery keeps the chords' AsyncResults in its backend until exit, where their __del__ tries to
    # unsubscribe over a connection that interpreter teardown has half dismantled and prints a
    # traceback: the run is over and everything is printed, so leave without the teardown.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
