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


OLDEST_WAITING = (
    tasks.PRIORITIES + ", firsts(task_id) AS (SELECT (SELECT task_id FROM tasks WHERE priority = priorities.p "
    "AND available_at <= :now AND lease_owner IS NULL ORDER BY available_at LIMIT 1) FROM priorities "
    "WHERE priorities.p IS NOT NULL) "
    "SELECT t.kind, t.run_id, t.available_at, g.service_name FROM tasks t "
    "LEFT JOIN generations g ON g.generation_id = t.ref_id AND t.kind IN ('dispatch', 'poll', 'cancel') "
    "WHERE t.task_id = (SELECT f.task_id FROM firsts f WHERE f.task_id IS NOT NULL "
    "ORDER BY (SELECT x.available_at FROM tasks x WHERE x.task_id = f.task_id) LIMIT 1)"
)
"""The task due the longest that no worker holds: the first of each priority in ``ix_tasks_due``, then
the earliest of those (``tasks.PRIORITIES``), each row found by its key."""


def queue(tx: Tx, now: float) -> dict[str, Any]:
    """The queue as people need to see it: per service, the steps waiting for a worker (due now),
    those scheduled later (retries, a full backend), those being sent and those waiting at their
    backend (polled); other work by kind; the oldest task waiting for a worker; tasks each worker
    holds; queued runs."""
    rows = tx.all(
        "SELECT t.kind, g.service_name, t.lease_owner IS NOT NULL AS leased, t.available_at <= :now AS due, "
        "COUNT(*) AS n, MIN(t.available_at) AS since FROM tasks t "
        "LEFT JOIN generations g ON g.generation_id = t.ref_id AND t.kind IN ('dispatch', 'poll', 'cancel') "
        "GROUP BY t.kind, g.service_name, t.lease_owner IS NOT NULL, t.available_at <= :now",
        {"now": now},
    )
    services: dict[str, dict[str, Any]] = {}
    other: dict[str, dict[str, int]] = {}
    for r in rows:
        leased, due, n = bool(r.leased), bool(r.due), int(r.n)
        if r.kind in ("dispatch", "poll") and r.service_name:
            entry = services.setdefault(r.service_name, {
                "service": r.service_name, "waiting": 0, "scheduled": 0, "sending": 0, "atBackend": 0,
                "oldestWaitingSeconds": None})
            if r.kind == "poll":
                entry["atBackend"] += n
            elif leased:
                entry["sending"] += n
            elif due:
                entry["waiting"] += n
                age = max(0.0, now - float(r.since))
                entry["oldestWaitingSeconds"] = max(entry["oldestWaitingSeconds"] or 0.0, age)
            else:
                entry["scheduled"] += n
        else:
            counts = other.setdefault(r.kind, {"kind": r.kind, "waiting": 0, "scheduled": 0, "running": 0})
            counts["running" if leased else "waiting" if due else "scheduled"] += n
    oldest = tx.one(OLDEST_WAITING, {"now": now})
    held = tx.all(
        "SELECT lease_owner, COUNT(*) AS n FROM tasks WHERE lease_owner IS NOT NULL GROUP BY lease_owner"
    )
    queued = tx.one("SELECT COUNT(*) AS n FROM runs WHERE status = 'queued'")
    return {
        "services": sorted(services.values(), key=lambda e: e["service"]),
        "other": sorted(other.values(), key=lambda e: e["kind"]),
        "oldestWaiting": None if oldest is None else {
            "kind": oldest.kind, "runId": oldest.run_id, "service": oldest.service_name,
            "waitingSeconds": max(0.0, now - float(oldest.available_at)),
        },
        "heldBy": {str(r.lease_owner): int(r.n) for r in held},
        "queuedRuns": int(queued.n) if queued is not None else 0,
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
