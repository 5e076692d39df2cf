"""Account policies (credits on or off, limits, fair claiming place) and the credit ledger.

Amounts here are whole units of 10⁻⁸ (``model.credits.UNIT``); ``accounting`` converts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from toolweave.model.credits import LedgerKind
from toolweave.store import runs as runs_q
from toolweave.store.db import Row, Tx, in_list

_LOCK_POLICY = (
    "INSERT INTO account_policies (account_id, updated_at) VALUES (:a, :now) "
    "ON CONFLICT (account_id) DO UPDATE SET updated_at = account_policies.updated_at RETURNING *"
)


def lock_policies(tx: Tx, account_ids: Sequence[str], now: float) -> Callable[[], dict[str, Row]]:
    """The accounts' policy rows, made when missing and locked (in the order of the ids, so two
    submits of overlapping accounts cannot deadlock): a submit of an account with limits or credits
    waits for the one before it to commit, so its limits and hold are decided on what that one left.
    Sent now; the returned function reads them (statements sent after this one run once it has its
    locks)."""
    ordered = sorted(set(account_ids))
    reads = [tx.fetch(_LOCK_POLICY, {"a": a, "now": now}) for a in ordered]
    return lambda: {row.account_id: row for read in reads for row in read()}


def policies_of(tx: Tx, account_ids: Sequence[str]) -> Callable[[], dict[str, Row]]:
    """The accounts' policy rows (not locked); accounts without one are absent."""
    ids, params = in_list("a", sorted(set(account_ids)))
    read = tx.fetch(f"SELECT * FROM account_policies WHERE account_id IN {ids}", params)
    return lambda: {row.account_id: row for row in read()}


def last_places(tx: Tx, account_ids: Sequence[str]) -> Callable[[], dict[str, float]]:
    """The latest fair place among each account's unfinished runs (``ix_runs_account_unfinished``);
    accounts with none are absent."""
    reads = {
        a: tx.fetch(
            f"SELECT MAX(queue_at) AS place FROM runs WHERE master_account_id = :a AND {runs_q.unfinished(tx)}",
            {"a": a},
        )
        for a in sorted(set(account_ids))
    }

    def read() -> dict[str, float]:
        found = {a: r() for a, r in reads.items()}
        return {a: float(rows[0].place) for a, rows in found.items() if rows and rows[0].place is not None}

    return read


def policy(tx: Tx, account_id: str) -> Row | None:
    return tx.one("SELECT * FROM account_policies WHERE account_id = :a", {"a": account_id})


def policies(tx: Tx) -> list[Row]:
    return tx.all("SELECT * FROM account_policies ORDER BY account_id")


def set_policy(tx: Tx, account_id: str, now: float, **values: Any) -> Row:
    """Change some of an account's policy columns (the row is made when missing)."""
    tx.q(_LOCK_POLICY, {"a": account_id, "now": now})
    sets = ", ".join([*(f"{c} = :{c}" for c in values), "updated_at = :now"])
    row = tx.one(f"UPDATE account_policies SET {sets} WHERE account_id = :a RETURNING *", {"a": account_id, "now": now, **values})
    assert row is not None
    return row


def queue_front(tx: Tx) -> Callable[[], float | None]:
    """The fair place of the earliest run no worker has picked up yet (``ix_runs_queued``): where
    the queue of new runs stands."""
    read = tx.fetch("SELECT MIN(queue_at) AS front FROM runs WHERE status = 'queued'")

    def front() -> float | None:
        rows = read()
        return None if not rows or rows[0].front is None else float(rows[0].front)

    return front


def sums(tx: Tx, account_ids: Sequence[str]) -> Callable[[], dict[str, tuple[int, int]]]:
    """(Σ amount, Σ held) per account, in units; accounts without entries are absent."""
    if not account_ids:
        return dict
    ids, params = in_list("a", sorted(set(account_ids)))
    read = tx.fetch(
        "SELECT account_id, COALESCE(SUM(amount), 0) AS amount, COALESCE(SUM(held), 0) AS held FROM credit_ledger "
        f"WHERE account_id IN {ids} GROUP BY account_id",
        params,
    )
    return lambda: {r.account_id: (int(r.amount), int(r.held)) for r in read()}


def in_flight(tx: Tx, account_ids: Sequence[str]) -> Callable[[], dict[str, int]]:
    """Unfinished top-level runs per account (``ix_runs_account_unfinished``)."""
    if not account_ids:
        return dict
    ids, params = in_list("a", sorted(set(account_ids)))
    read = tx.fetch(
        "SELECT master_account_id AS account_id, COUNT(*) AS n FROM runs WHERE master_account_id IN "
        f"{ids} AND {runs_q.unfinished(tx)} AND parent_run_id IS NULL GROUP BY master_account_id",
        params,
    )
    return lambda: {r.account_id: int(r.n) for r in read()}


def submitted_since(tx: Tx, account_id: str, since: float, limit: int) -> Callable[[], list[float]]:
    """Creation times of the account's top-level runs after ``since``, oldest first, at most ``limit``."""
    read = tx.fetch(
        "SELECT created_at FROM runs WHERE master_account_id = :a AND created_at > :since AND parent_run_id IS NULL "
        "ORDER BY created_at LIMIT :n",
        {"a": account_id, "since": since, "n": limit},
    )
    return lambda: [float(r.created_at) for r in read()]


_ENTRY_COLUMNS = ("account_id", "kind", "amount", "held", "run_id", "generation_id", "tool_id", "note", "created_at")
_INSERT = (
    f"INSERT INTO credit_ledger ({', '.join(_ENTRY_COLUMNS)}) VALUES ({', '.join(':' + c for c in _ENTRY_COLUMNS)})"
)


def entry(
    account_id: str, kind: LedgerKind, now: float, *, amount: int = 0, held: int = 0, run_id: str | None = None,
    generation_id: str | None = None, tool_id: str | None = None, note: str | None = None,
) -> dict[str, Any]:
    return {"account_id": account_id, "kind": kind.value, "amount": amount, "held": held, "run_id": run_id,
            "generation_id": generation_id, "tool_id": tool_id, "note": note, "created_at": now}


def append(tx: Tx, rows: Sequence[dict[str, Any]]) -> None:
    """Append entries (one ``executemany``)."""
    tx.many(_INSERT, rows)


def charge(tx: Tx, account_id: str, run_id: str, generation_id: str, tool_id: str, units: int, now: float) -> None:
    """A generation's cost, from the balance and from the hold of ``run_id`` (one INSERT, queued
    with the transaction's other writes)."""
    tx.put(_INSERT, entry(account_id, LedgerKind.CHARGE, now, amount=-units, held=-units, run_id=run_id,
                          generation_id=generation_id, tool_id=tool_id))


def release(tx: Tx, account_id: str, run_id: str, now: float) -> None:
    """Settle what is left of a run's hold: one INSERT of minus what its entries hold now (nothing
    when that is 0). Sent after the transaction's queued charges."""
    tx.q(
        "INSERT INTO credit_ledger (account_id, kind, amount, held, run_id, created_at) "
        "SELECT :a, 'release', 0, -SUM(held), :released, :now FROM credit_ledger WHERE run_id = :run "
        "HAVING SUM(held) <> 0",
        {"a": account_id, "run": run_id, "released": run_id, "now": now},
    )


def run_entries(tx: Tx, run_id: str) -> list[Row]:
    return tx.all("SELECT * FROM credit_ledger WHERE run_id = :run ORDER BY entry_id", {"run": run_id})


def history(tx: Tx, account_id: str, limit: int, before: int | None = None) -> list[Row]:
    """The account's entries, newest first."""
    where = " AND entry_id < :before" if before is not None else ""
    return tx.all(
        f"SELECT * FROM credit_ledger WHERE account_id = :a{where} ORDER BY entry_id DESC LIMIT :n",
        {"a": account_id, "n": limit, "before": before},
    )


def spend(tx: Tx, since: float, until: float, account_id: str | None = None) -> list[Row]:
    """Charges between ``since`` and ``until`` by account, tool and UTC day (``day``: days since
    1970-01-01), in units."""
    where = " AND account_id = :a" if account_id is not None else ""
    # whole days since the epoch: PostgreSQL's CAST rounds, SQLite's truncates (times are positive)
    day = "CAST(FLOOR(created_at / 86400) AS BIGINT)" if tx.is_postgres else "CAST(created_at / 86400 AS INTEGER)"
    return tx.all(
        f"SELECT account_id, tool_id, {day} AS day, -SUM(amount) AS units, COUNT(*) AS charges FROM credit_ledger "
        f"WHERE kind = 'charge' AND created_at >= :since AND created_at < :until{where} "
        f"GROUP BY account_id, tool_id, {day} ORDER BY day, account_id, tool_id",
        {"since": since, "until": until, "a": account_id},
    )


HISTORY = 101
"""Completed generations per tool an estimate reads (the most recent)."""


def tool_history(tx: Tx, tool_ids: Sequence[str], limit: int = HISTORY) -> dict[str, list[Row]]:
    """Per tool, the duration (ms) and cost of its most recent completed generations that called it
    (cache hits left out), newest first (``ix_generations_tool_completed``)."""
    reads = {
        tool_id: tx.fetch(
            "SELECT duration_ms, cost_usd FROM generations WHERE tool_id = :t AND status = 'completed' "
            "AND cached_from IS NULL ORDER BY created_at DESC LIMIT :n",
            {"t": tool_id, "n": limit},
        )
        for tool_id in sorted(set(tool_ids))
    }
    return {tool_id: read() for tool_id, read in reads.items()}
