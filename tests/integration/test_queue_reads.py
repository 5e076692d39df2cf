"""The queue's reads of the earliest task (when the next one falls due, the oldest waiting one) go by
``ix_tasks_due``, one seek per priority (migration 0020 dropped ``ix_tasks_available``, which every
task's insert, claim and delete wrote for these reads alone): the same answers as a plain scan of
the queue, on both stores, with tasks of several priorities, leased ones and tasks due later."""

from __future__ import annotations

import random
from typing import Any

from toolweave.store import stats
from toolweave.store import tasks as tasks_q
from toolweave.store.db import Store

NOW = 1_000.0


def _fill(store: Store, seed: int) -> list[dict[str, Any]]:
    """A queue with tasks of five priorities: due, due later, leased (their lease running or run out)."""
    rng = random.Random(seed)
    rows = []
    for i in range(60):
        leased = rng.random() < 0.3
        rows.append({
            "kind": rng.choice(["advance", "dispatch", "poll"]), "run_id": f"run_{i}", "ref_id": f"ref_{i}",
            "priority": rng.choice([-3, 0, 0, 2, 7]), "available_at": NOW + rng.uniform(-500, 500),
            "lease_owner": "w1" if leased else None, "claim_token": "t" if leased else None,
            "attempts": 1 if leased else 0, "created_at": 1.0,
        })
    store.run_sync(lambda tx: tx.many(
        "INSERT INTO tasks (kind, run_id, ref_id, priority, available_at, lease_owner, claim_token, attempts, created_at) "
        "VALUES (:kind, :run_id, :ref_id, :priority, :available_at, :lease_owner, :claim_token, :attempts, :created_at)",
        rows,
    ))
    return rows


def test_the_earliest_tasks_are_found_by_priority_as_a_scan_would(store: Store) -> None:
    assert store.read_sync(lambda tx: tasks_q.next_due(tx, NOW)) is None  # an empty queue
    assert store.read_sync(lambda tx: tasks_q.oldest_due(tx, NOW)) is None
    assert store.read_sync(lambda tx: tx.one(stats.OLDEST_WAITING, {"now": NOW})) is None
    rows = _fill(store, 15)
    later = min(r["available_at"] for r in rows if r["available_at"] > NOW)
    waiting = min((r for r in rows if r["available_at"] <= NOW and r["lease_owner"] is None),
                  key=lambda r: r["available_at"])

    assert store.read_sync(lambda tx: tasks_q.next_due(tx, NOW)) == later
    assert store.read_sync(lambda tx: tasks_q.oldest_due(tx, NOW)) == NOW - waiting["available_at"]
    oldest = store.read_sync(lambda tx: tx.one(stats.OLDEST_WAITING, {"now": NOW}))
    assert oldest is not None and (oldest.run_id, oldest.available_at) == (waiting["run_id"], waiting["available_at"])

    # nothing due later, nothing waiting: every task leased until later
    store.run_sync(lambda tx: tx.q("UPDATE tasks SET lease_owner = 'w2', claim_token = 'u', available_at = :at",
                                   {"at": NOW - 1}))
    assert store.read_sync(lambda tx: tasks_q.next_due(tx, NOW)) is None
    assert store.read_sync(lambda tx: tasks_q.oldest_due(tx, NOW)) is None
    assert store.read_sync(lambda tx: tx.one(stats.OLDEST_WAITING, {"now": NOW})) is None


def test_the_queue_reads_and_the_sweep_use_the_indexes_left(store: Store) -> None:
    """The earliest task of each priority is a seek of ``ix_tasks_due``; the sweep for stranded runs
    reads ``ix_runs_account_unfinished``; neither dropped index is there any more."""
    from toolweave.store import runs as runs_q

    _fill(store, 3)

    def plan(build: Any) -> str:
        def read(tx: Any) -> str:
            sql, params = build(tx)
            if tx.is_postgres:
                tx.q("SET LOCAL enable_seqscan = off")
                return " | ".join(str(r[0]) for r in tx.q("EXPLAIN " + sql, params).fetchall())
            return " | ".join(str(r[3]) for r in tx.q("EXPLAIN QUERY PLAN " + sql, params).fetchall())

        return str(store.run_sync(read))

    def indexes(tx: Any) -> set[str]:
        if tx.is_postgres:
            return {r.indexname for r in tx.all("SELECT indexname FROM pg_indexes WHERE tablename IN ('tasks', 'runs')")}
        return {r.name for r in tx.all("SELECT name FROM sqlite_master WHERE type = 'index'")}

    found = store.read_sync(indexes)
    assert "ix_tasks_due" in found and "ix_runs_account_unfinished" in found
    assert not {"ix_tasks_available", "ix_runs_unfinished"} & found, found

    next_due = plan(lambda tx: (tasks_q.NEXT_DUE, {"now": NOW}))
    oldest = plan(lambda tx: (stats.OLDEST_WAITING, {"now": NOW}))
    for found_plan in (next_due, oldest):
        assert "ix_tasks_due" in found_plan, found_plan
        if store.engine.dialect.name == "sqlite":
            assert "SCAN tasks" not in found_plan and "SCAN t " not in found_plan, found_plan
    sweep = plan(lambda tx: (runs_q._STRANDED.format(unfinished=runs_q.unfinished(tx, "r."), only=""), {"limit": 5}))
    assert "ix_runs_account_unfinished" in sweep, sweep


def test_a_claim_takes_due_tasks_by_priority_then_age_and_leases_them(store: Store) -> None:
    """A claim leases the due tasks, highest priority first, then the longest due (``ix_tasks_due``),
    with their attempt counted and one token; tasks due later stay."""
    rows = _fill(store, 8)
    due = sorted((r for r in rows if r["available_at"] <= NOW), key=lambda r: (-r["priority"], r["available_at"]))
    ids = store.read_sync(lambda tx: {r.run_id: r.task_id for r in tx.all("SELECT run_id, task_id FROM tasks")})

    claimed = store.run_sync(lambda tx: tasks_q.claim(tx, "w9", 5, NOW, 30.0))
    assert sorted(t.task_id for t in claimed) == sorted(ids[r["run_id"]] for r in due[:5])
    assert len({t.token for t in claimed}) == 1 and claimed[0].token
    by_run = {r["run_id"]: r for r in rows}
    assert all(t.attempts == by_run[str(t.run_id)]["attempts"] + 1 for t in claimed)
    leased = store.read_sync(lambda tx: tx.all(
        "SELECT lease_owner, claim_token, available_at, attempts FROM tasks WHERE lease_owner = 'w9'"
    ))
    assert len(leased) == 5
    assert all((r.claim_token, r.available_at) == (claimed[0].token, NOW + 30.0) for r in leased)

    rest = store.run_sync(lambda tx: tasks_q.claim(tx, "w10", 100, NOW, 30.0))
    assert sorted(t.task_id for t in rest) == sorted(ids[r["run_id"]] for r in due[5:])
    assert store.run_sync(lambda tx: tasks_q.claim(tx, "w11", 5, NOW, 30.0)) == []
    assert store.run_sync(lambda tx: tasks_q.finish(tx, claimed[0].claim))
