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
from toolweave.engine.recording import progress_moves
from toolweave.engine.work import NotFound
from toolweave.host import media_path, media_signature
from toolweave.model.records import RunUpdate
from toolweave.model.status import GenerationStatus
from toolweave.services.base import Service, WebhookRejected
from toolweave.settings import Settings
from toolweave.store import generations as gens_q
from toolweave.store import runs as runs_q
from toolweave.store.batching import GroupCommit
from toolweave.store.db import Row, Store, Tx

WEBHOOK_TRANSACTIONS = 4
"""Transactions applying webhooks at the same time (on SQLite they run one at a time anyway)."""


@dataclass(frozen=True)
class _Update:
    """One webhook's update, to be applied with those arriving with it (``Webhooks._apply_tx``)."""

    service_name: str
    generation_id: str
    platform_run_id: str
    update: RunUpdate
    receipt: tuple[str, str]
    run_id: str | None = None
    """The generation's run when it was read already (a service that needed the generation to
    read the webhook); None: the transaction reads it with the others of its batch."""


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
        returns whether anything changed.

        Most webhooks need nothing of their generation to be read (a progress report; any update
        of a service without ``finalize`` or ``parse_webhook_for``): the generation is read, checked
        and updated in the transaction that applies the webhooks arriving with it (group commit),
        one statement for all of them. The others read it first, as they must before calling the
        service."""
        service = self.services.get(service_name)
        if service is None or not self.engine.check_webhook_token(service_name, generation_id, token):
            raise NotFound(generation_id)
        if getattr(service, "parse_webhook_for", None) is None:
            try:
                parsed = service.parse_webhook(headers, body)
            except WebhookRejected:
                if await self.store.read(_generation_of, generation_id, service_name) is None:
                    raise NotFound(generation_id) from None  # as for any webhook of an unknown generation
                raise
            if not parsed.update.status.terminal or getattr(service, "finalize", None) is None:
                key = parsed.event_key or hashlib.sha256(body).hexdigest()
                return await self._apply(
                    _Update(service_name, generation_id, parsed.platform_run_id, parsed.update, (service_name, key))
                )
        return await self._handle_with_generation(service, service_name, generation_id, headers, body)

    async def _handle_with_generation(
        self, service: Service, service_name: str, generation_id: str, headers: Mapping[str, str], body: bytes
    ) -> bool:
        """A webhook whose service reads it by the generation's tool, or completes a terminal
        update (downloads, cost) before it is stored: the generation is read first."""
        gen = await self.store.read(_generation_of, generation_id, service_name)
        if gen is None:
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
        _check(gen, parsed.platform_run_id)
        if GenerationStatus(gen.status).terminal:
            return False
        update = parsed.update
        if update.status.terminal:
            finalize = getattr(service, "finalize", None)
            if finalize is not None:
                update = await finalize(await generation(), update)
        key = parsed.event_key or hashlib.sha256(body).hexdigest()
        return await self._apply(
            _Update(service_name, generation_id, parsed.platform_run_id, update, (service_name, key), gen.run_id)
        )

    async def _apply(self, item: _Update) -> bool:
        if self._webhook_updates is None:
            self._webhook_updates = GroupCommit(self.store, self._apply_tx, concurrency=WEBHOOK_TRANSACTIONS)
        return await self._webhook_updates(item)

    def _apply_tx(self, tx: Tx, items: Sequence[_Update]) -> list[bool | Exception]:
        """Apply the webhooks that arrived together, in one transaction (group commit: on SQLite a
        transaction's begin and commit, on PostgreSQL its round trips, cost more than a progress
        update).

        The generations not read yet are read with one statement and checked (an unknown one, or
        one of another service: ``NotFound``; another platform run: ``WebhookRejected``; one that
        has ended: a duplicate): each such item gets its error, the others go on. Then every run
        of the batch is locked in one statement, in the order of their ids (as the worker's
        batches lock theirs, so two such transactions cannot deadlock), the deliveries recorded
        (a repeat is a no-op) and the progress reports' generations read again under those locks,
        sent together: on PostgreSQL one round trip for the batch, their writes queued. A progress report moves its generation forward only (``progress_moves``), in the
        order the reports came. The reports that end generations follow, all of them at once
        (``Engine.finish_generations_tx``: one more round trip, and one pass of the planner per
        run)."""
        now = time.time()
        results: list[bool | Exception] = [False] * len(items)
        unread = sorted({item.generation_id for item in items if item.run_id is None})
        gens = gens_q.webhook_targets(tx, unread)()
        runs: dict[int, str] = {}
        for i, item in enumerate(items):
            if item.run_id is not None:
                runs[i] = item.run_id
                continue
            gen = gens.get(item.generation_id)
            if gen is None or gen.service_name != item.service_name:
                results[i] = NotFound(item.generation_id)
                continue
            try:
                _check(gen, item.platform_run_id)
            except WebhookRejected as exc:
                results[i] = exc
                continue
            if not GenerationStatus(gen.status).terminal:
                runs[i] = gen.run_id
        locked = runs_q.lock_states(tx, sorted(set(runs.values())))
        receipts = gens_q.record_webhook_receipts(tx, [(*items[i].receipt, items[i].generation_id) for i in runs], now)
        progress = [i for i in runs if not items[i].update.status.terminal]
        current = gens_q.webhook_targets(tx, sorted({items[i].generation_id for i in progress}))
        held, fresh, gens = locked(), dict(zip(runs, receipts(), strict=True)), current()
        for i in progress:
            item, gen = items[i], gens.get(items[i].generation_id)
            if fresh[i] and runs[i] in held and gen is not None and progress_moves(gen, item.update):
                self.engine.record_progress(tx, runs[i], gen, item.update, now, known=True)
                gens[item.generation_id] = Row(gen, status="processing", progress=item.update.progress,
                                               live_status=item.update.live_status)
                results[i] = True
        ending = [i for i in runs if fresh[i] and items[i].update.status.terminal]
        ended = self.engine.finish_generations_tx(
            tx, [(runs[i], items[i].generation_id, items[i].update) for i in ending], held, now
        )
        for i, applied in zip(ending, ended, strict=True):
            results[i] = applied
        return results


def _generation_of(tx: Tx, generation_id: str, service_name: str) -> Row | None:
    """A generation of ``service_name`` (what a webhook needs of it), or None."""
    gen = gens_q.webhook_targets(tx, [generation_id])().get(generation_id)
    return gen if gen is not None and gen.service_name == service_name else None


def _check(gen: Row, platform_run_id: str) -> None:
    if gen.platform_specific_run_id and platform_run_id != gen.platform_specific_run_id:
        raise WebhookRejected("the webhook names another run than this generation's")
