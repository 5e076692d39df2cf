"""Small JSON values by namespace and key, with an optional expiry: front-end state (web sessions,
chat conversations, status messages) and the announcements of live workers."""

from __future__ import annotations

import json
from typing import Any

from toolweave.store.db import Row, Tx


def get(tx: Tx, namespace: str, key: str, now: float) -> Any:
    row = tx.one("SELECT value, expires_at FROM kv WHERE namespace = :ns AND key = :k", {"ns": namespace, "k": key})
    if row is None or (row.expires_at is not None and row.expires_at <= now):
        return None
    return row.value


def put(tx: Tx, namespace: str, key: str, value: Any, now: float, expires_at: float | None = None) -> None:
    """Set (or with ``value`` None, delete) a small JSON value; the last of concurrent writers wins."""
    if value is None:
        tx.q("DELETE FROM kv WHERE namespace = :ns AND key = :k", {"ns": namespace, "k": key})
        return
    tx.q(
        "INSERT INTO kv (namespace, key, value, expires_at, updated_at) VALUES (:ns, :k, :v, :exp, :now) "
        "ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at, "
        "updated_at = excluded.updated_at",
        {"ns": namespace, "k": key, "v": json.dumps(value), "exp": expires_at, "now": now},
    )


def entries(tx: Tx, namespace: str, now: float) -> list[Row]:
    """Every unexpired row (``key``, ``value``, ``expires_at``) of a namespace, by key."""
    return tx.all(
        "SELECT key, value, expires_at FROM kv WHERE namespace = :ns AND (expires_at IS NULL OR expires_at > :now)"
        " ORDER BY key",
        {"ns": namespace, "now": now},
    )


def items(tx: Tx, namespace: str, now: float) -> list[tuple[str, Any]]:
    """Every unexpired (key, value) of a namespace, by key."""
    return [(str(r.key), r.value) for r in entries(tx, namespace, now)]
