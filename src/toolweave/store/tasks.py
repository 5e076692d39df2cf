"""The queue: the ``tasks`` table.

A task is claimable when ``available_at <= now``. Claiming sets the lease owner and pushes
``available_at`` to the lease's expiry, so a worker that dies simply lets its tasks become
claimable again (the attempt is counted). Heartbeats push the expiry of a worker's leases;
finishing a task deletes it.
"""

from __future__ import annotations

from dataclasses import dataclass

from toolweave.model.status import TaskKind
from toolweave.store.db import Tx, in_list


@dataclass(frozen=True)
class Task:
    task_id: int
    kind: TaskKind
    run_id: str | None
    ref_id: str | None
    attempts: int


_INSERT = (
    "INSERT INTO tasks (kind, run_id, ref_id, priority, available_at, lease_owner, attempts, created_at) "
    "VALUES (:kind, :run_id, :ref_id, :priority, :available_at, :lease_owner, :attempts, :created_at) "
    "RETURNING task_id"
)

_CLAIM = (
    "UPDATE tasks SET lease_owner = :owner, available_at = :expires, attempts = attempts + 1 "
    "WHERE task_id IN (SELECT task_id FROM tasks WHERE available_at <= :now "
    "ORDER BY priority DESC, available_at LIMIT :limit FOR UPDATE SKIP LOCKED) "
    "RETURNING task_id, kind, run_id, ref_id, attempts"
)


def enqueue(
    tx: Tx,
    kind: TaskKind,
    *,
    run_id: str | None,
    ref_id: str | None,
    now: float,
    at: float | None = None,
    priority: int = 0,
    lease_owner: str | None = None,
    lease_seconds: float = 30.0,
) -> Task:
    """Add a task. With ``lease_owner`` it is created already claimed by that worker."""
    available = (now + lease_seconds) if lease_owner else (at if at is not None else now)
    attempts = 1 if lease_owner else 0
    row = tx.q(
        _INSERT,
        {
            "kind": kind.value, "run_id": run_id, "ref_id": ref_id, "priority": priority,
            "available_at": available, "lease_owner": lease_owner, "attempts": attempts, "created_at": now,
        },
    ).fetchone()
    if lease_owner is None:
        tx.wake()
    return Task(int(row[0]), kind, run_id, ref_id, attempts)


def reuse(
    tx: Tx, task_id: int, kind: TaskKind, *, run_id: str | None, ref_id: str | None, priority: int,
    lease_owner: str, expires: float,
) -> Task:
    """Turn a finished task of ``lease_owner``'s into a new one leased to it (one UPDATE instead of
    a DELETE and an INSERT on the engine's hot path)."""
    tx.q(
        "UPDATE tasks SET kind = :kind, run_id = :run_id, ref_id = :ref_id, priority = :priority, "
        "available_at = :expires, lease_owner = :owner, attempts = 1 WHERE task_id = :id",
        {"kind": kind.value, "run_id": run_id, "ref_id": ref_id, "priority": priority, "expires": expires,
         "owner": lease_owner, "id": task_id},
    )
    return Task(task_id, kind, run_id, ref_id, 1)


def claim(tx: Tx, owner: str, limit: int, now: float, lease_seconds: float) -> list[Task]:
    """Lease up to ``limit`` due tasks, highest priority first."""
    if limit <= 0:
        return []
    rows = tx.all(_CLAIM, {"owner": owner, "expires": now + lease_seconds, "now": now, "limit": limit})
    return [Task(r.task_id, TaskKind(r.kind), r.run_id, r.ref_id, r.attempts) for r in rows]


def heartbeat(tx: Tx, owner: str, now: float, lease_seconds: float) -> int:
    """Extend every lease held by ``owner``."""
    # rows another transaction holds right now (a step being recorded) are skipped, not waited
    # for: waiting could deadlock with that transaction, and the next heartbeat comes soon enough
    return tx.rowcount(
        "UPDATE tasks SET available_at = :expires WHERE task_id IN "
        "(SELECT task_id FROM tasks WHERE lease_owner = :owner FOR UPDATE SKIP LOCKED)",
        {"expires": now + lease_seconds, "owner": owner},
    )


def release_all(tx: Tx, owner: str, now: float) -> int:
    """Hand back every lease of a worker that is stopping (claimable at once by others)."""
    count = tx.rowcount(
        "UPDATE tasks SET lease_owner = NULL, available_at = :now WHERE lease_owner = :owner",
        {"now": now, "owner": owner},
    )
    if count:
        tx.wake()
    return count


def finish(tx: Tx, task_id: int) -> None:
    tx.q("DELETE FROM tasks WHERE task_id = :id", {"id": task_id})


def finish_many(tx: Tx, task_ids: list[int]) -> None:
    if len(task_ids) == 1:
        finish(tx, task_ids[0])
    elif task_ids:
        ids, params = in_list("t", task_ids)
        tx.q(f"DELETE FROM tasks WHERE task_id IN {ids}", params)


def reschedule(tx: Tx, task_id: int, at: float) -> None:
    """Put a leased task back in the queue, due at ``at`` (a poll that found the run still busy)."""
    tx.q("UPDATE tasks SET lease_owner = NULL, available_at = :at WHERE task_id = :id", {"at": at, "id": task_id})


def put_back(tx: Tx, task_id: int, at: float) -> None:
    """Hand a leased task back unrun, due at ``at``; the claim does not count as an attempt
    (a dispatch waiting for a concurrency slot never reached its backend)."""
    tx.q(
        "UPDATE tasks SET lease_owner = NULL, available_at = :at, attempts = attempts - 1 WHERE task_id = :id",
        {"at": at, "id": task_id},
    )


def delete_for(tx: Tx, ref_id: str, kinds: tuple[TaskKind, ...]) -> None:
    names = ", ".join(f"'{k.value}'" for k in kinds)
    tx.q(f"DELETE FROM tasks WHERE ref_id = :ref AND kind IN ({names})", {"ref": ref_id})


def is_leased(tx: Tx, ref_id: str, kind: TaskKind) -> bool:
    row = tx.one(
        "SELECT task_id FROM tasks WHERE ref_id = :ref AND kind = :kind AND lease_owner IS NOT NULL LIMIT 1",
        {"ref": ref_id, "kind": kind.value},
    )
    return row is not None


def schedule_advance(tx: Tx, run_id: str, at: float, now: float) -> None:
    """Make sure the run is advanced again at ``at`` (one unleased timer task per run)."""
    tx.q(
        "DELETE FROM tasks WHERE kind = 'advance' AND ref_id = :ref AND lease_owner IS NULL",
        {"ref": run_id},
    )
    enqueue(tx, TaskKind.ADVANCE, run_id=run_id, ref_id=run_id, now=now, at=at)


def next_due(tx: Tx, now: float) -> float | None:
    """When the next task falls due (leased ones included: their lease may expire)."""
    row = tx.one("SELECT MIN(available_at) AS at FROM tasks WHERE available_at > :now", {"now": now})
    return None if row is None or row.at is None else float(row.at)


def depth(tx: Tx, now: float) -> dict[str, int]:
    """Tasks by kind (for metrics)."""
    return {r.kind: int(r.n) for r in tx.all("SELECT kind, COUNT(*) AS n FROM tasks GROUP BY kind")}


def oldest_due(tx: Tx, now: float) -> float | None:
    """How long the oldest due, unclaimed task has waited (queue lag), in seconds."""
    row = tx.one(
        "SELECT MIN(available_at) AS at FROM tasks WHERE available_at <= :now AND lease_owner IS NULL", {"now": now}
    )
    return None if row is None or row.at is None else max(0.0, now - float(row.at))
