"""Runs, their step runs and the definition snapshots they execute."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Collection, Iterator, Mapping
from decimal import Decimal
from typing import Any

from toolweave.model.status import RUN_ALLOWED_PRIOR, RunStatus, StepStatus
from toolweave.store import codec
from toolweave.store import events as events_q
from toolweave.store.db import Row, Tx, in_list
from toolweave.store.tx import one_of

_STEP_COLUMNS = (
    "run_id, step_id, position, status, attempt, tool_id, using_fallback, generation_id, generation_ids, "
    "child_run_id, outputs, reason, error, skipped_by_error, progress, next_attempt_at, started_at, finished_at, "
    "reused_from_run_id, items_total, items_succeeded, items_failed, question_id"
)


def snapshot_sha(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def put_snapshot(tx: Tx, sha: str, kind: str, definition_id: str, version: str, body: dict[str, Any], now: float) -> None:
    """Store a definition snapshot once (idempotent: concurrent first submits of one definition
    each insert it, and all but one find it there)."""
    tx.q(
        "INSERT INTO snapshots (sha256, kind, definition_id, version, body, created_at) "
        "VALUES (:sha, :kind, :def_id, :version, :body, :now) ON CONFLICT (sha256) DO NOTHING",
        {"sha": sha, "kind": kind, "def_id": definition_id, "version": version, "body": body, "now": now},
    )


def get_snapshot(tx: Tx, sha: str) -> dict[str, Any]:
    row = tx.one("SELECT body FROM snapshots WHERE sha256 = :sha", {"sha": sha})
    if row is None:
        raise KeyError(f"no definition snapshot {sha}")
    body: dict[str, Any] = row.body
    return body


def insert_run(tx: Tx, **values: Any) -> bool:
    """Insert a run; False (nothing inserted) when its account already has a run with its
    idempotency key. On PostgreSQL a concurrent insert of the same key makes this wait for that
    transaction: it then finds the other's run committed (or inserts, if the other rolled back)."""
    row = tx.q(_insert_sql("runs", tuple(values)) + _YIELD_TO_KEY, values).fetchone()
    return row is not None


_YIELD_TO_KEY = (
    " ON CONFLICT (master_account_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING RETURNING run_id"
)
"""The keys' unique index is partial (``ux_runs_idempotency``): the conflict target names its predicate."""
_KEYED_ROWS = 100
"""Runs with an idempotency key per multi-row INSERT (its parameters stay far below every limit)."""


def insert_runs(tx: Tx, rows: list[dict[str, Any]]) -> set[str]:
    """Insert run rows that all have the same columns: those without an idempotency key with one
    ``executemany``, those with one by multi-row INSERTs that yield to a run already holding the
    key (as ``insert_run`` does). Returns the ids of the runs not inserted for that reason."""
    if not rows:
        return set()
    columns = tuple(rows[0])
    plain = [r for r in rows if not r.get("idempotency_key")]
    if plain:
        tx.many(_insert_sql("runs", columns), plain)
    keyed = [r for r in rows if r.get("idempotency_key")]
    lost: set[str] = set()
    for first in range(0, len(keyed), _KEYED_ROWS):
        part = keyed[first:first + _KEYED_ROWS]
        values = ", ".join("(" + ", ".join(f":{c}_{i}" for c in columns) + ")" for i in range(len(part)))
        params = {f"{c}_{i}": row[c] for i, row in enumerate(part) for c in columns}
        inserted = {r.run_id for r in tx.all(f"INSERT INTO runs ({', '.join(columns)}) VALUES {values}{_YIELD_TO_KEY}", params)}
        lost.update(r["run_id"] for r in part if r["run_id"] not in inserted)
    return lost


def insert_step_rows(tx: Tx, rows: list[dict[str, Any]]) -> None:
    """Insert step-run rows that all have the same columns (one ``executemany``)."""
    if rows:
        tx.many(_insert_sql("step_runs", tuple(rows[0])), rows)


@functools.lru_cache(maxsize=32)
def _insert_sql(table: str, columns: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(':' + c for c in columns)})"


def insert_steps(tx: Tx, run_id: str, step_ids: list[str]) -> None:
    tx.many(
        "INSERT INTO step_runs (run_id, step_id, position, status, attempt, using_fallback, generation_ids, "
        "skipped_by_error) VALUES (:run_id, :step_id, :position, 'pending', 0, :f, '[]', :f)",
        [{"run_id": run_id, "step_id": sid, "position": i, "f": False} for i, sid in enumerate(step_ids)],
    )


def get(tx: Tx, run_id: str, *, lock: bool = False) -> Row | None:
    sql = "SELECT * FROM runs WHERE run_id = :id FOR UPDATE" if lock else "SELECT * FROM runs WHERE run_id = :id"
    return tx.one(sql, {"id": run_id})


STATE_COLUMNS = (
    "run_id", "job_definition_id", "definition_version", "definition_sha", "tool_shas", "master_account_id",
    "session_id", "initiating_event_id", "origin", "status", "cost_usd", "error", "cancel_requested", "callback_url",
    "idempotency_key", "parent_run_id", "parent_step_id", "priority", "deadline_at", "created_at", "started_at",
    "finished_at", "updated_at", "forked_from_run_id", "forked_from_step", "random_inputs", "credit_run_id", "budget",
    "queue_at",
)
"""Every column of ``runs`` but ``job_inputs`` and ``final_outputs`` (written out: ``schema`` imports
SQLAlchemy, which a command that runs one tool does not need; a test keeps the two in step)."""
_STATE_COLUMNS = ", ".join(STATE_COLUMNS)


def lock_state(tx: Tx, run_id: str) -> Row | None:
    """The run row without its inputs and final outputs, locked: what each transition of the run
    needs. The inputs never change and may be large (a list a map step runs over): the engine
    reads them once (``inputs``) and keeps them."""
    return tx.one(f"SELECT {_STATE_COLUMNS} FROM runs WHERE run_id = :id FOR UPDATE", {"id": run_id})


def lock_states(tx: Tx, run_ids: list[str]) -> Callable[[], dict[str, Row]]:
    """``lock_state`` of several runs in one statement, locked in the order of their ids (two
    transactions locking overlapping sets cannot deadlock on them). Sent now; the returned
    function reads them (``Tx.fetch``)."""
    if not run_ids:
        return dict
    ids, params = tx.among("run_id", "r", run_ids)
    rows = tx.fetch(f"SELECT {_STATE_COLUMNS} FROM runs WHERE {ids} ORDER BY run_id FOR UPDATE", params)
    return lambda: {r["run_id"]: r for r in rows()}


def inputs_of(tx: Tx, run_ids: list[str]) -> Callable[[], dict[str, dict[str, Any]]]:
    """The inputs of several runs, by run (sent now, read by the returned function)."""
    if not run_ids:
        return dict
    ids, params = tx.among("run_id", "r", run_ids)
    rows = tx.fetch(f"SELECT run_id, job_inputs FROM runs WHERE {ids}", params)
    return lambda: {r.run_id: dict(r.job_inputs or {}) for r in rows()}


def inputs(tx: Tx, run_id: str) -> dict[str, Any]:
    row = tx.one("SELECT job_inputs FROM runs WHERE run_id = :id", {"id": run_id})
    return dict(row.job_inputs) if row is not None and row.job_inputs else {}


def by_idempotency_key(tx: Tx, account_id: str, key: str) -> Row | None:
    return tx.one(
        "SELECT * FROM runs WHERE master_account_id = :account AND idempotency_key = :key",
        {"account": account_id, "key": key},
    )


def by_idempotency_keys(tx: Tx, account_id: str, keys: list[str]) -> dict[str, str]:
    """Run ids by idempotency key, for the keys of ``account_id`` that name a run already."""
    if not keys:
        return {}
    found: dict[str, str] = {}
    for first in range(0, len(keys), 500):  # bounded IN lists
        names, params = in_list("k", keys[first:first + 500])
        rows = tx.all(
            f"SELECT idempotency_key, run_id FROM runs WHERE master_account_id = :account AND idempotency_key IN {names}",
            {"account": account_id, **params},
        )
        found.update((r.idempotency_key, r.run_id) for r in rows)
    return found


def steps(tx: Tx, run_id: str) -> list[Row]:
    return tx.all(f"SELECT {_STEP_COLUMNS} FROM step_runs WHERE run_id = :id ORDER BY position", {"id": run_id})


def steps_of_runs(tx: Tx, run_ids: list[str]) -> list[Row]:
    """``steps`` of at most 500 runs in one statement, by run and position."""
    marks, params = in_list("r", run_ids)
    return tx.all(f"SELECT {_STEP_COLUMNS} FROM step_runs WHERE run_id IN {marks} ORDER BY run_id, position", params)


def get_many(tx: Tx, run_ids: list[str]) -> list[Row]:
    """The rows of those of at most 500 ``run_ids`` that exist (as ``get``), in no order."""
    marks, params = in_list("r", run_ids)
    return tx.all(f"SELECT * FROM runs WHERE run_id IN {marks}", params)


def step(tx: Tx, run_id: str, step_id: str) -> Row | None:
    return tx.one(f"SELECT {_STEP_COLUMNS} FROM step_runs WHERE run_id = :id AND step_id = :step", {"id": run_id, "step": step_id})


_WITH_WORK = (
    "SELECT s.run_id, s.step_id, s.position, s.status, s.attempt, s.tool_id, s.using_fallback, "
    "s.generation_id, s.generation_ids, s.child_run_id, s.outputs, s.reason, s.error, s.skipped_by_error, "
    "s.progress, s.next_attempt_at, s.started_at, s.finished_at, s.items_total, s.items_succeeded, s.items_failed, s.question_id, "
    "g.status AS work_status, g.outputs AS work_outputs, g.error AS work_error, "
    "g.sent_at AS work_sent_at, g.platform_specific_run_id AS work_run_id "
    "FROM step_runs s LEFT JOIN generations g ON g.generation_id = s.generation_id "
)


def steps_with_work(tx: Tx, run_id: str) -> list[Row]:
    """Step runs with the status, outputs and error of each one's current generation."""
    return tx.all(_WITH_WORK + "WHERE s.run_id = :id ORDER BY s.position", {"id": run_id})


def steps_with_work_of(tx: Tx, run_ids: list[str]) -> Callable[[], dict[str, StepRows]] | None:
    """``steps_with_work`` of several runs in one statement, by run (sent now, read by the
    returned function), in a pipelined transaction (PostgreSQL: read in the same round trip as the
    transaction's other reads). None on SQLite: each run's rows are read when its transition
    needs them, and only those it needs (``step_rows``)."""
    if not tx.is_postgres:
        return None
    if not run_ids:
        return dict
    ids, params = tx.among("s.run_id", "r", run_ids)
    rows = tx.fetch(_WITH_WORK + f"WHERE {ids} ORDER BY s.run_id, s.position", params)

    def read() -> dict[str, StepRows]:
        found: dict[str, list[Row]] = {run_id: [] for run_id in run_ids}
        for row in rows():
            found[row["run_id"]].append(row)
        return {run_id: StepRows.of(found[run_id]) for run_id in run_ids}

    return read


_STATUSES = "SELECT json_group_object(step_id, status) AS statuses FROM step_runs WHERE run_id = :id"
FEW_STEPS = 8
"""A run of at most this many steps has all its step rows read at once (``step_rows`` without
``wanted``): one statement reading a few rows costs less than two reading fewer."""


class StepRows(Mapping[str, Row]):
    """A run's step rows with their current work (``steps_with_work``) by step id, inside the
    transaction that read them, under the run's lock. ``statuses`` holds every step's status; the
    rows of the steps named when it was made are read at once, the others all together when one
    of them is first read (so a transition of a wide fan-out that reads a branch and the fan-in
    reads three rows, not every branch's). Rows read later show the run as this transaction
    finds it then: the engine reads the rows of the steps it changes before it changes them (the
    planner reads a step's row before deciding it)."""

    __slots__ = ("_rest", "_rows", "statuses")

    def __init__(self, statuses: dict[str, str], rows: dict[str, Row], rest: Callable[[], list[Row]] | None) -> None:
        self.statuses = statuses
        """Every step's stored status, by step id."""
        self._rows = rows
        self._rest = rest

    @classmethod
    def of(cls, rows: list[Row]) -> StepRows:
        """Every row read already."""
        return cls({r["step_id"]: r["status"] for r in rows}, {r["step_id"]: r for r in rows}, None)

    def __getitem__(self, sid: str) -> Row:
        row = self._rows.get(sid)
        if row is None and self._rest is not None and sid in self.statuses:
            rest, self._rest = self._rest, None
            for found in rest():
                self._rows.setdefault(found["step_id"], found)
            row = self._rows.get(sid)
        if row is None:
            raise KeyError(sid)
        return row

    def __contains__(self, sid: object) -> bool:
        return sid in self.statuses

    def __iter__(self) -> Iterator[str]:
        return iter(self.statuses)

    def __len__(self) -> int:
        return len(self.statuses)


def step_rows(tx: Tx, run_id: str, wanted: Collection[str] | None = None) -> StepRows:
    """The run's step rows with their work (``StepRows``): every step's status, the rows of
    ``wanted`` now and the rest when first read. ``wanted`` None (the engine's choice for a
    run of few steps, ``FEW_STEPS``), or PostgreSQL (where a read costs a round trip): every row
    now."""
    if wanted is None or tx.is_postgres:
        return StepRows.of(steps_with_work(tx, run_id))
    found = tx.one(_STATUSES, {"id": run_id})  # one row to decode, not one per step
    statuses: dict[str, str] = codec.loads(found.statuses) if found is not None and found.statuses else {}
    wanted = [sid for sid in wanted if sid in statuses]
    rows: dict[str, Row] = {}
    if wanted:
        names, params = in_list("s", wanted)
        for row in tx.all(_WITH_WORK + f"WHERE s.run_id = :id AND s.step_id IN {names}", {"id": run_id, **params}):
            rows[row["step_id"]] = row
    if len(rows) == len(statuses):
        return StepRows(statuses, rows, None)
    return StepRows(statuses, rows, lambda: steps_with_work(tx, run_id))


@functools.lru_cache(maxsize=64)
def _set_status_sql(status: RunStatus, columns: tuple[str, ...]) -> str:
    sets = ", ".join(["status = :status", "updated_at = :now", *(f"{c} = :{c}" for c in columns)])
    return f"UPDATE runs SET {sets} WHERE run_id = :id AND {one_of('status', RUN_ALLOWED_PRIOR[status])}"


def set_status(tx: Tx, run_id: str, status: RunStatus, now: float, **values: Any) -> bool:
    """Compare-and-set the run's status from the states allowed to reach ``status``. The caller
    holds the run's lock and read its status (``Tx.expect``)."""
    sql = _set_status_sql(status, tuple(sorted(values)))
    return tx.expect(sql, {"id": run_id, "status": status.value, "now": now, **values}, key=("runs", run_id))


def update(tx: Tx, run_id: str, **values: Any) -> None:
    sets = ", ".join(f"{c} = :{c}" for c in values)
    tx.q(f"UPDATE runs SET {sets} WHERE run_id = :id_", {"id_": run_id, **values})


def add_cost(tx: Tx, run_id: str, amount: Decimal, now: float) -> None:
    row = tx.one("SELECT cost_usd FROM runs WHERE run_id = :id", {"id": run_id})
    current = row.cost_usd if row is not None and row.cost_usd is not None else Decimal(0)
    tx.q("UPDATE runs SET cost_usd = :cost, updated_at = :now WHERE run_id = :id", {"cost": current + amount, "now": now, "id": run_id})


_UP = (
    "up(run_id, parent_run_id) AS (SELECT run_id, parent_run_id FROM runs WHERE {ids} "
    "UNION SELECT r.run_id, r.parent_run_id FROM runs r JOIN up ON r.run_id = up.parent_run_id)"
)
"""The runs and the runs they are nested in, up to the outermost."""
_PICK_UP = (
    "UPDATE runs SET status = 'running', started_at = COALESCE(started_at, :now), updated_at = :now "
    "WHERE run_id IN (SELECT run_id FROM runs WHERE {runs} AND status = 'queued' "
    "FOR UPDATE SKIP LOCKED) RETURNING run_id"
)


def mark_picked_up(tx: Tx, run_ids: list[str], now: float, *, nested: bool = True) -> None:
    """Queued runs among ``run_ids``, and the runs they are nested in, become running, each with
    its ``run.started`` event: a worker has claimed one of their tasks (or one of a nested run's,
    whose parent was otherwise told "queued, no worker is running" while its nested runs worked).
    ``nested=False`` says none of them is nested (the claim knows it from their generations' rows):
    then no walk up to their parents (the fan-out's most frequent statement stays a lookup by key).
    Runs another transaction holds right now are left for their next advance (no waiting on a run's
    lock while holding task locks). On PostgreSQL one statement that nothing waits for (the events
    are inserted by it); on SQLite the runs changed are read and their events appended."""
    if not run_ids:
        return
    ids, params = tx.among("run_id", "r", run_ids)
    if nested:
        walk, runs = f"WITH RECURSIVE {_UP.format(ids=ids)}", "run_id IN (SELECT run_id FROM up)"
    else:
        walk, runs = "", ids
    update = _PICK_UP.format(runs=runs)
    if tx.is_postgres:
        ctes = f"{walk}, started AS ({update})" if walk else f"WITH started AS ({update})"
        tx.q(
            f"{ctes} INSERT INTO events (run_id, type, step_id, data, created_at) "
            "SELECT run_id, 'run.started', NULL, CAST('{}' AS jsonb), :now FROM started ORDER BY run_id",
            {"now": now, **params},
        )
        # those that did not start hear of no event, which costs nothing; a run they are nested in
        # that started is not named (unknown without a read): its watchers read it at the hub's next round
        tx.event_runs.update(run_ids)
        return
    rows = tx.all(f"{walk} {update}" if walk else update, {"now": now, **params})
    events_q.append_many(tx, [
        {"run_id": str(r.run_id), "type": "run.started", "step_id": None, "data": {}, "created_at": now} for r in rows
    ])


def request_cancel(tx: Tx, run_id: str, now: float) -> bool:
    return (
        tx.rowcount(
            "UPDATE runs SET cancel_requested = :t, updated_at = :now WHERE run_id = :id "
            "AND (status = 'queued' OR status = 'running' OR status = 'waiting_input')",
            {"t": True, "now": now, "id": run_id},
        )
        == 1
    )


@functools.lru_cache(maxsize=256)
def _update_step_sql(prior: tuple[StepStatus, ...], columns: tuple[str, ...]) -> str:
    sets = ", ".join(f"{c} = :{c}" for c in columns)
    return f"UPDATE step_runs SET {sets} WHERE run_id = :run_id_ AND step_id = :step_id_ AND {one_of('status', prior)}"


def update_step(
    tx: Tx, run_id: str, step_id: str, prior: tuple[StepStatus, ...], *, known: bool = True, **values: Any
) -> bool:
    """Compare-and-set one step run from the given prior states. ``known``: the caller holds the
    run's lock and read the step, so it knows the outcome (``Tx.expect``); else the result is
    waited for."""
    sql = _update_step_sql(prior, tuple(values))
    params = {"run_id_": run_id, "step_id_": step_id, **values}
    return tx.expect(sql, params, key=("step_runs", run_id, step_id)) if known else tx.rowcount(sql, params) == 1


NEW_ATTEMPT = (
    "(((status = 'pending' OR status = 'waiting_retry' OR status = 'running') AND attempt < :attempt) "
    "OR (status = 'ready' AND attempt <= :attempt))"
)
"""The rows an attempt numbered ``:attempt`` may start on (a step, or an item of a map step): one
waiting to start, to retry, or (a fallback) whose running attempt failed, each at an earlier
attempt; or one made ready for this attempt (``Evaluate`` wrote its number). A step started already
(by a decision made from rows read before it was) is at that attempt, or finished: never started twice."""


@functools.lru_cache(maxsize=64)
def _start_attempt_sql(columns: tuple[str, ...]) -> str:
    sets = ", ".join(f"{c} = :{c}" for c in ("attempt", *columns))
    return f"UPDATE step_runs SET {sets} WHERE run_id = :run_id_ AND step_id = :step_id_ AND {NEW_ATTEMPT}"


def start_attempt(tx: Tx, run_id: str, step_id: str, attempt: int, **values: Any) -> bool:
    """Compare-and-set a step run to attempt ``attempt`` (``NEW_ATTEMPT``): it starts, or is made
    ready to be evaluated for it. The caller holds the run's lock (``Tx.expect``)."""
    sql = _start_attempt_sql(tuple(values))
    params = {"run_id_": run_id, "step_id_": step_id, "attempt": attempt, **values}
    return tx.expect(sql, params, key=("step_runs", run_id, step_id))


def list_runs(
    tx: Tx,
    account_id: str | None,
    *,
    status: list[str] | None = None,
    job_id: str | None = None,
    since: float | None = None,
    before: tuple[float, str] | None = None,
    limit: int = 50,
    top_level: bool = True,
) -> list[Row]:
    """Newest first; ``before`` is the (created_at, run_id) cursor of the last row already seen."""
    where: list[str] = []
    params: dict[str, Any] = {"limit": limit}
    if account_id is not None:
        where.append("master_account_id = :account")
        params["account"] = account_id
    if status:
        statuses, status_params = in_list("status_", status)
        where.append(f"status IN {statuses}")
        params.update(status_params)
    if job_id:
        where.append("job_definition_id = :job")
        params["job"] = job_id
    if since is not None:
        where.append("created_at >= :since")
        params["since"] = since
    if top_level:
        where.append("parent_run_id IS NULL")
    if before is not None:
        where.append("(created_at < :before_at OR (created_at = :before_at AND run_id < :before_id))")
        params.update(before_at=before[0], before_id=before[1])
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    return tx.all(f"SELECT * FROM runs{clause} ORDER BY created_at DESC, run_id DESC LIMIT :limit", params)


def count_by_status(tx: Tx) -> dict[str, int]:
    return {r.status: int(r.n) for r in tx.all("SELECT status, COUNT(*) AS n FROM runs GROUP BY status")}


UNFINISHED = {
    "postgresql": "status IN ('queued', 'running', 'waiting_input')",
    "sqlite": "(status = 'queued' OR status = 'running' OR status = 'waiting_input')",
}
"""The condition of the partial index of unfinished runs (``ix_runs_account_unfinished``, which the
sweep for stranded runs reads as well) as each store's index states it: SQLite uses a partial index only for
a query that states its condition word for word, and there it is comparisons, not an ``IN`` list,
which SQLite tested by building a temporary table at every write of a run's status (migration
0019)."""


def unfinished(tx: Tx, alias: str = "") -> str:
    """``UNFINISHED`` for this transaction's store, its column named through ``alias`` (``"r."``)."""
    return UNFINISHED["postgresql" if tx.is_postgres else "sqlite"].replace("status", alias + "status")


def in_flight_count(tx: Tx, account_id: str) -> int:
    row = tx.one(
        f"SELECT COUNT(*) AS n FROM runs WHERE master_account_id = :account AND {unfinished(tx)} "
        "AND parent_run_id IS NULL",
        {"account": account_id},
    )
    return int(row.n) if row is not None else 0


_STRANDED = (
    "SELECT r.run_id FROM runs r WHERE {unfinished} {only} "
    # an advance task (due now or later: a retry's backoff, a deadline), or an evaluate task (its
    # ready steps' conditions and templates)
    "AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.kind IN ('advance', 'evaluate') AND t.ref_id = r.run_id) "
    # a waiting generation: one not yet finished, with the dispatch or poll task that will finish it
    "AND NOT EXISTS (SELECT 1 FROM generations g JOIN tasks t ON t.kind IN ('dispatch', 'poll') "
    "AND t.ref_id = g.generation_id WHERE g.run_id = r.run_id AND g.status IN ('pending', 'processing')) "
    # a running child run (its end advances this run)
    "AND NOT EXISTS (SELECT 1 FROM step_runs s JOIN runs c ON c.run_id = s.child_run_id "
    "WHERE s.run_id = r.run_id AND s.status = 'running' AND c.status IN ('queued', 'running', 'waiting_input')) "
    "ORDER BY r.created_at LIMIT :limit"
)


def stranded(tx: Tx, limit: int = 100, run_id: str | None = None) -> list[str]:
    """Unfinished runs that nothing will move: no advance or evaluate task, no waiting generation
    (one not yet finished that has its dispatch or poll task), no unfinished child run. The engine's invariant
    is that this is always empty; the worker's sweep repairs what breaks it."""
    only = "AND r.run_id = :run_id" if run_id is not None else ""
    rows = tx.all(_STRANDED.format(unfinished=unfinished(tx, "r."), only=only), {"limit": limit, "run_id": run_id})
    return [r.run_id for r in rows]


def statuses(tx: Tx, run_ids: list[str], account_id: str | None = None) -> dict[str, str]:
    """``run id → status`` for those of ``run_ids`` that exist (and are ``account_id``'s, when given)."""
    found: dict[str, str] = {}
    for first in range(0, len(run_ids), 500):
        marks, params = in_list("r", run_ids[first:first + 500])
        where = " AND master_account_id = :account" if account_id is not None else ""
        rows = tx.all(f"SELECT run_id, status FROM runs WHERE run_id IN {marks}{where}", {**params, "account": account_id})
        found.update({str(r.run_id): str(r.status) for r in rows})
    return found
