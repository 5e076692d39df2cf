"""The items of map steps (``step_items``) and the item counts kept on their step runs.

A decision about a map step reads its items in flight and its next pending ones (``active``,
``waiting``) through partial indexes that hold only such items; it never reads the items that have ended, so its
cost does not grow with the number of items. Status changes are compare-and-set, like a step's.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from toolweave.model.status import StepStatus
from toolweave.store.db import Row, Tx
from toolweave.store.runs import NEW_ATTEMPT
from toolweave.store.tx import one_of

OPEN = (StepStatus.PENDING, StepStatus.RUNNING, StepStatus.WAITING_RETRY)
"""The statuses of an item that has not ended."""


def insert(
    tx: Tx, run_id: str, step_id: str, values: Sequence[Any], evaluated: Sequence[dict[str, Any]] | None = None
) -> None:
    """One pending item per value, in order (all in one statement), each with its evaluated inputs
    or error (``{"inputs": …}`` / ``{"error": …}``) when given."""
    tx.many(
        "INSERT INTO step_items (run_id, step_id, item_index, status, item, attempt, using_fallback, cost_usd) "
        "VALUES (:run_id, :step_id, :i, 'pending', :item, 0, :f, '0')",
        [
            {"run_id": run_id, "step_id": step_id, "i": i, "f": False,
             "item": {"value": value, **_evaluated(evaluated[i] if evaluated else None)}}
            for i, value in enumerate(values)
        ],
    )


def _evaluated(answer: dict[str, Any] | None) -> dict[str, Any]:
    if answer is None:
        return {}
    return {"inputs": answer["inputs"]} if "inputs" in answer else {"inputsError": answer.get("error")}


def value(row: Row) -> Any:
    """An item's value. It is kept wrapped (``{"value": …}``): a JSON column holds an object on every
    store, where a bare string would be told apart from JSON text differently by each driver."""
    wrapped = row.item
    return wrapped.get("value") if isinstance(wrapped, dict) else None


def evaluated(row: Row) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(inputs, error) an evaluator gave the item when its map opened (both None when not evaluated)."""
    wrapped = row.item
    if not isinstance(wrapped, dict):
        return None, None
    return wrapped.get("inputs"), wrapped.get("inputsError")


IN_FLIGHT = {
    "postgresql": "status IN ('running', 'waiting_retry')",
    "sqlite": "(status = 'running' OR status = 'waiting_retry')",
}
"""The condition of ``ix_step_items_in_flight`` as each store's index states it (on SQLite as
comparisons, 0020: see ``runs.UNFINISHED``); its query states it word for word (``active_sql``).
Kept here, not in ``schema``, so that reading the store does not import SQLAlchemy."""

_ACTIVE = (
    "SELECT i.item_index, i.status, i.item, i.attempt, i.tool_id, i.using_fallback, i.generation_id, "
    "i.child_run_id, i.next_attempt_at, i.started_at, "
    "g.status AS work_status, g.outputs AS work_outputs, g.error AS work_error, "
    "g.sent_at AS work_sent_at, g.platform_specific_run_id AS work_run_id, "
    "c.status AS child_status, c.final_outputs AS child_outputs, c.error AS child_error "
    "FROM step_items i LEFT JOIN generations g ON g.generation_id = i.generation_id "
    "LEFT JOIN runs c ON c.run_id = i.child_run_id "
    "WHERE i.run_id = :run_id AND i.step_id = :step_id AND {in_flight} "
    "ORDER BY i.item_index"
)
ACTIVE_SQL = {
    dialect: _ACTIVE.format(in_flight=condition.replace("status", "i.status"))
    for dialect, condition in IN_FLIGHT.items()
}
"""Read through ``ix_step_items_in_flight``: its condition as the store's index states it, word for
word, as SQLite needs to use a partial index (on SQLite comparisons, migration 0020)."""


def active_sql(tx: Tx) -> str:
    return ACTIVE_SQL["postgresql" if tx.is_postgres else "sqlite"]


WAITING = (
    "SELECT item_index, item FROM step_items WHERE run_id = :run_id AND step_id = :step_id "
    "AND status = 'pending' ORDER BY item_index LIMIT :limit"
)
"""Read through ``ix_step_items_pending``, in index order."""


def active(tx: Tx, run_id: str, step_id: str) -> list[Row]:
    """The items in flight (running or waiting for a retry), each with its work's status, outputs
    and error: its generation's, or its child run's (``child_*``); in index order."""
    return tx.all(active_sql(tx), {"run_id": run_id, "step_id": step_id})


def waiting(tx: Tx, run_id: str, step_id: str, limit: int) -> list[Row]:
    """The first ``limit`` pending items, in order."""
    return tx.all(WAITING, {"run_id": run_id, "step_id": step_id, "limit": limit})


def get(tx: Tx, run_id: str, step_id: str, index: int) -> Row | None:
    return tx.one(
        "SELECT * FROM step_items WHERE run_id = :run_id AND step_id = :step_id AND item_index = :i",
        {"run_id": run_id, "step_id": step_id, "i": index},
    )


@functools.lru_cache(maxsize=128)
def _update_sql(prior: tuple[StepStatus, ...], columns: tuple[str, ...]) -> str:
    sets = ", ".join(f"{c} = :{c}" for c in columns)
    return (
        f"UPDATE step_items SET {sets} WHERE run_id = :run_id_ AND step_id = :step_id_ AND item_index = :i_ "
        f"AND {one_of('status', prior)}"
    )


def update(
    tx: Tx, run_id: str, step_id: str, index: int, prior: tuple[StepStatus, ...], *, known: bool = True, **values: Any
) -> bool:
    """Compare-and-set one item from the given prior states. ``known``: the caller holds the run's
    lock and read the item, so it knows the outcome (``Tx.expect``); else the result is waited for."""
    sql = _update_sql(prior, tuple(values))
    params = {"run_id_": run_id, "step_id_": step_id, "i_": index, **values}
    return tx.expect(sql, params, key=("step_items", run_id, step_id, index)) if known else tx.rowcount(sql, params) == 1


@functools.lru_cache(maxsize=32)
def _start_sql(columns: tuple[str, ...]) -> str:
    sets = ", ".join(f"{c} = :{c}" for c in ("attempt", *columns))
    return (
        f"UPDATE step_items SET {sets} WHERE run_id = :run_id_ AND step_id = :step_id_ AND item_index = :i_ "
        f"AND {NEW_ATTEMPT}"
    )


def start(tx: Tx, run_id: str, step_id: str, index: int, attempt: int, **values: Any) -> bool:
    """Compare-and-set one item to attempt ``attempt`` (``runs.NEW_ATTEMPT``: never an item started
    at that attempt already). The caller holds the run's lock (``Tx.expect``)."""
    sql = _start_sql(tuple(values))
    params = {"run_id_": run_id, "step_id_": step_id, "i_": index, "attempt": attempt, **values}
    return tx.expect(sql, params, key=("step_items", run_id, step_id, index))


def add_cost(tx: Tx, run_id: str, step_id: str, index: int, amount: Decimal) -> None:
    row = get(tx, run_id, step_id, index)
    if row is None:
        return
    current = Decimal(str(row.cost_usd or 0))
    tx.q(
        "UPDATE step_items SET cost_usd = :cost WHERE run_id = :run_id AND step_id = :step_id AND item_index = :i",
        {"cost": current + amount, "run_id": run_id, "step_id": step_id, "i": index},
    )


def close(tx: Tx, run_id: str, step_id: str, reason: str, now: float) -> list[Row]:
    """End every open item of a step that ended (failed, skipped, cancelled): pending and waiting
    items are cancelled at once; the running ones are returned, cancelled too, for their work to
    be stopped."""
    running = tx.all(
        "SELECT item_index, generation_id, child_run_id FROM step_items WHERE run_id = :run_id "
        "AND step_id = :step_id AND status = 'running'",
        {"run_id": run_id, "step_id": step_id},
    )
    tx.q(
        f"UPDATE step_items SET status = 'cancelled', error = :error, finished_at = :now WHERE run_id = :run_id "
        f"AND step_id = :step_id AND {one_of('status', OPEN)}",
        {"run_id": run_id, "step_id": step_id, "now": now, "error": {"message": reason, "code": "cancelled"}},
    )
    return running


def outcomes(tx: Tx, run_id: str, step_id: str) -> list[Row]:
    """Every item's index, status and outputs, in order (gathering a finished map step's outputs)."""
    return tx.all(
        "SELECT item_index, status, outputs FROM step_items WHERE run_id = :run_id AND step_id = :step_id "
        "ORDER BY item_index",
        {"run_id": run_id, "step_id": step_id},
    )


def page(tx: Tx, run_id: str, step_id: str, *, after: int = -1, limit: int = 100, status: str | None = None) -> list[Row]:
    """Items of one step after index ``after`` (for listing them), with their cost and timings."""
    where = " AND status = :status" if status else ""
    return tx.all(
        "SELECT item_index, status, item, attempt, tool_id, using_fallback, generation_id, child_run_id, outputs, "
        "error, cost_usd, progress, next_attempt_at, started_at, finished_at FROM step_items "
        f"WHERE run_id = :run_id AND step_id = :step_id AND item_index > :after{where} ORDER BY item_index LIMIT :limit",
        {"run_id": run_id, "step_id": step_id, "after": after, "limit": limit, "status": status},
    )


def running_counts(tx: Tx, run_id: str) -> dict[str, dict[str, int]]:
    """Items in flight per map step of a run (``{step: {"running": n, "waiting_retry": m}}``)."""
    rows = tx.all(
        "SELECT step_id, status, COUNT(*) AS n FROM step_items WHERE run_id = :run_id "
        "AND status IN ('running', 'waiting_retry') GROUP BY step_id, status",
        {"run_id": run_id},
    )
    counts: dict[str, dict[str, int]] = {}
    for r in rows:
        counts.setdefault(r.step_id, {})[r.status] = int(r.n)
    return counts


def reset_unfinished(tx: Tx, run_id: str, step_id: str) -> int:
    """Retrying a run: the items that did not succeed are pending again (succeeded ones keep their
    outputs). Returns how many were reset."""
    return tx.rowcount(
        "UPDATE step_items SET status = 'pending', attempt = 0, tool_id = NULL, using_fallback = :f, "
        "generation_id = NULL, child_run_id = NULL, outputs = NULL, error = NULL, progress = NULL, "
        "next_attempt_at = NULL, started_at = NULL, finished_at = NULL "
        "WHERE run_id = :run_id AND step_id = :step_id AND status <> 'succeeded'",
        {"run_id": run_id, "step_id": step_id, "f": False},
    )


def open_step(tx: Tx, run_id: str, step_id: str, tool_id: str | None, total: int, now: float) -> bool:
    """A map step starts with ``total`` items (compare-and-set from the states before running)."""
    return tx.rowcount(
        "UPDATE step_runs SET status = 'running', "
        # a step that was ready (its condition evaluated) counted its attempt then
        "attempt = CASE WHEN status = 'ready' THEN attempt ELSE attempt + 1 END, tool_id = :tool_id, items_total = :total, "
        "items_succeeded = 0, items_failed = 0, started_at = :now, progress = 0.0, next_attempt_at = NULL "
        "WHERE run_id = :run_id AND step_id = :step_id AND status IN ('pending', 'ready')",
        {"run_id": run_id, "step_id": step_id, "tool_id": tool_id, "total": total, "now": now},
    ) == 1


def count(tx: Tx, run_id: str, step_id: str, succeeded: int, failed: int) -> None:
    """Add items that ended to a map step's counts, and set its progress from them."""
    tx.q(
        "UPDATE step_runs SET items_succeeded = items_succeeded + :s, items_failed = items_failed + :f, "
        "progress = CASE WHEN items_total > 0 "
        "THEN (items_succeeded + items_failed + :s + :f) * 1.0 / items_total ELSE 1.0 END "
        "WHERE run_id = :run_id AND step_id = :step_id",
        {"run_id": run_id, "step_id": step_id, "s": succeeded, "f": failed},
    )
