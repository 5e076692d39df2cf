"""Figures for ``/metrics``, computed in the database so every worker's work is counted."""

from __future__ import annotations

from typing import Any

from toolweave.store import runs, tasks
from toolweave.store.db import Tx


def overview(tx: Tx, now: float) -> dict[str, Any]:
    return {
        "runs": runs.count_by_status(tx),
        "queue": tasks.depth(tx, now),
        "queueLagSeconds": tasks.oldest_due(tx, now),
    }


def work(tx: Tx, buckets: tuple[float, ...]) -> dict[str, Any]:
    cases = ", ".join(
        f"SUM(CASE WHEN finished_at - started_at <= {float(b)!r} THEN 1 ELSE 0 END) AS b{i}" for i, b in enumerate(buckets)
    )
    rows = tx.all(
        f"SELECT status, COUNT(*) AS n, SUM(finished_at - started_at) AS total{', ' + cases if cases else ''} "
        "FROM step_runs WHERE finished_at IS NOT NULL AND started_at IS NOT NULL GROUP BY status"
    )
    steps = {
        r.status: {
            "count": int(r.n),
            "sum": float(r.total or 0.0),
            "buckets": [int(r[f"b{i}"] or 0) for i in range(len(buckets))],
        }
        for r in rows
    }
    errors = tx.all(
        "SELECT service_name, status, COUNT(*) AS n FROM generations WHERE status IN ('failed', 'timeout') "
        "GROUP BY service_name, status"
    )
    return {"steps": steps, "backendErrors": [(r.service_name, r.status, int(r.n)) for r in errors]}
