"""Map steps: does a transition cost the same whatever the number of items? Are rows and memory linear?

    python bench/map_steps.py --items 10 100 1000 10000 --store sqlite --json
    python bench/map_steps.py --items 10 100 1000 --store postgres --json

For each item count N, a fresh process (so that its peak memory is its own) on a fresh store:

- ``decide_us``: the pure planner alone, on a map step half done (N/2 items ended, ``concurrency``
  in flight of which one just finished, ``concurrency`` pending shown), per call;
- then one run of a job with one map step over N items of ``test.instant`` (concurrency 8), worked
  by one in-process worker (8 slots): ``advance_ms`` is the mean time of one engine transition of the
  run (``Engine._advance``: load what the planner sees, decide, write), ``advances`` their number,
  ``per_item_ms`` the wall time per item;
- ``rows``: the run's rows in ``step_items``, ``generations``, ``events`` and ``tasks`` at the end;
- ``peak_rss_mb``: the process's high-water resident memory (VmHWM).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from engine import create_pg_database, drop_pg_database  # noqa: E402
from procstat import positive, vm_hwm_mb  # noqa: E402

from toolweave.app import App  # noqa: E402
from toolweave.engine import plan  # noqa: E402
from toolweave.engine.core import Engine  # noqa: E402
from toolweave.model.definitions import JobDefinition, ToolDefinition  # noqa: E402
from toolweave.model.status import GenerationStatus, RunStatus, StepStatus  # noqa: E402
from toolweave.settings import Settings  # noqa: E402

CONCURRENCY = 8

JOB = JobDefinition.model_validate({
    "jobId": "bench_map",
    "inputSchema": {"values": {"type": "json", "required": True}},
    "outputSchema": {"values": {"type": "json", "sourceStepId": "inc", "sourceOutputName": "value"}},
    "steps": [{
        "stepId": "inc", "toolId": "test.instant",
        "map": {"over": {"sourceJobInput": "values"}, "concurrency": CONCURRENCY, "maxItems": 100_000},
        "inputMappings": [{"sourceItem": True, "targetInputName": "value"}],
    }],
})


def decide_us(n: int, calls: int = 2000) -> float:
    """µs per ``decide`` call on a map step half done: one item just finished, one pending starts."""
    half = n // 2
    active = [
        plan.ItemView(half + i, StepStatus.RUNNING, value=half + i, attempt=1, tool_id="test.instant", started_at=0.0,
                      work_status=GenerationStatus.COMPLETED if i == 0 else GenerationStatus.PROCESSING,
                      work_outputs={"value": 1} if i == 0 else None)
        for i in range(CONCURRENCY)
    ]
    waiting = [plan.ItemView(half + CONCURRENCY + i, value=i) for i in range(CONCURRENCY)]
    step = plan.StepView("inc", StepStatus.RUNNING, attempt=1, tool_id="test.instant",
                         map=plan.MapView(n, half, 0, active, waiting))
    tools = {"test.instant": ToolDefinition(tool_id="test.instant", service="builtin")}
    run = plan.RunView("run_bench", RunStatus.RUNNING, JOB, {"values": []}, {"inc": step}, tools,
                       order=tuple(plan.topological_order(JOB)))
    assert len(plan.decide(run, 1.0)) == 2  # the finished item, and the next one started
    started = time.perf_counter()
    for _ in range(calls):
        plan.decide(run, 1.0)
    return (time.perf_counter() - started) / calls * 1e6


async def engine_run(n: int, url: str | None, home: Path) -> dict[str, Any]:
    app = App(Settings(home=home, database_url=url, test_tools=True))
    assert app.registry.register(JOB) == []
    spent: list[float] = []
    original = Engine._advance

    def timed(self: Engine, *args: Any, **kwargs: Any) -> None:
        begun = time.perf_counter()
        try:
            original(self, *args, **kwargs)
        finally:
            spent.append(time.perf_counter() - begun)

    Engine._advance = timed  # type: ignore[method-assign]
    try:
        run_id = await app.submit("bench_map", {"values": list(range(n))}, account_id="bench")
        worker = app.make_worker(8)
        begun = time.perf_counter()
        await worker.run_until_idle(3600)
        wall = time.perf_counter() - begun
    finally:
        Engine._advance = original  # type: ignore[method-assign]
    run = await app.get_run(run_id)
    assert run["status"] == "completed", run["error"]
    assert run["finalOutputs"]["values"] == [v + 1 for v in range(n)]

    def count(tx: Any) -> dict[str, int]:
        return {
            table: int(tx.one(f"SELECT COUNT(*) AS n FROM {table} WHERE run_id = :r", {"r": run_id}).n)
            for table in ("step_items", "generations", "events", "tasks")
        }

    rows = await app.store.read(count)
    await app.aclose()
    return {
        "advance_ms": round(sum(spent) / len(spent) * 1000, 3),
        "advance_p95_ms": round(sorted(spent)[int(0.95 * (len(spent) - 1))] * 1000, 3),
        "advances": len(spent),
        "per_item_ms": round(wall / n * 1000, 3),
        "rows": rows,
    }


def child(n: int, url: str | None) -> None:
    home = Path(tempfile.mkdtemp(prefix="toolweave-bench-map-"))
    result: dict[str, Any] = {"items": n, "decide_us": round(decide_us(n), 1)}
    result.update(asyncio.run(engine_run(n, url, home)))
    result["peak_rss_mb"] = round(vm_hwm_mb(os.getpid()), 1)
    print(json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=positive, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--json", action="store_true", help="one JSON line per item count")
    parser.add_argument("--child", nargs=2, metavar=("N", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(int(args.child[0]), None if args.child[1] == "-" else args.child[1])
        return
    for n in args.items:
        url, pg_name = (create_pg_database() if args.store == "postgres" else (None, None))
        try:
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(n), url or "-"], check=True, capture_output=True, text=True
            ).stdout.strip().splitlines()[-1]
        finally:
            if pg_name:
                drop_pg_database(pg_name)
        result = {"store": args.store, **json.loads(out)}
        print(json.dumps(result) if args.json else " ".join(f"{k}={v}" for k, v in result.items()), flush=True)


if __name__ == "__main__":
    main()
