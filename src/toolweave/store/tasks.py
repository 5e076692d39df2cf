"""The queue: the ``tasks`` table.

A task is claimable when ``available_at <= now``. Claiming sets the lease owner and pushes
``available_at`` to the lease's expiry, so a worker that dies simply lets its tasks become
claimable again (the attempt is counted). Heartbeats push the expiry of a worker's leases;
finishing a task deletes it.

Every claim writes a fresh ``claim_token``; finishing, rescheduling or handing back a task names
the ``Claim`` (task id and token) it holds, so only the claim that holds a task can end it: a
worker whose lease expired and was taken over, or one that kept the id of a task finished by
someone else, changes nothing. Task ids are never reused (``AUTOINCREMENT`` on SQLite, a
sequence on PostgreSQL).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from toolweave.model.status import TaskKind
from toolweave.store import generations as gens_q
from toolweave.store.db import Row, Tx
from toolweave.store.tx import one_of, text_array


@dataclass(frozen=True)
class Claim:
    """One lease of one task: what its holder finishes it, reschedules it or hands it back by."""

    task_id: int
    token: str


@dataclass(frozen=True)
class Task:
    task_id: int
    kind: TaskKind
    run_id: str | None
    ref_id: str | None
    attempts: int
    token: str = ""
    """The claim token of a leased task (empty for a queued one)."""

    @property
    def claim(self) -> Claim:
        return Claim(self.task_id, self.token)


def new_token() -> str:
    return os.urandom(8).hex()



_INSERT = (
    "INSERT INTO tasks (kind, run_id, ref_id, priority, available_at, lease_owner, claim_token, attempts, created_at) "
    "VALUES (:kind, :run_id, :ref_id, :priority, :available_at, :lease_owner, :token, :attempts, :created_at)"
)
_INSERT_RETURNING = _INSERT + " RETURNING task_id"
"""On PostgreSQL; on SQLite a leased task's id is the rowid its insert made (``lastrowid``): SQLite
gathers a RETURNING clause's rows in a temporary table, about 33,000 instructions a statement
(docs/benchmarks.md, "2026-12-05")."""

_INSERT_QUEUED = (
    "INSERT INTO tasks (kind, run_id, ref_id, priority, available_at, attempts, created_at) "
    "VALUES (:kind, :run_id, :ref_id, :priority, :available_at, 0, :created_at)"
)

_QUEUE = (
    "INSERT INTO tasks (kind, run_id, ref_id, priority, available_at, attempts, created_at) "
    "VALUES (:kind, :run_id, :ref_id, :priority, :available_at, :attempts, :created_at)"
)

_CLAIM = (
    "UPDATE tasks SET lease_owner = :owner, claim_token = :token, available_at = :expires, attempts = attempts + 1 "
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
    attempted: bool = False,
) -> Task:
    """Add a task. With ``lease_owner`` it is created already claimed by that worker. ``attempted``:
    an earlier task may have done this work already (a dispatch made again by the sweep), so its
    first claim counts as a second attempt and the service re-attaches rather than submits.

    A queued task (no ``lease_owner``) is written without waiting for the server (``Tx.put``:
    pipelined on PostgreSQL, where a fan-out's branches queued beyond the worker's free slots were
    a round trip each, under the run's lock); nothing reads its id, so the ``Task`` returned for it
    has ``task_id`` 0."""
    attempts = (1 if lease_owner else 0) + (1 if attempted else 0)
    if lease_owner is None:
        tx.put(
            _QUEUE,
            {"kind": kind.value, "run_id": run_id, "ref_id": ref_id, "priority": priority,
             "available_at": at if at is not None else now, "attempts": attempts, "created_at": now},
        )
        tx.wake()
        return Task(0, kind, run_id, ref_id, attempts)
    available = now + lease_seconds
    token = new_token()
    params = {
        "kind": kind.value, "run_id": run_id, "ref_id": ref_id, "priority": priority,
        "available_at": available, "lease_owner": lease_owner, "token": token, "attempts": attempts,
        "created_at": now,
    }
    if tx.is_postgres:
        task_id = tx.q(_INSERT_RETURNING, params).fetchone()[0]
    else:
        task_id = tx.q(_INSERT, params).lastrowid
    return Task(int(task_id), kind, run_id, ref_id, attempts, token)


def enqueue_leased(
    tx: Tx, kind: TaskKind, *, run_id: str, ref_id: str, now: float, priority: int, owner: str, lease_seconds: float,
    then: Callable[[Task], None],
) -> None:
    """Add a task already claimed by ``owner`` (``enqueue`` with a ``lease_owner``); ``then(task)``
    hears of it once its id is known (with the commit: the statement is pipelined)."""
    token = new_token()
    params = {
        "kind": kind.value, "run_id": run_id, "ref_id": ref_id, "priority": priority,
        "available_at": now + lease_seconds, "lease_owner": owner, "token": token, "attempts": 1,
        "created_at": now,
    }
    if not tx.is_postgres:
        then(Task(int(tx.q(_INSERT, params).lastrowid), kind, run_id, ref_id, 1, token))
        return

    def made(row: Any) -> None:
        then(Task(int(row["task_id"]), kind, run_id, ref_id, 1, token))

    tx.put(_INSERT_RETURNING, params, then=made)


def enqueue_many(tx: Tx, rows: list[dict[str, Any]]) -> None:
    """Queue unleased tasks, each ``{kind, run_id, ref_id, priority, available_at, created_at}``,
    with one ``executemany`` (bulk submission); wakes the workers once."""
    if rows:
        tx.many(_INSERT_QUEUED, rows)
        tx.wake()


def claim(tx: Tx, owner: str, limit: int, now: float, lease_seconds: float) -> list[Task]:
    """Lease up to ``limit`` due tasks, highest priority first, under one new claim token."""
    if limit <= 0:
        return []
    token = new_token()
    rows = tx.all(_CLAIM, {"owner": owner, "token": token, "expires": now + lease_seconds, "now": now, "limit": limit})
    return [Task(r["task_id"], TaskKind(r["kind"]), r["run_id"], r["ref_id"], r["attempts"], token) for r in rows]


_CLAIM_WITH_GENERATIONS = (
    "WITH claimed AS (" + _CLAIM + ") "
    "SELECT c.task_id AS claimed_task_id, c.kind AS claimed_kind, c.run_id AS claimed_run_id, "
    "c.ref_id AS claimed_ref_id, c.attempts AS claimed_attempts, g.*, r.tool_shas, r.parent_run_id AS run_parent_id "
    "FROM claimed c LEFT JOIN generations g ON g.generation_id = c.ref_id AND c.kind IN ('dispatch', 'poll', 'cancel') "
    "LEFT JOIN runs r ON r.run_id = g.run_id"
)
_NEEDS_GENERATION = frozenset({TaskKind.DISPATCH, TaskKind.POLL, TaskKind.CANCEL})


def claim_with_generations(
    tx: Tx, owner: str, limit: int, now: float, lease_seconds: float
) -> list[tuple[Task, Row | None]]:
    """``claim``, each task with what a worker needs to run it: for a dispatch, poll or cancel task
    its generation with its run's ``tool_shas`` and ``run_parent_id`` (``generations.with_tool_shas``; None when the
    generation is gone). On PostgreSQL one statement (one round trip), on SQLite two."""
    if limit <= 0:
        return []
    if not tx.is_postgres:
        tasks = claim(tx, owner, limit, now, lease_seconds)
        found = gens_q.with_tool_shas(tx, [t.ref_id or "" for t in tasks if t.kind in _NEEDS_GENERATION])
        return [(t, found.get(t.ref_id or "") if t.kind in _NEEDS_GENERATION else None) for t in tasks]
    token = new_token()
    rows = tx.all(
        _CLAIM_WITH_GENERATIONS,
        {"owner": owner, "token": token, "expires": now + lease_seconds, "now": now, "limit": limit},
    )
    claimed: list[tuple[Task, Row | None]] = []
    for r in sorted(rows, key=lambda r: r["claimed_task_id"]):
        task = Task(r.pop("claimed_task_id"), TaskKind(r.pop("claimed_kind")), r.pop("claimed_run_id"),
                    r.pop("claimed_ref_id"), r.pop("claimed_attempts"), token)
        claimed.append((task, r if r["generation_id"] is not None else None))
    return claimed


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
        "UPDATE tasks SET lease_owner = NULL, claim_token = NULL, available_at = :now WHERE lease_owner = :owner",
        {"now": now, "owner": owner},
    )
    if count:
        tx.wake()
    return count


def finish(tx: Tx, claim: Claim) -> bool:
    """Delete the task ``claim`` holds. False when that claim no longer holds it (its lease
    expired and another worker took the task over, or it was finished already)."""
    return tx.rowcount(_FINISH, {"id": claim.task_id, "token": claim.token}) > 0


_FINISH = "DELETE FROM tasks WHERE task_id = :id AND claim_token = :token"
_FINISH_PAIRS = (
    "DELETE FROM tasks t USING unnest(CAST(:ids AS bigint[]), CAST(:tokens AS text[])) AS c(id, token) "
    "WHERE t.task_id = c.id AND t.claim_token = c.token"
)


def finish_many(tx: Tx, claims: list[Claim]) -> None:
    """Delete the tasks these claims hold (a task a claim no longer holds stays); sent without
    waiting for its result."""
    if len(claims) == 1:
        tx.q(_FINISH, {"id": claims[0].task_id, "token": claims[0].token})
    elif claims and tx.is_postgres:
        # one statement's text however many claims (prepared once: see ``db.among``)
        tx.q(_FINISH_PAIRS, {"ids": "{" + ",".join(str(int(c.task_id)) for c in claims) + "}",
                             "tokens": text_array([c.token for c in claims])})
    elif claims:
        pairs = " OR ".join(f"(task_id = :t{i} AND claim_token = :k{i})" for i in range(len(claims)))
        params: dict[str, Any] = {}
        for i, c in enumerate(claims):
            params[f"t{i}"], params[f"k{i}"] = c.task_id, c.token
        tx.q(f"DELETE FROM tasks WHERE {pairs}", params)


def reschedule(tx: Tx, claim: Claim, at: float) -> bool:
    """Put a leased task back in the queue, due at ``at`` (a poll that found the run still busy)."""
    return tx.rowcount(
        "UPDATE tasks SET lease_owner = NULL, claim_token = NULL, available_at = :at "
        "WHERE task_id = :id AND claim_token = :token",
        {"at": at, "id": claim.task_id, "token": claim.token},
    ) > 0


def hold(tx: Tx, claim: Claim, expires: float) -> bool:
    """Extend the lease of the task ``claim`` holds to ``expires``; False when that claim no longer
    holds it (its lease ran out and another worker took the task over). The row is written, not
    only read: a claim under way that saw the lease run out finds it renewed and passes the task by
    (``FOR UPDATE`` checks the newest row again), so two workers never both go on from here."""
    return tx.rowcount(
        "UPDATE tasks SET available_at = :expires WHERE task_id = :id AND claim_token = :token",
        {"expires": expires, "id": claim.task_id, "token": claim.token},
    ) > 0


def put_back(tx: Tx, claim: Claim, at: float) -> bool:
    """Hand a leased task back unrun, due at ``at``; the claim does not count as an attempt
    (a dispatch waiting for a concurrency slot never reached its backend)."""
    return tx.rowcount(
        "UPDATE tasks SET lease_owner = NULL, claim_token = NULL, available_at = :at, attempts = attempts - 1 "
        "WHERE task_id = :id AND claim_token = :token",
        {"at": at, "id": claim.task_id, "token": claim.token},
    ) > 0


def delete_for(tx: Tx, ref_id: str, kinds: tuple[TaskKind, ...]) -> None:
    tx.q(f"DELETE FROM tasks WHERE ref_id = :ref AND {one_of('kind', kinds)}", {"ref": ref_id})


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


def advance_due_by(tx: Tx, run_id: str, at: float) -> bool:
    """True when the run has an unleased ``advance`` task due at ``at`` or before (a timer to keep)."""
    row = tx.one(
        "SELECT task_id FROM tasks WHERE kind = 'advance' AND ref_id = :ref AND lease_owner IS NULL"
        " AND available_at <= :at LIMIT 1",
        {"ref": run_id, "at": at},
    )
    return row is not None


def schedule_evaluation(
    tx: Tx, run_id: str, *, now: float, at: float, priority: int, lease_owner: str | None, lease_seconds: float
) -> Task:
    """The run's one queued ``evaluate`` task (a leased one is being worked on and stays)."""
    tx.q("DELETE FROM tasks WHERE kind = 'evaluate' AND ref_id = :ref AND lease_owner IS NULL", {"ref": run_id})
    return enqueue(tx, TaskKind.EVALUATE, run_id=run_id, ref_id=run_id, now=now, at=at, priority=priority,
                   lease_owner=lease_owner, lease_seconds=lease_seconds)


PRIORITIES = (
    "WITH RECURSIVE priorities(p) AS (SELECT MAX(priority) FROM tasks "
    "UNION ALL SELECT (SELECT MAX(priority) FROM tasks WHERE priority < priorities.p) FROM priorities "
    "WHERE priorities.p IS NOT NULL) "
)
"""The distinct priorities of the queue, read from ``ix_tasks_due`` one seek each (a loose index
scan): the queue's earliest ``available_at`` is the earliest of each priority's first entries
(``SELECT … FROM priorities WHERE p IS NOT NULL``). There is no index on ``available_at`` alone
(migration 0020): every task would write an entry in it for these reads only."""


NEXT_DUE = (
    PRIORITIES + "SELECT MIN((SELECT MIN(available_at) FROM tasks WHERE priority = priorities.p "
    "AND available_at > :now)) AS at FROM priorities WHERE priorities.p IS NOT NULL"
)


def next_due(tx: Tx, now: float) -> float | None:
    """When the next task falls due (leased ones included: their lease may expire)."""
    row = tx.one(NEXT_DUE, {"now": now})
    return None if row is None or row.at is None else float(row.at)


def depth(tx: Tx, now: float) -> dict[str, int]:
    """Tasks by kind (for metrics)."""
    return {r.kind: int(r.n) for r in tx.all("SELECT kind, COUNT(*) AS n FROM tasks GROUP BY kind")}


def oldest_due(tx: Tx, now: float) -> float | None:
    """How long the oldest due, unclaimed task has waited (queue lag), in seconds."""
    row = tx.one(
        PRIORITIES + "SELECT MIN((SELECT available_at FROM tasks WHERE priority = priorities.p "
        "AND available_at <= :now AND lease_owner IS NULL ORDER BY available_at LIMIT 1)) AS at "
        "FROM priorities WHERE priorities.p IS NOT NULL",
        {"now": now},
    )
    return None if row is None or row.at is None else max(0.0, now - float(row.at))
