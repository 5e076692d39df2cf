"""What backends reach an ``App`` by: their webhooks (each URL carrying a per-generation token)
and the signed, expiring ``/media`` paths at which they fetch artifacts.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from toolweave.engine.core import Engine
from toolweave.engine.work import NotFound
from toolweave.host import media_path, media_signature
from toolweave.model.records import RunUpdate
from toolweave.services.base import Service, WebhookRejected
from toolweave.settings import Settings
from toolweave.store import generations as gens_q
from toolweave.store.batching import GroupCommit
from toolweave.store.db import Store, Tx

WEBHOOK_TRANSACTIONS = 4
"""Transactions applying webhooks at the same time (on SQLite they run one at a time anyway)."""


@dataclass(frozen=True)
class _Update:
    """One webhook's update, to be applied with those arriving with it (``Webhooks._apply_tx``)."""

    run_id: str
    generation_id: str
    update: RunUpdate
    receipt: tuple[str, str]


class Webhooks:
    """Webhooks and signed media paths (a part of ``App``)."""

    settings: Settings
    store: Store
    engine: Engine
    services: dict[str, Service]
    _webhook_updates: GroupCommit[_Update, bool] | None = None

    @property
    def webhook_transactions(self) -> int:
        """Transactions that applied webhooks so far (fewer than the webhooks when they arrive together)."""
        return self._webhook_updates.transactions if self._webhook_updates is not None else 0

    def media_path(self, sha256: str, mime_type: str, now: float | None = None) -> str:
        """The signed path (``/media/<sha256>?type=…&expires=…&token=…``) at which a backend may
        fetch an artifact, served with that content type, for ``media_url_ttl_seconds``."""
        expires = int((time.time() if now is None else now) + self.settings.media_url_ttl_seconds)
        return media_path(self.engine.secret, sha256, mime_type, expires)

    def media_token_valid(self, sha256: str, mime_type: str, expires: int, token: str, now: float | None = None) -> bool:
        """Whether a ``/media`` request carries the token ``media_path`` signed for exactly this
        artifact, content type and expiry, and has not expired."""
        if expires <= (time.time() if now is None else now):
            return False
        expected = media_signature(self.engine.secret, sha256, mime_type, expires)
        return hmac.compare_digest(expected.encode(), token.encode("utf-8", "surrogateescape"))

    def webhook_url(self, service: str, generation_id: str) -> str | None:
        base = self.settings.public_base_url
        if not base:
            return None
        token = self.engine.webhook_token(service, generation_id)
        return f"{base.rstrip('/')}/webhooks/{service}/{generation_id}?token={token}"

    async def handle_webhook(
        self, service_name: str, generation_id: str, token: str, headers: Mapping[str, str], body: bytes
    ) -> bool:
        """Apply a backend's webhook. NotFound for an unknown service, generation or bad token;
        WebhookRejected for a body that is not an update. Duplicates and late updates are no-ops;
        returns whether anything changed."""
        service = self.services.get(service_name)
        if service is None or not self.engine.check_webhook_token(service_name, generation_id, token):
            raise NotFound(generation_id)
        gen = await self.store.read(gens_q.get, generation_id)
        if gen is None or gen.service_name != service_name:
            raise NotFound(generation_id)
        context = None

        async def generation() -> Any:  # what the service knows of it: its tool, inputs, run id
            nonlocal context
            if context is None:
                work = await self.store.read(self.engine.generation_work_tx, generation_id)
                context = work.context(self.webhook_url(service_name, generation_id))
            return context

        parse_for = getattr(service, "parse_webhook_for", None)
        if parse_for is not None:  # a service whose webhooks read by the generation's tool (http)
            parsed = parse_for(await generation(), headers, body)
        else:
            parsed = service.parse_webhook(headers, body)
        if gen.platform_specific_run_id and parsed.platform_run_id != gen.platform_specific_run_id:
            raise WebhookRejected("the webhook names another run than this generation's")
        from toolweave.model.status import GenerationStatus

        if GenerationStatus(gen.status).terminal:
            return False
        update = parsed.update
        if update.status.terminal:
            finalize = getattr(service, "finalize", None)
            if finalize is not None:
                update = await finalize(await generation(), update)
        key = parsed.event_key or hashlib.sha256(body).hexdigest()
        if self._webhook_updates is None:
            self._webhook_updates = GroupCommit(self.store, self._apply_tx, concurrency=WEBHOOK_TRANSACTIONS)
        return await self._webhook_updates(_Update(gen.run_id, generation_id, update, (service_name, key)))

    def _apply_tx(self, tx: Tx, items: Sequence[_Update]) -> list[bool]:
        """Apply the webhooks that arrived together, in one transaction (group commit: on SQLite a
        transaction's begin and commit, on PostgreSQL its round trips, cost more than a progress
        update). Their runs are locked in the order of their ids, as the worker's batches lock
        theirs, so two such transactions cannot deadlock."""
        now = time.time()
        applied = [False] * len(items)
        for i in sorted(range(len(items)), key=lambda i: items[i].run_id):
            item = items[i]
            _d, applied[i] = self.engine.apply_update_tx(
                tx, item.run_id, item.generation_id, item.update, now, None, None, item.receipt
            )
        return applied
