"""Our engine against Celery, measured in one go on the same machine, reported as ratios.

    python bench/compare.py --n 1000
    python bench/compare.py --n 1000 --store postgres --pools threads,solo --repeat 3

For each repeat and each variant (``chain``, ``fanout``), runs ``bench/engine.py`` and then
``bench/celery_reference.py`` once per Celery pool, back to back, so each ratio compares two
measurements taken a few seconds apart. Both use the same clock: the worker is started and ready,
then the runs are submitted while it works, and the clock runs from the first submit to the last
run's end (submission included; its rate is reported on its own, and the ratio from each system's
first tool call too). Prints one JSON line per measurement and per ratio, then a markdown table.
Before the first measurement each system works ``--warmup`` runs of each variant (200 by default,
0 for none), not counted: the first run on a fresh machine pays for cold caches and compiled
imports (on 2026-12-04 a first chain measurement ran at 451 jobs/s, the next three at 801–870).
Ratios are ours / Celery: above 1 is better for jobs/s, below 1 is better for CPU per job and peak
memory. "with servers" adds the database server's CPU to each side's worker CPU: PostgreSQL's
backends for ours (none on SQLite, whose work runs inside our worker), Redis for Celery (which hands
its queue and results to Redis). The 1-minute load average before each measurement is recorded: on
a shared machine, figures taken under different loads do not compare.

Without Celery installed (``pip install -e '.[bench]'``) the script stops and says so, unless
``--ours-only`` asks for our engine alone; Celery is skipped, with a message, when its
reference run fails (for instance, no Redis); the engine's figures are still printed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from procstat import positive

HERE = Path(__file__).resolve().parent
VARIANTS = ("chain", "fanout")
POOLS = ("threads", "solo", "prefork")


class RunFailed(Exception):
    pass


def run_json(script: str, args: list[str]) -> dict[str, Any]:
    load = os.getloadavg()[0]
    proc = subprocess.run(
        [sys.executable, str(HERE / script), *args, "--json"], capture_output=True, text=True, check=False
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        detail = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
        raise RunFailed(f"{script} {' '.join(args)} failed (exit {proc.returncode}): {detail}")
    result: dict[str, Any] = json.loads(lines[-1])
    result.setdefault("system", "toolweave")
    result["load_avg_1m_before"] = round(load, 2)
    return result


def ratio(ours: Any, theirs: Any) -> float | None:
    if not isinstance(ours, int | float) or not isinstance(theirs, int | float) or theirs == 0:
        return None
    return round(ours / theirs, 2)


def compare(ours: dict[str, Any], celery: dict[str, Any]) -> dict[str, Any]:
    ours_cpu = ours.get("worker_cpu_ms_per_job")
    ours_cpu_all = (ours_cpu or 0) + (ours.get("postgres_cpu_ms_per_job") or 0)
    celery_cpu = celery.get("worker_cpu_ms_per_job")
    return {
        "kind": "ratio",
        "variant": ours["variant"],
        "store": ours.get("store"),
        "celery_pool": celery["pool"],
        "ours_jobs_per_s": ours.get("jobs_per_s"),
        "celery_jobs_per_s": celery.get("jobs_per_s"),
        "jobs_per_s_ratio": ratio(ours.get("jobs_per_s"), celery.get("jobs_per_s")),
        "from_first_call_ratio": ratio(ours.get("jobs_per_s_from_first_call"), celery.get("jobs_per_s_from_first_call")),
        "ours_submit_per_s": ours.get("submit_per_s"),
        "celery_submit_per_s": celery.get("submit_per_s"),
        "ours_step_gap_p50_ms": ours.get("step_gap_p50_ms"),
        "ours_cpu_ms_per_job": ours_cpu,
        "ours_postgres_cpu_ms_per_job": ours.get("postgres_cpu_ms_per_job"),
        "celery_cpu_ms_per_job": celery_cpu,
        "celery_redis_cpu_ms_per_job": celery.get("redis_cpu_ms_per_job"),
        "cpu_ms_per_job_ratio": ratio(ours_cpu, celery_cpu),
        "cpu_ms_per_job_ratio_with_servers": ratio(
            ours_cpu_all, (celery_cpu or 0) + (celery.get("redis_cpu_ms_per_job") or 0)
        ),
        "peak_rss_ratio": ratio(ours.get("peak_rss_mb"), celery.get("peak_rss_mb")),
        "load_avg_1m": [ours["load_avg_1m_before"], celery["load_avg_1m_before"]],
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    head = (
        "| variant | Celery pool | ours jobs/s | Celery jobs/s | ours/Celery | same, from the first call "
        "| submits/s ours / Celery | ours step gap p50 | CPU ms/job ours (+ PostgreSQL) / Celery (+ Redis) "
        "| CPU ours/Celery with servers | peak RSS ours/Celery | load (1 min) |\n"
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n"
    )

    def plus(value: Any, extra: Any) -> str:
        return f"{value}" if extra is None else f"{value} (+ {extra})"

    body = "".join(
        f"| {r['variant']} | {r['celery_pool']} | {r['ours_jobs_per_s']} | {r['celery_jobs_per_s']} "
        f"| **{r['jobs_per_s_ratio']}** | {r['from_first_call_ratio']} "
        f"| {r['ours_submit_per_s']} / {r['celery_submit_per_s']} | {r['ours_step_gap_p50_ms']} ms "
        f"| {plus(r['ours_cpu_ms_per_job'], r['ours_postgres_cpu_ms_per_job'])} / "
        f"{plus(r['celery_cpu_ms_per_job'], r['celery_redis_cpu_ms_per_job'])} "
        f"| {r['cpu_ms_per_job_ratio_with_servers']} | {r['peak_rss_ratio']} "
        f"| {r['load_avg_1m'][0]} / {r['load_avg_1m'][1]} |\n"
        for r in rows
    )
    return head + body


def pool_list(text: str) -> list[str]:
    pools = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in pools if p not in POOLS]
    if bad or not pools:
        raise argparse.ArgumentTypeError(
            f"unknown Celery pool(s) {', '.join(map(repr, bad)) or '(none given)'}; choose from {', '.join(POOLS)}"
        )
    return pools


def warm_up(args: argparse.Namespace, celery_ok: bool) -> bool:
    """Each system works ``args.warmup`` runs of each variant, not counted; returns whether Celery
    still can be measured (its reference failed, e.g. no Redis: skipped with a message)."""
    for variant in VARIANTS:
        common = ["--n", str(args.warmup), "--variant", variant]
        run_json("engine.py", [*common, "--store", args.store, "--slots", str(args.concurrency)])
        for pool in args.pools if celery_ok else []:
            try:
                run_json("celery_reference.py", [*common, "--pool", pool, "--concurrency", str(args.concurrency)])
            except RunFailed as exc:
                print(f"compare: skipping Celery: {exc}", file=sys.stderr)
                return False
    print(f"compare: warmed up ({args.warmup} runs of each variant per system, not counted)", file=sys.stderr)
    return celery_ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=positive, default=1000)
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite", help="our engine's store")
    parser.add_argument("--pools", type=pool_list, default=["threads"], help="Celery pools, comma-separated")
    parser.add_argument("--concurrency", type=positive, default=8, help="our slots and Celery's concurrency")
    parser.add_argument("--repeat", type=positive, default=1)
    parser.add_argument("--submit", choices=["batch", "one"], default="batch",
                        help="how our runs are submitted (bench/engine.py --submit)")
    parser.add_argument("--celery-acks-late", action="store_true", help="Celery acknowledges after each task")
    parser.add_argument("--ours-only", action="store_true", help="measure our engine alone (no Celery)")
    parser.add_argument("--warmup", type=int, default=200,
                        help="runs of each variant each system works first, not counted (0: none)")
    args = parser.parse_args()

    celery_ok = importlib.util.find_spec("celery") is not None and importlib.util.find_spec("redis") is not None
    if not celery_ok and not args.ours_only:
        sys.exit("compare: Celery is not installed, so there is nothing to compare with: install the bench "
                 "extra (.venv/bin/pip install -e '.[bench]'), or pass --ours-only to measure our engine alone")
    if args.ours_only:
        celery_ok = False
    rows: list[dict[str, Any]] = []
    try:
        if args.warmup > 0:
            celery_ok = warm_up(args, celery_ok)
        for repeat in range(args.repeat):
            for variant in VARIANTS:
                common = ["--n", str(args.n), "--variant", variant]
                ours = run_json(
                    "engine.py",
                    [*common, "--store", args.store, "--slots", str(args.concurrency), "--submit", args.submit],
                )
                print(json.dumps({"kind": "measurement", "repeat": repeat, **ours}), flush=True)
                for pool in args.pools if celery_ok else []:
                    try:
                        extra = ["--acks-late"] if args.celery_acks_late else []
                        theirs = run_json(
                            "celery_reference.py",
                            [*common, "--pool", pool, "--concurrency", str(args.concurrency), *extra],
                        )
                    except RunFailed as exc:
                        print(f"compare: skipping Celery: {exc}", file=sys.stderr)
                        celery_ok = False
                        break
                    print(json.dumps({"kind": "measurement", "repeat": repeat, **theirs}), flush=True)
                    row = {"repeat": repeat, **compare(ours, theirs)}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    except RunFailed as exc:
        print(f"compare: {exc}", file=sys.stderr)
        sys.exit(1)
    if rows:
        print()
        print(markdown(rows), end="")


if __name__ == "__main__":
    main()
