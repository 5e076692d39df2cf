"""An ``App``'s accounts, their API keys (and the admin key), and the artifacts an account holds
or grants to another.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from pathlib import Path
from typing import Any

from toolweave.artifacts import ArtifactStore
from toolweave.engine.asking import shown_artifacts
from toolweave.engine.work import NotFound
from toolweave.inputs import FieldProblem, InputError, field_name
from toolweave.model.records import ArtifactRef
from toolweave.settings import Settings
from toolweave.store import accounts as accounts_q
from toolweave.store import questions as questions_q
from toolweave.store.db import Row, Store, Tx
from toolweave.store.ids import new_id

KEYS_REMEMBERED = 10_000
"""At most this many API keys are remembered by a process (``Accounts.remembered_key``)."""


class Accounts:
    """Accounts, keys and artifacts (a part of ``App``)."""

    settings: Settings
    store: Store
    artifacts: ArtifactStore
    _keys_seen: dict[str, tuple[str, str]]
    """``remembered_key``'s memory: (account, key id) by the key's hash."""

    async def ensure_account(self, account_id: str, name: str | None = None) -> str:
        await self.store.tx(accounts_q.ensure, account_id, name or account_id, time.time())
        return account_id

    async def account_for(self, platform: str, external_id: str, name: str) -> str:
        """The account linked to a chat user, created on first use."""
        result: str = await self.store.tx(accounts_q.for_platform_user, platform, external_id, name, time.time())
        return result

    async def create_key(self, account_id: str, name: str = "") -> tuple[str, str]:
        """A new API key for an account: returns (key id, the secret shown once)."""
        secret = "tw_" + secrets.token_urlsafe(32)
        key_id = new_id("key_")
        await self.store.tx(accounts_q.create_key, key_id, account_id, name, secret, time.time())
        return key_id, secret

    async def authenticate(self, secret: str) -> tuple[str, str] | None:
        """``(account, key id)`` of an API key; None for an unknown or revoked key. The admin key's
        account is ``admin`` and its key id ``admin:<fingerprint>`` (a new admin key is a new id)."""
        if self.settings.admin_key and secrets.compare_digest(secret, self.settings.admin_key):
            return "admin", self._admin_key_id()
        now = time.time()
        found = await self.store.read(accounts_q.authenticate, secret, now)
        if found is None:
            return None
        account, key_id, stale = found
        if stale:  # its use is written at most once a minute, in a transaction of its own
            await self.store.tx(accounts_q.touch_key, key_id, now)
        return account, key_id

    async def remembered_key(self, secret: str) -> tuple[str, str, bool] | None:
        """``authenticate``, answered from this process's memory for a key it has seen work:
        ``(account, key id, remembered)``. A remembered key may have been revoked since (by any
        process): the caller must check it where it acts (``submit_shown(key_id=…)`` does, in the
        transaction that stores the run) and, before answering an error, ask ``authenticate``
        again (``forget_key`` when that refuses it)."""
        if self.settings.admin_key and secrets.compare_digest(secret, self.settings.admin_key):
            return "admin", self._admin_key_id(), False
        known = self._keys_seen.get(accounts_q.key_hash(secret))
        if known is not None:
            return known[0], known[1], True
        found = await self.authenticate(secret)
        if found is None:
            return None
        if len(self._keys_seen) >= KEYS_REMEMBERED:
            self._keys_seen.clear()
        self._keys_seen[accounts_q.key_hash(secret)] = found
        return found[0], found[1], False

    def forget_key(self, secret: str) -> None:
        """Drop a key from ``remembered_key``'s memory (found revoked)."""
        self._keys_seen.pop(accounts_q.key_hash(secret), None)

    async def key_active(self, key_id: str) -> bool:
        """Whether a key (by id, as ``authenticate`` gave it) still works: not revoked, and for the
        admin key, still the configured one. Web sessions ask this on every request."""
        if key_id.startswith("admin:"):
            return bool(self.settings.admin_key) and secrets.compare_digest(key_id, self._admin_key_id())
        row = await self.store.read(accounts_q.key_by_id, key_id)
        return row is not None and row.revoked_at is None

    def _admin_key_id(self) -> str:
        return "admin:" + hashlib.sha256((self.settings.admin_key or "").encode()).hexdigest()[:16]

    async def list_keys(self, account_id: str | None = None) -> list[dict[str, Any]]:
        rows = await self.store.read(accounts_q.list_keys, account_id)
        return [
            {
                "keyId": r.key_id, "accountId": r.account_id, "prefix": r.prefix, "name": r.name,
                "createdAt": r.created_at, "lastUsedAt": r.last_used_at, "revokedAt": r.revoked_at,
            }
            for r in rows
        ]

    async def revoke_key(self, key_id_or_prefix: str) -> int:
        self._keys_seen.clear()
        count: int = await self.store.tx(accounts_q.revoke_key, key_id_or_prefix, time.time())
        return count

    async def artifact(
        self, sha256: str, account_id: str | None, question_id: str | None = None
    ) -> tuple[Path, ArtifactRef]:
        """An artifact's file and metadata as ``account_id`` knows it (its file name, the type it
        gave); NotFound unless the account holds it — or, with ``question_id``, unless that
        question names the account an approver and shows the artifact (a candidate, a prefilled
        value, a shown input: ``shown_artifacts``), as the run's account knows it. ``None`` (the
        admin): any artifact, with the metadata its content gives (no file name)."""
        ref: ArtifactRef | None = None
        if account_id is not None:
            owned = await self.store.read(_readable, sha256, account_id, question_id)
            if owned is None:
                raise NotFound(sha256)
            ref = accounts_q.artifact_ref(owned)
        try:
            return self.artifacts.path(sha256), ref or self.artifacts.ref(sha256)
        except KeyError:
            raise NotFound(sha256) from None

    async def grant_artifact(self, sha256: str, from_account: str, to_account: str) -> None:
        """Let ``to_account`` use (read, and pass as an input) an artifact ``from_account`` holds,
        under ``from_account``'s file name. NotFound unless ``from_account`` holds it; InputError
        (field ``accountId``) when ``to_account`` does not exist."""
        outcome = await self.store.tx(accounts_q.grant_artifact, sha256, from_account, to_account, time.time())
        if outcome == "no-artifact":
            raise NotFound(sha256)
        if outcome == "no-account":
            raise InputError([FieldProblem("accountId", f"there is no account {field_name(to_account)!r}")], root="")


def _readable(tx: Tx, sha256: str, account_id: str, question_id: str | None) -> Row | None:
    """The record through which ``account_id`` reads an artifact: its own, or (``question_id``)
    the run's account's when that question names it an approver and shows the artifact. The
    question stays readable to its approvers once answered (``App.question``), and so do the
    artifacts it shows; nothing else of the run is (its inputs, its other outputs)."""
    owned = accounts_q.artifact_owned(tx, sha256, account_id)
    if owned is not None or question_id is None:
        return owned
    question = questions_q.get(tx, question_id)
    if question is None or account_id not in (question.approvers or []):
        return None
    if sha256 not in shown_artifacts(question.body or {}):
        return None
    return accounts_q.artifact_owned(tx, sha256, str(question.account_id))
