"""The notification outbox: rows written with the state change they announce (a run's outcome) or
on their own (a chat message: an answer, a question, a status message), delivered later."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from toolweave.store.db import Row, Tx, in_list


def chat_of(target: Any) -> str | None:
    """The chat a row goes to, kept in ``chat_id``: its target's ``chatId`` as text (an integer or
    a string of at most 64 characters; 42 and "42" are one chat), None for a row to no chat. The
    rows queued before migration 0015 got theirs from the same rule there."""
    chat = target.get("chatId") if isinstance(target, Mapping) else None
    if isinstance(chat, bool) or not isinstance(chat, (int, str)):
        return None
    text = str(chat)
    return text if 1 <= len(text) <= 64 else None


def _row(values: dict[str, Any]) -> dict[str, Any]:
    return {"status": "pending", "attempts": 0, "chat_id": chat_of(values.get("target")), **values}


def insert(tx: Tx, **values: Any) -> None:
    values = _row(values)
    columns = ", ".join(values)
    params = ", ".join(f":{k}" for k in values)
    tx.q(f"INSERT INTO notifications ({columns}) VALUES ({params})", values)


def insert_once(tx: Tx, **values: Any) -> bool:
    """Insert a row whose ``dedupe_key`` may be queued already; False (and nothing written) when
    it is."""
    values = _row(values)
    columns = ", ".join(values)
    params = ", ".join(f":{k}" for k in values)
    row = tx.one(
        f"INSERT INTO notifications ({columns}) VALUES ({params}) ON CONFLICT (dedupe_key) DO NOTHING "
        "RETURNING notification_id",
        values,
    )
    return row is not None


def release_given_up(tx: Tx, dedupe_key: str) -> bool:
    """The row of ``dedupe_key`` lets go of its key when it was given up (``failed``), so that the
    key may be queued again; True when one did. The row stays as it was (``toolweave notifications
    resend`` may still send it). In the transaction that queues the key again: two of them at once
    (any processes, either store) release it once and queue it once."""
    return tx.rowcount(
        "UPDATE notifications SET dedupe_key = NULL WHERE dedupe_key = :key AND status = 'failed'", {"key": dedupe_key}
    ) > 0


EARLIER_PENDING = (
    "SELECT * FROM notifications WHERE channel = :channel AND chat_id = :chat AND status = 'pending' "
    "AND created_at <= :created AND (created_at < :created OR notification_id < :id) "
    "ORDER BY created_at, notification_id LIMIT 1"
)


def earlier_pending(tx: Tx, channel: str, chat_id: str, created_at: float, notification_id: str) -> Row | None:
    """The oldest row of ``channel`` to ``chat_id`` queued before (``created_at``,
    ``notification_id``) and still pending: one seek of ``ix_notifications_chat``, however many
    rows are pending."""
    return tx.one(EARLIER_PENDING, {"channel": channel, "chat": chat_id, "created": created_at, "id": notification_id})


def get(tx: Tx, notification_id: str) -> Row | None:
    return tx.one("SELECT * FROM notifications WHERE notification_id = :id", {"id": notification_id})


def for_run(tx: Tx, run_id: str) -> list[Row]:
    return tx.all("SELECT * FROM notifications WHERE run_id = :id ORDER BY created_at, notification_id", {"id": run_id})


def for_runs(tx: Tx, run_ids: list[str]) -> list[Row]:
    """``for_run`` of at most 500 runs in one statement, by run and in ``for_run``'s order."""
    marks, params = in_list("r", run_ids)
    return tx.all(f"SELECT * FROM notifications WHERE run_id IN {marks} ORDER BY run_id, created_at, notification_id",
                  params)


def with_status(tx: Tx, status: str, *, channel: str | None = None, limit: int = 100) -> list[Row]:
    """Rows in ``status``, oldest first (through ``ix_notifications_status``)."""
    extra = " AND channel = :channel" if channel else ""
    return tx.all(
        f"SELECT * FROM notifications WHERE status = :status{extra} ORDER BY created_at LIMIT :limit",
        {"status": status, "channel": channel, "limit": limit},
    )


def mark_delivered(tx: Tx, notification_id: str, now: float) -> None:
    tx.q(
        "UPDATE notifications SET status = 'delivered', delivered_at = :now, attempts = attempts + 1, "
        "last_error = NULL, next_attempt_at = NULL WHERE notification_id = :id",
        {"now": now, "id": notification_id},
    )


def mark_attempt_failed(tx: Tx, notification_id: str, error: str, next_at: float | None) -> None:
    """Record a failed attempt; ``next_at`` None means give up (status failed)."""
    status = "pending" if next_at is not None else "failed"
    tx.q(
        "UPDATE notifications SET attempts = attempts + 1, last_error = :error, next_attempt_at = :next, "
        "status = :status WHERE notification_id = :id",
        {"error": error[:2000], "next": next_at, "status": status, "id": notification_id},
    )


def reopen(tx: Tx, notification_id: str, now: float) -> bool:
    """A failed row pending again (its delivery horizon starts anew: ``created_at`` is now); False
    unless it was failed."""
    return tx.rowcount(
        "UPDATE notifications SET status = 'pending', next_attempt_at = :now, created_at = :now "
        "WHERE notification_id = :id AND status = 'failed'",
        {"now": now, "id": notification_id},
    ) > 0
