"""Accounts, their links to chat platforms, API keys and artifact ownership."""

from __future__ import annotations

import hashlib
from typing import Any

from toolweave.model.records import ArtifactRef
from toolweave.store.db import Row, Tx, in_list


def ensure(tx: Tx, account_id: str, name: str, now: float) -> None:
    """Create the account unless it exists (idempotent under concurrent first requests)."""
    tx.q(
        "INSERT INTO accounts (account_id, name, created_at) VALUES (:id, :name, :now) ON CONFLICT (account_id) DO NOTHING",
        {"id": account_id, "name": name, "now": now},
    )


def get(tx: Tx, account_id: str) -> Row | None:
    return tx.one("SELECT * FROM accounts WHERE account_id = :id", {"id": account_id})


def linked(tx: Tx, platform: str, external_id: str) -> str | None:
    row = tx.one(
        "SELECT account_id FROM account_links WHERE platform = :p AND external_id = :e", {"p": platform, "e": external_id}
    )
    return None if row is None else str(row.account_id)


def links_of(tx: Tx, platform: str, account_ids: list[str]) -> list[Row]:
    """The ``platform`` users linked to these accounts (``account_id``, ``external_id``)."""
    if not account_ids:
        return []
    marks, params = in_list("a", account_ids)
    return tx.all(
        f"SELECT account_id, external_id FROM account_links WHERE platform = :p AND account_id IN {marks} "
        "ORDER BY account_id, external_id", {"p": platform, **params},
    )


def link(tx: Tx, platform: str, external_id: str, account_id: str, now: float) -> None:
    """Link a chat user to an account unless they are linked already (the first link stays)."""
    tx.q(
        "INSERT INTO account_links (platform, external_id, account_id, created_at) VALUES (:p, :e, :a, :now) "
        "ON CONFLICT (platform, external_id) DO NOTHING",
        {"p": platform, "e": external_id, "a": account_id, "now": now},
    )


def insert_key(tx: Tx, *, key_id: str, account_id: str, prefix: str, key_hash: str, name: str, created_at: float) -> None:
    tx.q(
        "INSERT INTO api_keys (key_id, account_id, prefix, key_hash, name, created_at) "
        "VALUES (:key_id, :account_id, :prefix, :key_hash, :name, :created_at)",
        {"key_id": key_id, "account_id": account_id, "prefix": prefix, "key_hash": key_hash, "name": name, "created_at": created_at},
    )


def key_by_hash(tx: Tx, key_hash: str) -> Row | None:
    return tx.one("SELECT * FROM api_keys WHERE key_hash = :h", {"h": key_hash})


def key_by_id(tx: Tx, key_id: str) -> Row | None:
    return tx.one("SELECT * FROM api_keys WHERE key_id = :id", {"id": key_id})


def touch_key(tx: Tx, key_id: str, now: float) -> None:
    tx.q("UPDATE api_keys SET last_used_at = :now WHERE key_id = :id", {"now": now, "id": key_id})


def list_keys(tx: Tx, account_id: str | None = None) -> list[Row]:
    if account_id is None:
        return tx.all("SELECT * FROM api_keys ORDER BY created_at")
    return tx.all("SELECT * FROM api_keys WHERE account_id = :a ORDER BY created_at", {"a": account_id})


def revoke_key(tx: Tx, key_id_or_prefix: str, now: float) -> int:
    return tx.rowcount(
        "UPDATE api_keys SET revoked_at = :now WHERE (key_id = :k OR prefix = :k) AND revoked_at IS NULL",
        {"now": now, "k": key_id_or_prefix},
    )


def own_artifact(tx: Tx, account_id: str, ref: dict[str, Any], run_id: str | None, now: float) -> None:
    """Record that ``account_id`` may read the artifact ``ref`` (idempotent, also when concurrent
    requests of one account bring the same file)."""
    tx.q(
        "INSERT INTO artifacts (sha256, account_id, mime_type, size, width, height, filename, run_id, created_at) "
        "VALUES (:sha, :a, :mime, :size, :w, :h, :fn, :run, :now) ON CONFLICT (sha256, account_id) DO NOTHING",
        {
            "sha": ref["sha256"], "a": account_id, "mime": ref.get("mimeType", "application/octet-stream"),
            "size": int(ref.get("size", 0)), "w": ref.get("width"), "h": ref.get("height"),
            "fn": ref.get("filename"), "run": run_id, "now": now,
        },
    )


def artifact_owned(tx: Tx, sha256: str, account_id: str) -> Row | None:
    """The account's own record of an artifact (its file name and metadata), None unless it holds it."""
    return tx.one("SELECT * FROM artifacts WHERE sha256 = :sha AND account_id = :a", {"sha": sha256, "a": account_id})


def artifacts_held(tx: Tx, account_id: str, shas: list[str]) -> dict[str, Row]:
    """The account's records of those of ``shas`` it holds, by hash (one query)."""
    if not shas:
        return {}
    marks, params = in_list("s", sorted(set(shas)))
    rows = tx.all(f"SELECT * FROM artifacts WHERE account_id = :a AND sha256 IN {marks}", {"a": account_id, **params})
    return {str(r.sha256): r for r in rows}


def artifact_ref(row: Row) -> ArtifactRef:
    """The artifact as an account knows it (its file name, the type it gave) from its record."""
    return ArtifactRef(
        sha256=row.sha256, mimeType=row.mime_type, size=int(row.size), width=row.width, height=row.height,
        filename=row.filename,
    )


def grant_artifact(tx: Tx, sha256: str, from_account: str, to_account: str, now: float) -> str:
    """Let ``to_account`` use an artifact ``from_account`` holds (with its file name). Returns
    ``granted``, ``no-account`` (``to_account`` does not exist) or ``no-artifact`` (``from_account``
    does not hold it)."""
    if get(tx, to_account) is None:
        return "no-account"
    row = artifact_owned(tx, sha256, from_account)
    if row is None:
        return "no-artifact"
    own_artifact(tx, to_account, artifact_ref(row).as_value(), None, now)
    _refresh(tx, sha256, to_account, now)
    return "granted"


def _refresh(tx: Tx, sha256: str, account_id: str, now: float) -> None:
    """An account's record of an artifact it uploaded (or was granted) again counts from now:
    retention (``toolweave prune``) removes records by their age."""
    tx.q("UPDATE artifacts SET created_at = :now WHERE sha256 = :sha AND account_id = :a AND created_at < :now",
         {"now": now, "sha": sha256, "a": account_id})


def own_upload(tx: Tx, account_id: str, value: dict[str, Any], now: float) -> None:
    """An upload: the account (created when new) may read the artifact ``value``."""
    ensure(tx, account_id, account_id, now)
    own_artifact(tx, account_id, value, None, now)
    _refresh(tx, value["sha256"], account_id, now)


def for_platform_user(tx: Tx, platform: str, external_id: str, name: str, now: float) -> str:
    """The account linked to a chat user, created and linked on first use."""
    found = linked(tx, platform, external_id)
    if found is not None:
        return found
    account_id = f"{platform}-{external_id}"
    ensure(tx, account_id, name, now)
    link(tx, platform, external_id, account_id, now)  # a concurrent first message may have linked it
    return linked(tx, platform, external_id) or account_id


def key_hash(secret: str) -> str:
    """What is kept of an API key: its SHA-256, never the key."""
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(tx: Tx, key_id: str, account_id: str, name: str, secret: str, now: float) -> None:
    """Keep a new key (its prefix and hash) for an account, created when new."""
    ensure(tx, account_id, account_id, now)
    insert_key(
        tx, key_id=key_id, account_id=account_id, prefix=secret[:10], key_hash=key_hash(secret), name=name, created_at=now
    )


KEY_USE_SECONDS = 60.0
"""How stale a key's ``last_used_at`` may be: it is written at most once in this time."""


def authenticate(tx: Tx, secret: str, now: float) -> tuple[str, str, bool] | None:
    """``(account, key id, whether its use is due to be recorded)`` of an API key (None for an
    unknown or revoked one). Reads only: ``touch_key`` records the use, at most once a minute, so
    checking a key never takes SQLite's write lock."""
    row = key_by_hash(tx, key_hash(secret))
    if row is None or row.revoked_at is not None:
        return None
    stale = row.last_used_at is None or now - row.last_used_at > KEY_USE_SECONDS
    return str(row.account_id), str(row.key_id), stale


def key_in_use(tx: Tx, key_id: str, now: float) -> bool:
    """Whether an API key (by id) is neither revoked nor gone, its use recorded when due (as
    ``touch_key``, at most once a minute): a submit's transaction checks the key a caller took
    from a process's memory (``Accounts.remembered_key``)."""
    row = tx.one("SELECT revoked_at, last_used_at FROM api_keys WHERE key_id = :id", {"id": key_id})
    if row is None or row.revoked_at is not None:
        return False
    if row.last_used_at is None or now - row.last_used_at > KEY_USE_SECONDS:
        touch_key(tx, key_id, now)
    return True
