"""The worker's instructions per job, counted by valgrind's cachegrind: repeatable on a busy machine.

    python bench/instructions.py --variant chain --n 200
    python bench/instructions.py --variant fanout --n 150
    python bench/instructions.py --variant chain --n 400 --store postgres

Runs this script twice under ``valgrind --tool=cachegrind``: both times it makes a fresh SQLite
store and submits N runs of a ``bench/engine.py`` job (``App.submit_many``); the first time one
worker (8 slots) then works them in this process (``Worker.run_until_idle``), the second time it
does not. The difference of the two instruction counts divided by N is the worker's instructions
per job (start-up and submission cancel out). Group commit's batch sizes follow the timing, so the
count moves by a few per cent between runs; compare trees with two runs each. Needs ``valgrind``;
about half a minute per run of 200 chain jobs. With ``--store postgres`` each run has a new database
on the server of ``bench/engine.py`` (``TOOLWEAVE_BENCH_POSTGRES``): the count is the worker's side
alone (its Python, psycopg and libpq), not the server's, and not the kernel's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))


async def work(n: int, variant: str, with_worker: bool, url: str | None) -> None:
    from engine import make_app

    home = Path(tempfile.mkdtemp(prefix="toolweave-instructions-"))
    os.environ["TOOLWEAVE_TEST_STATE"] = str(home / "state")
    app = make_app(home, url)
    for first in range(0, n, 500):
        rows = [{"value": i} for i in range(first, min(n, first + 500))]
        await app.submit_many(f"bench_{variant}", rows, account_id="bench")
    if with_worker:
        await app.make_worker(8).run_until_idle(timeout=600)
        done = app.store.read_sync(lambda tx: tx.one("SELECT COUNT(*) AS n FROM runs WHERE status = 'completed'")).n
        assert done == n, f"{done} of {n} runs completed"
    await app.aclose()


def count(n: int, variant: str, with_worker: bool, store: str) -> int:
    """Instructions of one run of this script under cachegrind."""
    args = [sys.executable, __file__, "--n", str(n), "--variant", variant, "--inner", "work" if with_worker else "submit"]
    name = None
    if store == "postgres":
        from engine import create_pg_database

        url, name = create_pg_database()
        args += ["--url", url]
    try:
        out = subprocess.run(
            ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null", *args],
            capture_output=True, text=True, check=True,
        )
    finally:
        if name is not None:
            from engine import drop_pg_database

            drop_pg_database(name)
    found = re.search(r"I\s+refs:\s+([\d,]+)", out.stderr)
    assert found, out.stderr[-2000:]
    return int(found.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--variant", default="chain", help="a bench/engine.py variant (chain, fanout, …)")
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--inner", choices=["work", "submit"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        asyncio.run(work(args.n, args.variant, args.inner == "work", args.url))
        return
    with_worker = count(args.n, args.variant, True, args.store)
    without = count(args.n, args.variant, False, args.store)
    print(f"{args.variant}: {(with_worker - without) / args.n / 1e6:.3f} M instructions per job of the worker "
          f"({args.n} runs, {args.store}, {ROOT.name})")


if __name__ == "__main__":
    main()
