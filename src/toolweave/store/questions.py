"""Questions of ask steps (``questions``): asked, answered by a person or by the timeout, closed."""

from __future__ import annotations

from typing import Any

from toolweave.model.status import QuestionStatus
from toolweave.store.db import Row, Tx, in_list


def insert(tx: Tx, **values: Any) -> None:
    columns = tuple(values)
    tx.q(f"INSERT INTO questions ({', '.join(columns)}) VALUES ({', '.join(':' + c for c in columns)})", values)


def get(tx: Tx, question_id: str) -> Row | None:
    return tx.one("SELECT * FROM questions WHERE question_id = :id", {"id": question_id})


def many(tx: Tx, question_ids: list[str]) -> dict[str, Row]:
    if not question_ids:
        return {}
    marks, params = in_list("q", question_ids)
    return {str(r.question_id): r for r in tx.all(f"SELECT * FROM questions WHERE question_id IN {marks}", params)}


def of_run(tx: Tx, run_id: str) -> list[Row]:
    """Every question a run asked, oldest first."""
    return tx.all("SELECT * FROM questions WHERE run_id = :id ORDER BY asked_at, question_id", {"id": run_id})


def waiting_under(tx: Tx, run_id: str) -> list[Row]:
    """The waiting questions of the runs nested in ``run_id`` that wait for a person (a nested
    job's run, a map item's, and theirs in turn: only waiting runs are followed), oldest first."""
    return tx.all(
        "WITH RECURSIVE under(run_id) AS (SELECT run_id FROM runs WHERE parent_run_id = :id AND status = 'waiting_input' "
        "UNION SELECT r.run_id FROM runs r JOIN under u ON r.parent_run_id = u.run_id WHERE r.status = 'waiting_input') "
        "SELECT * FROM questions WHERE run_id IN (SELECT run_id FROM under) AND status = 'waiting' ORDER BY asked_at",
        {"id": run_id},
    )


def answer(tx: Tx, question_id: str, answer: dict[str, Any], by: str | None, now: float, *, expired: bool = False) -> bool:
    """Compare-and-set a waiting question to answered (by a person) or expired (by its timeout)."""
    status = QuestionStatus.EXPIRED if expired else QuestionStatus.ANSWERED
    return tx.rowcount(
        "UPDATE questions SET status = :status, answer = :answer, answered_by = :by, answered_at = :now "
        "WHERE question_id = :id AND status = 'waiting'",
        {"status": status.value, "answer": answer, "by": by, "now": now, "id": question_id},
    ) == 1


def close(tx: Tx, question_id: str, now: float) -> bool:
    """A waiting question whose step ended otherwise (cancelled, failed, the deadline) is closed."""
    return tx.rowcount(
        "UPDATE questions SET status = 'closed', answered_at = :now WHERE question_id = :id AND status = 'waiting'",
        {"now": now, "id": question_id},
    ) == 1


def waiting(tx: Tx, account_id: str | None, limit: int = 100) -> list[Row]:
    """Questions waiting for an answer, oldest first: those of ``account_id``'s runs (every one when
    None). Questions that name it an approver are found by ``waiting_for_approver``."""
    if account_id is None:
        return tx.all("SELECT * FROM questions WHERE status = 'waiting' ORDER BY asked_at LIMIT :limit", {"limit": limit})
    return tx.all(
        "SELECT * FROM questions WHERE status = 'waiting' AND account_id = :account ORDER BY asked_at LIMIT :limit",
        {"account": account_id, "limit": limit},
    )


def waiting_for_approver(tx: Tx, account_id: str, limit: int = 100) -> list[Row]:
    """Waiting questions of other accounts' runs that name ``account_id`` among their approvers."""
    rows = tx.all(
        "SELECT * FROM questions WHERE status = 'waiting' AND account_id <> :account ORDER BY asked_at",
        {"account": account_id},
    )
    return [r for r in rows if account_id in (r.approvers or [])][:limit]
