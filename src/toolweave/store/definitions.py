"""Job definitions registered through the API (``registered_jobs``), shared by every process."""

from __future__ import annotations

from typing import Any

from toolweave.store.db import Row, Tx


def register(tx: Tx, job_id: str, version: str, body: dict[str, Any], now: float) -> Row:
    """Keep a job version; the same id and version again is a no-op. Returns the stored row (whose
    body differs from ``body`` when another request registered that version first)."""
    tx.q(
        "INSERT INTO registered_jobs (job_id, version, body, registered_at) VALUES (:id, :version, :body, :now) "
        "ON CONFLICT (job_id, version) DO NOTHING",
        {"id": job_id, "version": version, "body": body, "now": now},
    )
    row = tx.one(
        "SELECT seq, job_id, version, body FROM registered_jobs WHERE job_id = :id AND version = :version",
        {"id": job_id, "version": version},
    )
    assert row is not None
    return row


def since(tx: Tx, seq: int) -> list[Row]:
    """Registrations after ``seq``, oldest first."""
    return tx.all("SELECT seq, job_id, version, body FROM registered_jobs WHERE seq > :seq ORDER BY seq", {"seq": seq})


