"""Where a worker's database time goes: every SQL statement per job, with its count and time.

    python bench/statements.py --n 1000 --variant chain
    python bench/statements.py --n 1000 --variant fanout --wal
    python bench/statements.py --n 1000 --variant chain --store postgres

Submits N runs of a ``bench/engine.py`` job to a fresh store (SQLite, or a new PostgreSQL database),
then works them in this process (``Worker.run_until_idle``, 8 slots) with a timer around each
statement the worker's transactions execute. ``--wal`` (SQLite) also reports the WAL pages written
per job (SQLite's automatic checkpoints off for the measurement). On PostgreSQL each statement is a
round trip to the server, and the time around it includes that wait. The times include what else
the machine is doing; the counts do not.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import glob
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine import create_pg_database, drop_pg_database, make_app

from toolweave.store import connections, db

WAL_FRAME = 4096 + 24


class _TimedCursor:
    def __init__(self, cursor: Any, totals: collections.Counter[str], counts: collections.Counter[str]) -> None:
        self._cursor, self._totals, self._counts = cursor, totals, counts

    def execute(self, sql: str, params: Any = None) -> Any:
        started = time.perf_counter()
        try:
            return self._cursor.execute(sql, params)
        finally:
            self._note(sql, started)

    def executemany(self, sql: str, rows: Any, **options: Any) -> Any:
        started = time.perf_counter()
        rows = list(rows)
        try:
            return self._cursor.executemany(sql, rows, **options)
        finally:
            self._note("(many) " + sql, started)
            self._counts["(rows of many) " + " ".join(sql.split())[:83]] += len(rows)

    def _note(self, sql: str, started: float) -> None:
        key = " ".join(sql.split())[:90]
        self._totals[key] += time.perf_counter() - started
        self._counts[key] += 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


async def work(variant: str, n: int, wal: bool, url: str | None = None) -> None:
    home = Path(tempfile.mkdtemp(prefix="toolweave-statements-"))
    os.environ.setdefault("TOOLWEAVE_TEST_STATE", str(home / "state"))
    if wal:
        plain_connect = connections._sqlite_connect

        def connect(conn: Any, record: Any) -> None:
            plain_connect(conn, record)
            conn.execute("PRAGMA wal_autocheckpoint=0")

        connections._sqlite_connect = connect  # the store's connections
        db._sqlite_connect = connect  # the migrations' engine (``Store.engine``)
    app = make_app(home, url)
    for i in range(n):
        await app.submit(f"bench_{variant}", {"value": i}, account_id="bench")
    wal_file = next(iter(glob.glob(str(home / "**" / "*-wal"), recursive=True)), None)
    wal_before = _size(wal_file)

    totals: collections.Counter[str] = collections.Counter()
    counts: collections.Counter[str] = collections.Counter()
    transactions = 0
    plain_init, plain_run_on, plain_cursor = db.Tx.__init__, db.Store._run_on, db.Tx._cursor

    def init(tx: db.Tx, cursor: Any, dialect: str, **options: Any) -> None:
        plain_init(tx, _TimedCursor(cursor, totals, counts), dialect, **options)

    def pipelined_cursor(tx: db.Tx) -> Any:  # the cursors a pipelined transaction reads later
        return _TimedCursor(plain_cursor(tx), totals, counts)

    def run_on(store: db.Store, *args: Any) -> Any:
        nonlocal transactions
        transactions += 1
        return plain_run_on(store, *args)

    db.Tx.__init__ = init  # type: ignore[method-assign]
    db.Store._run_on = run_on  # type: ignore[method-assign]
    db.Tx._cursor = pipelined_cursor  # type: ignore[method-assign]
    try:
        started = time.perf_counter()
        await app.make_worker(8).run_until_idle(600)
        elapsed = time.perf_counter() - started
    finally:
        db.Tx.__init__ = plain_init  # type: ignore[method-assign]
        db.Store._run_on = plain_run_on  # type: ignore[method-assign]
        db.Tx._cursor = plain_cursor  # type: ignore[method-assign]
    rows_of_many = {k: v for k, v in counts.items() if k.startswith("(rows of many) ")}
    for key in rows_of_many:
        del counts[key]
    print(f"{variant}: {n} runs, {elapsed * 1000 / n:.2f} ms per job in this process, "
          f"{sum(totals.values()) * 1e6 / n:.0f} µs of it in {sum(counts.values()) / n:.1f} statements")
    if wal and wal_file:
        pages = (_size(wal_file) - wal_before) / WAL_FRAME
        print(f"{transactions / n:.2f} transactions and {pages / n:.1f} WAL pages per job")
    else:
        print(f"{transactions / n:.2f} transactions per job")
    for key, total in totals.most_common():
        print(f"{total * 1e6 / n:8.1f} µs/job {counts[key] / n:6.2f}/job {total * 1e6 / counts[key]:7.1f} µs each  {key}")
    # on PostgreSQL a pipelined statement's time is only its sending; what counts is how many
    print(f"rows sent by executemany: {sum(rows_of_many.values()) / n:.1f} per job")
    for key, count in sorted(rows_of_many.items(), key=lambda kv: -kv[1]):
        print(f"         {count / n:6.2f}/job  {key}")
    await app.aclose()


def _size(path: str | None) -> int:
    return os.path.getsize(path) if path else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--variant", choices=["chain", "fanout"], default="chain")
    parser.add_argument("--wal", action="store_true", help="also count the WAL pages (SQLite)")
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    args = parser.parse_args()
    if args.store == "sqlite":
        asyncio.run(work(args.variant, args.n, args.wal))
        return
    url, name = create_pg_database()
    try:
        asyncio.run(work(args.variant, args.n, False, url))
    finally:
        drop_pg_database(name)


if __name__ == "__main__":
    main()
