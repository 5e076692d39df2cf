"""Generation records: one attempt of one tool on one service (the seed's generationRecord)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from toolweave.model.status import GENERATION_ALLOWED_PRIOR, GenerationStatus
from toolweave.store.db import Row, Tx, in_list
from toolweave.store.tx import one_of


def insert(tx: Tx, **values: Any) -> None:
    """Insert a generation (queued with the transaction's other writes: ``Tx.put``)."""
    tx.put(_insert_sql(tuple(values)), values)


def insert_many(tx: Tx, rows: list[dict[str, Any]]) -> None:
    """Insert generation rows that all have the same columns (one ``executemany``)."""
    if rows:
        tx.many(_insert_sql(tuple(rows[0])), rows)


@functools.lru_cache(maxsize=16)
def _insert_sql(columns: tuple[str, ...]) -> str:
    return f"INSERT INTO generations ({', '.join(columns)}) VALUES ({', '.join(':' + c for c in columns)})"


def get(tx: Tx, generation_id: str) -> Row | None:
    return tx.one("SELECT * FROM generations WHERE generation_id = :id", {"id": generation_id})


def with_tool_shas(tx: Tx, generation_ids: list[str]) -> dict[str, Row]:
    """Generations by id, each with its run's ``tool_shas`` (what a worker needs to call the tool) and
    ``run_parent_id``, the run's parent run (None for a run that is not nested)."""
    if not generation_ids:
        return {}
    ids, params = in_list("g", generation_ids)
    rows = tx.all(
        f"SELECT g.*, r.tool_shas, r.parent_run_id AS run_parent_id FROM generations g JOIN runs r ON r.run_id = g.run_id WHERE g.generation_id IN {ids}",
        params,
    )
    return {r.generation_id: r for r in rows}


def mark_sent(tx: Tx, generation_id: str, now: float) -> None:
    """Record that the generation's request is about to go to its backend (``sent_at``)."""
    tx.q("UPDATE generations SET sent_at = :now WHERE generation_id = :id", {"now": now, "id": generation_id})


def waiting_without_task(tx: Tx, run_id: str) -> list[Row]:
    """The run's unfinished generations that have no dispatch or poll task to finish them."""
    return tx.all(
        "SELECT generation_id, status FROM generations g WHERE g.run_id = :id AND g.status IN ('pending', 'processing') "
        "AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.kind IN ('dispatch', 'poll') AND t.ref_id = g.generation_id) "
        "ORDER BY g.created_at",
        {"id": run_id},
    )


def for_run(tx: Tx, run_id: str) -> list[Row]:
    return tx.all("SELECT * FROM generations WHERE run_id = :id ORDER BY created_at, attempt, generation_id", {"id": run_id})


def for_runs(tx: Tx, run_ids: list[str]) -> list[Row]:
    """``for_run`` of at most 500 runs in one statement, by run and in ``for_run``'s order."""
    marks, params = in_list("r", run_ids)
    return tx.all(f"SELECT * FROM generations WHERE run_id IN {marks} ORDER BY run_id, created_at, attempt, generation_id",
                  params)


@functools.lru_cache(maxsize=128)
def _set_status_sql(status: GenerationStatus, columns: tuple[str, ...]) -> str:
    sets = ", ".join(["status = :status", *(f"{c} = :{c}" for c in columns)])
    return (f"UPDATE generations SET {sets} WHERE generation_id = :id_ "
            f"AND {one_of('status', GENERATION_ALLOWED_PRIOR[status])} RETURNING *")


def set_status(tx: Tx, generation_id: str, status: GenerationStatus, **values: Any) -> Row | None:
    """Compare-and-set from the statuses allowed to reach ``status``; the updated row, or None
    when it did not apply (the generation had already moved on)."""
    return tx.one(_set_status_sql(status, tuple(values)), {"id_": generation_id, "status": status.value, **values})


_FINISH = (
    "UPDATE generations SET status = :status, outputs = :outputs, error = :error, response_payload = :raw, "
    "response_timestamp = :answered, progress = COALESCE(:progress, progress), "
    "request_timestamp = COALESCE(:requested, request_timestamp), "
    "platform_specific_run_id = COALESCE(:platform_id, platform_specific_run_id), "
    "duration_ms = CAST((:answered - COALESCE(:requested, request_timestamp, created_at)) * 1000 AS INTEGER) "
    "WHERE generation_id = :id AND status IN ('pending', 'processing') "
    "RETURNING generation_id, run_id, step_id, item_index, tool_id, master_account_id, duration_ms, cache_key, "
    "cache_seconds"
)


def finish(
    tx: Tx,
    generation_id: str,
    status: GenerationStatus,
    now: float,
    *,
    outputs: Any = None,
    error: Any = None,
    raw: Any = None,
    progress: float | None = None,
    requested_at: float | None = None,
    answered_at: float | None = None,
    platform_run_id: str | None = None,
) -> Row | None:
    """Move a generation to a terminal status (compare-and-set); None when it was already terminal.
    Its response timestamp (and so its duration) is ``answered_at`` when the service's answer came
    before this transaction, else ``now``."""
    return tx.one(
        _FINISH,
        _finish_params(
            generation_id, status, now, outputs=outputs, error=error, raw=raw, progress=progress,
            requested_at=requested_at, answered_at=answered_at, platform_run_id=platform_run_id,
        ),
    )


def finish_each(tx: Tx, finishes: list[dict[str, Any]]) -> Callable[[], list[Row | None]]:
    """``finish`` of several generations, sent together; each entry has ``finish``'s arguments
    (``generation_id``, ``status``, ``now`` and the keywords). The returned function reads the
    row each one returned, or None where it was terminal already (``Tx.fetch_each``)."""
    return tx.fetch_each(_FINISH, [_finish_params(**f) for f in finishes])


def _finish_params(
    generation_id: str, status: GenerationStatus, now: float, *, outputs: Any = None, error: Any = None,
    raw: Any = None, progress: float | None = None, requested_at: float | None = None,
    answered_at: float | None = None, platform_run_id: str | None = None,
) -> dict[str, Any]:
    assert status.terminal
    return {
        "status": status.value, "outputs": outputs, "error": error, "raw": raw, "progress": progress,
        "answered": answered_at if answered_at is not None else now, "requested": requested_at,
        "platform_id": platform_run_id, "id": generation_id,
    }


def update(tx: Tx, generation_id: str, **values: Any) -> None:
    sets = ", ".join(f"{c} = :{c}" for c in values)
    tx.q(f"UPDATE generations SET {sets} WHERE generation_id = :id_", {"id_": generation_id, **values})


_RECEIPT = (
    "INSERT INTO webhook_receipts (service, event_key, generation_id, received_at) "
    "VALUES (:service, :key, :gen, :now) ON CONFLICT (service, event_key) DO NOTHING RETURNING event_key"
)


def record_webhook_receipts(tx: Tx, receipts: list[tuple[str, str, str]], now: float) -> Callable[[], list[bool]]:
    """Remember webhook deliveries ``(service, key, generation id)``, sent together; the returned
    function says for each whether it is new: False when the same delivery was applied before, or
    earlier in the list, or is being applied by a concurrent transaction (PostgreSQL makes this
    one wait for it) (``Tx.fetch_each``)."""
    found = tx.fetch_each(_RECEIPT, [{"service": s, "key": k, "gen": g, "now": now} for s, k, g in receipts])
    return lambda: [row is not None for row in found()]


_WEBHOOK_COLUMNS = "generation_id, run_id, service_name, status, platform_specific_run_id, progress, live_status, " \
    "step_id, item_index"


def webhook_targets(tx: Tx, generation_ids: list[str]) -> Callable[[], dict[str, Row]]:
    """What applying webhooks needs of generations (run, service, status, platform run id,
    progress, step, item), by id; sent now, read by the returned function (``Tx.fetch``)."""
    if not generation_ids:
        return dict
    ids, params = in_list("g", generation_ids)
    rows = tx.fetch(f"SELECT {_WEBHOOK_COLUMNS} FROM generations WHERE generation_id IN {ids}", params)
    return lambda: {r.generation_id: r for r in rows()}


def set_progress(tx: Tx, generation_id: str, progress: float | None, live_status: str | None) -> None:
    """``set_status(PROCESSING, progress=…, live_status=…)`` of a generation the caller read
    unfinished under its run's lock: queued with the transaction's other writes and checked
    before the commit (``Tx.expect``)."""
    tx.expect(
        "UPDATE generations SET status = 'processing', progress = :progress, live_status = :live_status "
        "WHERE generation_id = :id AND status IN ('pending', 'processing')",
        {"id": generation_id, "progress": progress, "live_status": live_status}, key=("generations", generation_id),
    )


def set_poll_error(tx: Tx, generation_id: str, error: dict[str, Any] | None) -> None:
    """Keep the failure a running generation's last poll met (None: its last poll answered), so
    that a timeout can say it; a generation that has ended is left as it is."""
    tx.q(
        "UPDATE generations SET error = :error WHERE generation_id = :id AND status IN ('pending', 'processing')",
        {"id": generation_id, "error": error},
    )


def take_capacity(tx: Tx, generation_id: str, key: str, limit: int) -> bool:
    """Let a pending generation take one of ``limit`` slots of ``key`` (e.g. ``comfyui:local``)
    before it is submitted; False when every slot is held.

    A slot is held by each pending or processing generation carrying the key, so it is given
    back when the generation reaches a terminal state, whichever process finishes it. Takers of
    the same key are serialised (a transaction-scoped advisory lock on PostgreSQL; SQLite
    transactions are serialised already), so two workers never both take the last slot. A
    generation that holds the key already (a dispatch recovered after a crash) keeps it. A
    generation held back says so in its ``live_status`` (``capacity_wait_text``), which the run's
    ``statusDetail`` shows; taking the slot clears it.
    """
    if tx.is_postgres:
        tx.q("SELECT pg_advisory_xact_lock(hashtext(:key))", {"key": key})
    row = tx.one("SELECT status, capacity_key, live_status FROM generations WHERE generation_id = :id",
                 {"id": generation_id})
    if row is None or row.status != GenerationStatus.PENDING.value or row.capacity_key == key:
        return True  # nothing to hold a slot for (it finished meanwhile), or it holds one
    busy = tx.one(
        "SELECT COUNT(*) AS n FROM generations WHERE capacity_key = :key AND status IN ('pending', 'processing')",
        {"key": key},
    )
    in_use = int(busy.n) if busy is not None else 0
    if in_use >= limit:
        why = capacity_wait_text(key, in_use, limit)
        if row.live_status != why:  # said once, not at every try
            tx.q("UPDATE generations SET live_status = :why WHERE generation_id = :id", {"why": why, "id": generation_id})
        return False
    tx.q("UPDATE generations SET capacity_key = :key, live_status = NULL WHERE generation_id = :id",
         {"key": key, "id": generation_id})
    return True


def capacity_wait_text(key: str, in_use: int, limit: int) -> str:
    """The ``live_status`` of a pending generation held back by ``key``'s limit (the only
    ``live_status`` a pending generation has: services set theirs once it is submitted)."""
    return f"waiting for a free slot of {key} ({in_use} of {limit} in use)"
