"""Where PostgreSQL's own work goes in a ``bench/engine.py`` run: per statement and per table.

    TOOLWEAVE_BENCH_POSTGRES=postgresql://postgres@127.0.0.1:PORT/test \\
        python bench/pg_server.py --n 2000 --variant chain [--top 25] [--json]

Runs ``bench/engine.py`` (its arguments pass through: ``--variant``, ``--workers``, …) on PostgreSQL
and, before its database is dropped, reads what the server did in it, per 1,000 jobs:

- from ``pg_stat_statements`` (reset when the database is created; the server must load it:
  ``shared_preload_libraries = 'pg_stat_statements'``, ``pg_stat_statements.track_planning = on``,
  and the extension created in the ``TOOLWEAVE_BENCH_POSTGRES`` database): each statement's calls,
  execution and planning time, rows, shared blocks hit and dirtied, WAL records and bytes;
- from ``pg_stat_user_tables``: rows inserted, updated (of which HOT: no index written), deleted;
- from ``pg_stat_wal`` (reset with the statements): the WAL the whole server wrote, full-page
  images included — run it on a server of its own, where nothing else writes;
- with ``pg_walinspect`` (PostgreSQL 15; the extension created in the same database): that WAL by
  record type (``Heap/LOCK`` is an update whose new row version did not fit on its page,
  ``Btree/INSERT_LEAF`` an index entry, ``Heap/HOT_UPDATE`` an update that wrote none).

Without ``pg_stat_statements`` only the tables and the WAL are reported. The engine's own figures
(``jobs_per_s``, ``postgres_cpu_ms_per_job``, …) come out as it prints them.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import engine

_STATEMENTS = """
SELECT query, calls, plans, total_exec_time, total_plan_time, rows, shared_blks_hit, shared_blks_read,
       shared_blks_dirtied, wal_records, wal_fpi, wal_bytes
FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
WHERE d.datname = %s
ORDER BY total_exec_time + total_plan_time DESC
"""
_TABLES = """
SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del
FROM pg_stat_user_tables WHERE n_tup_ins + n_tup_upd + n_tup_del > 0 ORDER BY relname
"""


class _Collector:
    def __init__(self) -> None:
        self.statements: list[dict[str, Any]] = []
        self.tables: list[dict[str, Any]] = []
        self.wal: dict[str, Any] = {}
        self.has_statements = False
        self.has_walinspect = False
        self.start_lsn = ""
        self.records: list[dict[str, Any]] = []

    def reset(self) -> None:
        import psycopg

        with psycopg.connect(engine.PG_ADMIN, autocommit=True) as conn:
            self.has_statements = bool(
                conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'").fetchone()
            )
            if self.has_statements:
                conn.execute("SELECT pg_stat_statements_reset()")
            conn.execute("SELECT pg_stat_reset_shared('wal')")
            self.has_walinspect = bool(
                conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_walinspect'").fetchone()
            )
            self.start_lsn = str(conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0])  # type: ignore[index]

    def collect(self, name: str) -> None:
        import psycopg
        from psycopg.rows import dict_row

        with psycopg.connect(engine.PG_ADMIN, autocommit=True, row_factory=dict_row) as conn:
            if self.has_statements:
                self.statements = conn.execute(_STATEMENTS, (name,)).fetchall()
            self.wal = conn.execute("SELECT wal_records, wal_fpi, wal_bytes FROM pg_stat_wal").fetchone() or {}
            if self.has_walinspect:
                self.records = conn.execute(
                    "SELECT resource_manager || '/' || record_type AS kind, COUNT(*) AS n, SUM(record_length) AS bytes "
                    "FROM pg_get_wal_records_info(%s::pg_lsn, pg_current_wal_flush_lsn()) GROUP BY 1 ORDER BY 2 DESC",
                    (self.start_lsn,),
                ).fetchall()
        url = engine.PG_ADMIN.rsplit("/", 1)[0] + "/" + name
        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
            self.tables = conn.execute(_TABLES).fetchall()


def main() -> None:
    top = 25
    argv = sys.argv[1:]
    as_json = "--json" in argv
    if "--top" in argv:
        at = argv.index("--top")
        top = int(argv[at + 1])
        del argv[at:at + 2]
    n = int(argv[argv.index("--n") + 1]) if "--n" in argv else 1000
    collector = _Collector()
    create, drop = engine.create_pg_database, engine.drop_pg_database

    def create_and_reset() -> tuple[str, str]:
        made = create()
        collector.reset()
        return made

    def collect_and_drop(name: str) -> None:
        try:
            collector.collect(name)
        finally:
            drop(name)

    engine.create_pg_database = create_and_reset  # type: ignore[assignment]
    engine.drop_pg_database = collect_and_drop  # type: ignore[assignment]
    sys.argv = [str(Path(engine.__file__)), *[a for a in argv if a != "--json"], "--store", "postgres", "--json"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        engine.main()
    result = json.loads(out.getvalue().strip().splitlines()[-1])
    per = 1000 / n
    statements = [
        {
            "query": " ".join(row["query"].split())[:160],
            "calls": round(row["calls"] * per, 1),
            "exec_ms": round(row["total_exec_time"] * per, 2),
            "plan_ms": round(row["total_plan_time"] * per, 2),
            "plans": round(row["plans"] * per, 1),
            "rows": round(row["rows"] * per, 1),
            "blks_hit": round(row["shared_blks_hit"] * per),
            "blks_dirtied": round(row["shared_blks_dirtied"] * per, 1),
            "wal_records": round(row["wal_records"] * per),
            "wal_kb": round(float(row["wal_bytes"]) * per / 1024, 1),
        }
        for row in collector.statements
    ]
    totals = {
        key: round(sum(s[key] for s in statements), 2)
        for key in ("calls", "exec_ms", "plan_ms", "blks_hit", "blks_dirtied", "wal_records", "wal_kb")
    }
    tables = [
        {"table": t["relname"], "ins": round(t["n_tup_ins"] * per), "upd": round(t["n_tup_upd"] * per),
         "hot": round(t["n_tup_hot_upd"] * per), "del": round(t["n_tup_del"] * per)}
        for t in collector.tables
    ]
    wal = {
        "records": round(collector.wal.get("wal_records", 0) * per),
        "fpi": round(collector.wal.get("wal_fpi", 0) * per),
        "kb": round(float(collector.wal.get("wal_bytes", 0)) * per / 1024, 1),
    }
    records = {r["kind"]: [round(r["n"] * per), round(float(r["bytes"]) * per / 1024, 1)] for r in collector.records}
    if not collector.has_statements:
        totals = {}
    report = {"engine": result, "per_1000_jobs": {"statements_total": totals, "wal_server": wal, "wal_records": records,
                                                  "tables": tables, "statements": statements[:top]}}
    if as_json:
        print(json.dumps(report))
        return
    print(json.dumps(result))
    if collector.has_statements:
        print(f"\nper 1,000 jobs — statements: {totals}")
    else:
        print("\nper 1,000 jobs — statements: pg_stat_statements is not loaded on this server")
    print(f"server WAL: {wal}")
    if records:
        print("WAL records (count, kB): " + ", ".join(f"{k} {v[0]} {v[1]}" for k, v in records.items() if v[0] >= 10))
    print(f"\n{'table':<16} {'ins':>7} {'upd':>7} {'hot':>7} {'del':>7}")
    for t in tables:
        print(f"{t['table']:<16} {t['ins']:>7} {t['upd']:>7} {t['hot']:>7} {t['del']:>7}")
    print(f"\n{'exec ms':>8} {'plan ms':>8} {'calls':>7} {'rows':>7} {'hit':>7} {'dirt':>6} {'walrec':>7} {'wal kB':>7}  query")
    for s in statements[:top]:
        print(f"{s['exec_ms']:>8} {s['plan_ms']:>8} {s['calls']:>7} {s['rows']:>7} {s['blks_hit']:>7} "
              f"{s['blks_dirtied']:>6} {s['wal_records']:>7} {s['wal_kb']:>7}  {s['query']}")


if __name__ == "__main__":
    main()
