"""Results of cached steps (``step_cache``): looked up by (account, key), written when a cached
generation completes, and pruned when they expire."""

from __future__ import annotations

from typing import Any

from toolweave.store.db import Row, Tx


def find(tx: Tx, account_id: str, key: str, now: float) -> Row | None:
    """The account's result under ``key`` that has not expired, if any."""
    return tx.one(
        "SELECT account_id, cache_key, tool_id, outputs, generation_id, run_id, created_at, expires_at "
        "FROM step_cache WHERE account_id = :account AND cache_key = :key AND expires_at > :now",
        {"account": account_id, "key": key, "now": now},
    )


def put(
    tx: Tx, *, account_id: str, key: str, tool_id: str, outputs: dict[str, Any], generation_id: str, run_id: str,
    now: float, expires_at: float,
) -> None:
    """Keep a result (the latest one made under a key replaces an earlier one)."""
    values = {
        "account": account_id, "key": key, "tool_id": tool_id, "outputs": outputs, "generation_id": generation_id,
        "run_id": run_id, "now": now, "expires": expires_at,
    }
    tx.q(
        "INSERT INTO step_cache (account_id, cache_key, tool_id, outputs, generation_id, run_id, created_at, expires_at) "
        "VALUES (:account, :key, :tool_id, :outputs, :generation_id, :run_id, :now, :expires) "
        "ON CONFLICT (account_id, cache_key) DO UPDATE SET tool_id = excluded.tool_id, outputs = excluded.outputs, "
        "generation_id = excluded.generation_id, run_id = excluded.run_id, created_at = excluded.created_at, "
        "expires_at = excluded.expires_at",
        values,
    )


def delete_expired(tx: Tx, now: float, limit: int) -> int:
    """Forget at most ``limit`` results that expired before ``now``; how many were."""
    rows = tx.all(
        "SELECT account_id, cache_key FROM step_cache WHERE expires_at <= :now ORDER BY expires_at LIMIT :limit",
        {"now": now, "limit": limit},
    )
    for row in rows:
        tx.q(
            "DELETE FROM step_cache WHERE account_id = :account AND cache_key = :key AND expires_at <= :now",
            {"account": row.account_id, "key": row.cache_key, "now": now},
        )
    return len(rows)
