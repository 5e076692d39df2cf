"""Wiring: one ``App`` built from settings and passed explicitly (no global singletons).

Front ends (CLI, HTTP API, Telegram) talk to this facade only: ``submit``, ``get_run``,
``list_runs``, ``cancel``, ``retry``, ``events``/``watch``, ``handle_webhook``, accounts and keys,
artifacts, and the definitions in the registry. ``App`` is put together from its parts by concern:
the definitions it knows (``definitions.py``), how it makes runs (``submitting.py``), webhooks and
signed media paths (``webhooks.py``), accounts, keys and artifacts (``accounts.py``), answers to
steps that ask a person (``answering.py``); here are its
set-up and what it does with runs once made. The SQL it runs is in ``store/`` (one module per
entity; ``store/kv.py``, ``store/stats.py``), the records front ends see in ``run_views.py``, what
services get from the engine (``EngineHost``, media inputs) in ``host.py`` and worker presence in
``presence.py``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from toolweave import presence
from toolweave.accounting import Defaults, Gate, InsufficientCredits, OverLimit, Refused
from toolweave.accounting.desk import CreditDesk
from toolweave.accounts import Accounts
from toolweave.answering import AnswerError, Answering
from toolweave.artifacts import ArtifactStore
from toolweave.definitions import InvalidDefinition, UnknownDefinition
from toolweave.engine.core import Engine
from toolweave.engine.evaluate import Budgets
from toolweave.engine.replay import BadRequest
from toolweave.engine.work import Conflict, NotFound
from toolweave.engine.worker import Worker
from toolweave.host import EngineHost, MediaError
from toolweave.inputs import InputError, drawn_seeds
from toolweave.model.definitions import JobDefinition
from toolweave.model.records import RunUpdate
from toolweave.model.status import RunStatus
from toolweave.notify.dispatcher import Channel, Notifier
from toolweave.notify.outbox import Notice, Outbox
from toolweave.presence import WORKER_TTL_SECONDS
from toolweave.registry import Problem, Registry
from toolweave.run_views import (
    decode_cursor,
    encode_cursor,
    iso,
    run_detail,
    run_events,
    run_summary,
    step_items,
)
from toolweave.sandbox import EvaluationPool
from toolweave.services.base import Service
from toolweave.settings import Settings
from toolweave.store import generations as gens_q
from toolweave.store import kv as kv_q
from toolweave.store import runs as runs_q
from toolweave.store import stats as stats_q
from toolweave.store.db import Store
from toolweave.submitting import Submitting
from toolweave.watching import FINAL_EVENTS, PAGE_EVENTS, EventHub
from toolweave.webhooks import Webhooks

if TYPE_CHECKING:  # httpx is imported with the first client (it imports its own command line: click, pygments)
    import httpx

log = logging.getLogger("toolweave")

__all__ = [
    "AnswerError", "App", "BadRequest", "Conflict", "EngineHost", "InputError", "InsufficientCredits",
    "InvalidDefinition", "MediaError", "NotFound", "Notice", "OverLimit", "Refused", "UnknownDefinition",
]


@dataclass
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None


class App(Submitting, Webhooks, Accounts, Answering):
    def __init__(self, settings: Settings, *, store: Store | None = None, migrate: bool = True) -> None:
        self.settings = settings
        settings.home.mkdir(parents=True, exist_ok=True)
        self.store = store or Store(settings.db_url, pool_size=max(4, settings.worker_slots + 2))
        if migrate:
            self.store.upgrade()
        self.artifacts = ArtifactStore(settings.artifacts_dir)
        self._http: httpx.AsyncClient | None = None
        self.evaluator = EvaluationPool(settings.evaluation_processes)
        """The evaluator processes this process's workers evaluate conditions and templates in
        (started when first needed)."""
        self.engine = Engine(rates=settings.machine_rates, secret=self._secret(), lease_seconds=settings.lease_seconds)
        defaults = Defaults(
            credits_by_default=settings.credits_by_default, max_runs_in_flight=settings.account_max_runs_in_flight,
            submits_per_minute=settings.account_submits_per_minute,
        )
        self.engine.gate = Gate(defaults)
        self.credits = CreditDesk(
            self.store, defaults, settings.machine_rates, fallback_seconds=settings.estimate_fallback_seconds,
            confirm_above=settings.credits_confirm_above,
        )
        """Credits, estimates and limits (``accounting``): grants, balances, history, spend, policies."""
        self.host = EngineHost(self)
        self.event_hub = EventHub(self.store)
        self.services: dict[str, Service] = {}
        self.registry = Registry()
        self.notifier = Notifier(
            self.store, {}, horizon=settings.notification_horizon_seconds,
            first_backoff=min(2.0, settings.notification_max_backoff_seconds),
            max_backoff=settings.notification_max_backoff_seconds,
        )
        self.outbox = Outbox(self.store, self.notifier, lease_seconds=settings.lease_seconds)
        from toolweave.notify.callback import CallbackChannel

        signing = settings.callback_signing_secret.encode() if settings.callback_signing_secret else self._secret()
        self.add_channel(CallbackChannel(lambda: self.http, signing, allow_private=settings.callback_allow_private_urls))
        self._keys_seen = {}
        self.definition_problems: list[Problem] = []
        self._registered_seq = 0
        """The last registration (``registered_jobs.seq``) this process has taken in."""
        self._build_services()
        self.reload_definitions()
        if settings.telegram_token:
            from toolweave.telegram.channel import (
                TelegramChannel,
                telegram_approver_rule,
                telegram_notification_rule,
            )

            self.add_channel(TelegramChannel(self))
            self.add_notification_rule(telegram_notification_rule)
            self.engine.approver_rules.append(telegram_approver_rule)

    # --- set-up --------------------------------------------------------------------------------

    @property
    def http(self) -> httpx.AsyncClient:
        """The HTTP client of every service and channel, made when first needed (its TLS set-up and
        connection pool cost a command that calls no backend a tenth of a second)."""
        if self._http is None:
            import httpx

            self._http = httpx.AsyncClient(timeout=self.settings.http_timeout_seconds)
        return self._http

    @classmethod
    def from_env(cls, **overrides: Any) -> App:
        return cls(Settings.load(**overrides))

    def _secret(self) -> bytes:
        if self.settings.secret_key:
            return self.settings.secret_key.encode()
        path = self.settings.home / "secret.key"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))
        return path.read_text().strip().encode()

    def _build_services(self) -> None:
        from toolweave.services.catalog import ServiceCatalog

        self.catalog = ServiceCatalog(self.settings)
        for name, service in self.catalog.build(self.host, test_tools=self.settings.test_tools).items():
            self.services[name] = service

    def add_service(self, service: Service) -> None:
        self.services[service.name] = service

    def add_channel(self, channel: Channel) -> None:
        self.notifier.add_channel(channel)

    def add_notification_rule(self, rule: Callable[[Any, RunStatus], list[tuple[str, dict[str, Any]]]]) -> None:
        self.engine.notification_rules.append(rule)

    async def aclose(self) -> None:
        await self.outbox.close()
        for service in self.services.values():
            try:
                await service.close()
            except Exception:
                log.exception("closing service %s failed", service.name)
        if self._http is not None:
            await self._http.aclose()
        self.evaluator.close()
        self.store.close()

    @property
    def budgets(self) -> Budgets:
        return Budgets(self.settings.condition_budget_ms / 1000, self.settings.template_budget_ms / 1000)

    def make_worker(self, slots: int | None = None, **options: Any) -> Worker:
        options.setdefault("sweep_seconds", self.settings.sweep_seconds)
        options.setdefault("evaluator", self.evaluator)
        options.setdefault("budgets", self.budgets)
        if self.settings.retention_days > 0 and "housekeeping" not in options:
            from toolweave.retention import PeriodicPrune

            every = self.settings.prune_every_minutes * 60
            options["housekeeping"] = PeriodicPrune(
                self.store, self.artifacts, older_than=self.settings.retention_days * 86400, every_seconds=every
            )
            options.setdefault("housekeeping_seconds", min(every, 600.0))
        return Worker(
            self.store,
            self.engine,
            self.services,
            slots=slots or self.settings.worker_slots,
            webhook_url=self.webhook_url,
            deliver=self.notifier.deliver,
            **options,
        )

    # --- runs ----------------------------------------------------------------------------------

    async def apply_update(self, generation_id: str, update: RunUpdate) -> bool:
        gen = await self.store.read(gens_q.get, generation_id)
        if gen is None:
            return False
        _dispatches, applied = await self.store.tx(
            self.engine.apply_update_tx, gen.run_id, generation_id, update, time.time()
        )
        return bool(applied)

    async def get_run(self, run_id: str, account_id: str | None = None) -> dict[str, Any]:
        """The run with its steps, generations, outputs, cost, timings; NotFound for another account's."""
        detail: dict[str, Any] = await self.store.read(run_detail, run_id, account_id)
        workers = await self.live_workers() if detail["status"] == RunStatus.QUEUED.value else []
        detail["statusDetail"] = presence.status_detail(detail, lambda: workers)
        return detail

    async def run_statuses(self, run_ids: Sequence[str], account_id: str | None = None) -> dict[str, str]:
        """The status of each of ``run_ids`` that exists (and is the account's), in few queries:
        following many runs at once (a batch)."""
        found: dict[str, str] = await self.store.read(runs_q.statuses, list(run_ids), account_id)
        return found

    async def step_items(
        self, run_id: str, step_id: str, account_id: str | None = None, *, after: int = -1, limit: int = 100,
        status: str | None = None,
    ) -> dict[str, Any]:
        """A page of a map step's items (``after`` an item index, at most ``limit``, optionally of one
        status); ``nextAfter`` continues. NotFound for another account's run or an unknown step."""
        page: dict[str, Any] = await self.store.read(step_items, run_id, step_id, account_id, after, limit, status)
        return page

    async def list_runs(
        self,
        account_id: str | None,
        *,
        status: list[str] | None = None,
        job_id: str | None = None,
        since: float | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> Page:
        before = decode_cursor(cursor) if cursor else None
        if status:  # ``pending`` is the former name of ``queued``
            status = [RunStatus.QUEUED.value if s == "pending" else s for s in status]
        rows = await self.store.read(
            lambda tx: runs_q.list_runs(
                tx, account_id, status=status, job_id=job_id, since=since, before=before, limit=limit + 1
            )
        )
        more = len(rows) > limit
        rows = rows[:limit]
        items = [run_summary(r) for r in rows]
        next_cursor = encode_cursor(rows[-1].created_at, rows[-1].run_id) if more and rows else None
        return Page(items, next_cursor)

    async def cancel(self, run_id: str, account_id: str | None = None) -> str:
        status: str = await self.store.tx(self.engine.cancel_tx, run_id, account_id, time.time())
        return status

    async def retry(self, run_id: str, account_id: str | None = None) -> None:
        """Run a finished run again in place, from its failed steps; its estimate is held again
        from the account's credits (``Refused`` when they do not cover it, or a limit is reached)."""
        cost = await self._estimate_again(run_id, account_id)
        await self.store.tx(self.engine.retry_tx, run_id, account_id, time.time(), cost)

    async def run_definition(self, run_id: str, account_id: str | None = None) -> JobDefinition:
        """The definition version a run pinned (as it was when the run started); NotFound for
        another account's run."""
        job, _inputs, _owner = await self.store.read(self.engine.run_job_tx, run_id, account_id)
        return job

    async def fork(
        self,
        run_id: str,
        account_id: str | None = None,
        *,
        from_step: str | None = None,
        inputs: Mapping[str, Any] | None = None,
        origin: dict[str, Any] | None = None,
        coerce_text: bool = True,
        allow_local_paths: bool = False,
    ) -> str:
        """Run a finished run again as a new run of the same definition version, from ``from_step``
        and/or with some ``inputs`` changed; every step upstream of both keeps its outcome. Returns
        the new run's id. NotFound for another account's run, Conflict when there is nothing to run
        again or the run has not ended, InputError for bad inputs, BadRequest for an unknown step."""
        job, before, owner = await self.store.read(self.engine.run_job_tx, run_id, account_id)
        given = dict(inputs or {})
        if given:
            inputs_now = await self._admit(
                job, {**before, **given}, owner, coerce_text=coerce_text, allow_local_paths=allow_local_paths
            )
        else:
            inputs_now = before
        # the seeds the fork draws anew (given as -1 or left empty); the others keep their values
        drawn = [name for name in drawn_seeds(job.input_schema, given) if name in given]
        cost = await self._estimate_again(run_id, account_id)
        new_id: str = await self.store.tx(
            self.engine.fork_tx, run_id, account_id, from_step, inputs_now, origin or {}, time.time(),
            (sorted(given), drawn), cost,
        )
        return new_id

    async def events(
        self, run_id: str, account_id: str | None = None, after: int = 0, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """The run's first ``limit`` events after ``after``; NotFound for an unknown run or another
        account's."""
        found: list[dict[str, Any]] = await self.store.read(run_events, run_id, account_id, after, limit)
        return found

    async def watch(self, run_id: str, account_id: str | None = None, after: int = 0) -> AsyncIterator[dict[str, Any]]:
        """Events of a run as they are appended, from ``after``; ends after the run's final event.
        NotFound (at the first step) for an unknown run or another account's. Every watcher of
        this process shares one reader of the store (``watching.EventHub``). The backlog is read a
        page (``watching.PAGE_EVENTS``) at a time, the next when the caller has taken the last."""
        final_seen = False
        while True:
            page = await self.events(run_id, account_id, after, PAGE_EVENTS)
            if len(page) < PAGE_EVENTS:
                break
            for item in page:
                final_seen = final_seen or item["type"] in FINAL_EVENTS
                yield item
            after = page[-1]["id"]
        async for item in self.event_hub.follow(run_id, after, page, final_seen=final_seen):
            yield item

    async def wait(self, run_id: str, timeout: float = 300.0, interval: float = 0.1) -> dict[str, Any]:
        deadline = time.time() + timeout
        while True:
            run = await self.get_run(run_id)
            if RunStatus(run["status"]).terminal:
                return run
            if time.time() >= deadline:
                raise TimeoutError(f"run {run_id} is still {run['status']} after {timeout:.0f} s")
            await asyncio.sleep(interval)

    async def in_flight(self, account_id: str) -> int:
        count: int = await self.store.read(runs_q.in_flight_count, account_id)
        return count

    # --- small state and statistics ----------------------------------------------------------

    async def kv_get(self, namespace: str, key: str) -> Any:
        return await self.store.read(kv_q.get, namespace, key, time.time())

    async def kv_set(self, namespace: str, key: str, value: Any, ttl: float | None = None) -> None:
        now = time.time()
        await self.store.tx(kv_q.put, namespace, key, value, now, now + ttl if ttl else None)

    async def kv_items(self, namespace: str) -> list[tuple[str, Any]]:
        """Every unexpired (key, value) of a namespace, by key."""
        items: list[tuple[str, Any]] = await self.store.read(kv_q.items, namespace, time.time())
        return items

    # --- the outbox ------------------------------------------------------------------------------

    async def queue_notification(
        self, channel: str, target: Mapping[str, Any], payload: Mapping[str, Any], *, event_type: str,
        account_id: str, run_id: str | None = None, dedupe_key: str | None = None, again_if_given_up: bool = False,
    ) -> str | None:
        """Queue a message for ``channel`` (a chat message of a front end) in the outbox; this
        process sends it at once, any worker retries it. None when ``dedupe_key`` was queued already
        (with ``again_if_given_up``: and its row was not given up, see ``Outbox.queue``)."""
        return await self.outbox.queue(channel, target, payload, event_type=event_type, account_id=account_id,
                                       run_id=run_id, dedupe_key=dedupe_key, again_if_given_up=again_if_given_up)

    async def notification(self, notification_id: str) -> dict[str, Any] | None:
        """One outbox row (any account's: callers check ``account_id``)."""
        return await self.outbox.get(notification_id)

    async def undelivered_notifications(self, *, channel: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Notifications given up, oldest first."""
        return await self.outbox.undelivered(channel=channel, limit=limit)

    async def resend_notifications(self, notification_ids: list[str]) -> list[str]:
        """Queue given-up notifications again; returns those that were given up."""
        return await self.outbox.resend(notification_ids)

    async def ping(self) -> None:
        """Ask the store for one row of the runs table (readiness: it answers, with its schema)."""
        await self.store.read(lambda tx: tx.one("SELECT 1 FROM runs LIMIT 1"))

    async def stats(self) -> dict[str, Any]:
        """Runs by status, queue depth by task kind and queue lag (for /metrics)."""
        return await self.store.read(stats_q.overview, time.time())

    # --- worker presence and the schema revision -----------------------------------------------

    async def run_worker(self, worker: Worker, *, kind: str = "worker", ttl: float = WORKER_TTL_SECONDS) -> None:
        """Run ``worker`` until ``worker.stop()``, announced meanwhile in ``live_workers()`` (a
        ``kv`` row in namespace ``workers`` that expires ``ttl`` seconds after its last refresh,
        refreshed every ``ttl / 3``; removed when the worker ends)."""
        await presence.run_announced(self, worker, kind=kind, ttl=ttl)

    async def live_workers(self) -> list[dict[str, Any]]:
        """The workers started through ``run_worker`` (any process, any machine) that are alive."""
        return await presence.live_workers(self.store)

    async def queue_status(self, account_id: str | None = None) -> dict[str, Any]:
        """Live workers (slots, tasks in hand, last heartbeat), the queue per service and the
        oldest task waiting for a worker (its run id only when it is ``account_id``'s, or for
        everyone with None)."""
        now = time.time()
        queue: dict[str, Any] = await self.store.read(stats_q.queue, now)
        workers = await self.live_workers()
        held = queue.pop("heldBy")
        for worker in workers:
            worker["tasksHeld"] = held.get(worker["workerId"], 0)
        oldest = queue["oldestWaiting"]
        if oldest is not None and oldest["runId"] and account_id is not None:
            owner = await self.store.read(lambda tx: runs_q.get(tx, oldest["runId"]))
            if owner is None or owner.master_account_id != account_id:
                oldest["runId"] = None
        return {
            "checkedAt": iso(now), "workers": workers, "slots": sum(int(w.get("slots") or 0) for w in workers),
            "waitingReason": presence.waiting_reason(workers) if queue["queuedRuns"] or oldest else None,
            **queue,
        }

    async def prune(self, older_than: float, *, dry_run: bool = False, batch: int = 100) -> dict[str, Any]:
        """Remove the runs that finished more than ``older_than`` seconds ago and the artifacts
        nothing refers to any more (``toolweave.retention``); with ``dry_run`` only count them.
        What went (or would go), as ``PruneReport.as_dict``."""
        from toolweave.retention import Pruner

        report = await Pruner(self.store, self.artifacts, batch_runs=batch).prune(older_than, dry_run=dry_run)
        return report.as_dict()

    def db_revision(self) -> str | None:
        """The store's current schema revision (Alembic)."""
        from toolweave.store.migrate import current

        return current(self.store.engine)

    async def work_stats(self, buckets: tuple[float, ...]) -> dict[str, Any]:
        """Finished steps by status as cumulative duration buckets (seconds) with sum and count,
        and failed or timed-out generations by service (for /metrics; computed in the database, so
        every worker's work is counted)."""
        result: dict[str, Any] = await self.store.read(stats_q.work, buckets)
        return result
