"""Wiring: one ``App`` built from settings and passed explicitly (no global singletons).

Front ends (CLI, HTTP API, Telegram) talk to this facade only: ``submit``, ``get_run``,
``list_runs``, ``cancel``, ``retry``, ``events``/``watch``, ``handle_webhook``, accounts and keys,
artifacts, and the definitions in the registry. The SQL it runs is in ``store/`` (one module per
entity; ``store/kv.py``, ``store/stats.py``), the records front ends see in ``run_views.py``, what
services get from the engine (``EngineHost``, media inputs) in ``host.py`` and worker presence in
``presence.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from toolweave import admission, presence
from toolweave.artifacts import ArtifactStore, decode_data_uri, media_problem
from toolweave.engine.core import Conflict, Engine, NotFound, SubmitRequest, tool_job
from toolweave.engine.evaluate import Budgets
from toolweave.engine.replay import BadRequest
from toolweave.engine.worker import Worker
from toolweave.host import EngineHost, MediaError, media_path, media_signature
from toolweave.inputs import FieldProblem, InputError, Upload, drawn_seeds, field_name, prepare_inputs
from toolweave.model.definitions import JobDefinition, ToolDefinition, Visibility
from toolweave.model.records import ArtifactRef, RunUpdate
from toolweave.model.status import RunStatus
from toolweave.notify.dispatcher import Channel, Notifier
from toolweave.presence import WORKER_TTL_SECONDS
from toolweave.registry import Problem, Registry, load_definitions
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
from toolweave.services.base import Service, WebhookRejected
from toolweave.settings import Settings
from toolweave.store import accounts as accounts_q
from toolweave.store import definitions as registered_q
from toolweave.store import generations as gens_q
from toolweave.store import kv as kv_q
from toolweave.store import runs as runs_q
from toolweave.store import stats as stats_q
from toolweave.store.db import Store
from toolweave.store.ids import new_id
from toolweave.watching import EventHub

log = logging.getLogger("toolweave")

__all__ = ["App", "BadRequest", "Conflict", "EngineHost", "InputError", "MediaError", "NotFound", "UnknownDefinition"]


class UnknownDefinition(LookupError):
    """No tool or job has that id."""


class InvalidDefinition(UnknownDefinition):
    """A definition file declares that id, but the definition was refused: ``problems`` say why."""

    def __init__(self, message: str, problems: list[Problem]) -> None:
        super().__init__(message)
        self.problems = problems


@dataclass
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None


SUBMIT_CHUNK = 500
"""Runs per transaction in a bulk submission (``App.submit_many``)."""


@dataclass
class Submitted:
    """One row of a bulk submission: its run (``created`` False when its idempotency key named a
    run already), or the error that kept it from starting."""

    index: int
    run_id: str | None = None
    created: bool = False
    error: Exception | None = None


class App:
    def __init__(self, settings: Settings, *, store: Store | None = None, migrate: bool = True) -> None:
        self.settings = settings
        settings.home.mkdir(parents=True, exist_ok=True)
        self.store = store or Store(settings.db_url, pool_size=max(4, settings.worker_slots + 2))
        if migrate:
            self.store.upgrade()
        self.artifacts = ArtifactStore(settings.artifacts_dir)
        self.http = httpx.AsyncClient(timeout=settings.http_timeout_seconds)
        self.evaluator = EvaluationPool(settings.evaluation_processes)
        """The evaluator processes this process's workers evaluate conditions and templates in
        (started when first needed)."""
        self.engine = Engine(rates=settings.machine_rates, secret=self._secret(), lease_seconds=settings.lease_seconds)
        self.host = EngineHost(self)
        self.event_hub = EventHub(self.store)
        self.services: dict[str, Service] = {}
        self.registry = Registry()
        self.notifier = Notifier(self.store, {})
        from toolweave.notify.callback import CallbackChannel

        signing = settings.callback_signing_secret.encode() if settings.callback_signing_secret else self._secret()
        self.add_channel(CallbackChannel(self.http, signing, allow_private=settings.callback_allow_private_urls))
        self.definition_problems: list[Problem] = []
        self._registered_seq = 0
        """The last registration (``registered_jobs.seq``) this process has taken in."""
        self._build_services()
        self.reload_definitions()
        if settings.telegram_token:
            from toolweave.telegram.channel import TelegramChannel, telegram_notification_rule

            self.add_channel(TelegramChannel(self))
            self.add_notification_rule(telegram_notification_rule)

    # --- set-up --------------------------------------------------------------------------------

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

    def reload_definitions(self) -> list[Problem]:
        from toolweave.services.builtin import builtin_tool_definitions

        registry = Registry(service_check=self.catalog.check_tool)
        registry.add_tools(builtin_tool_definitions(self.settings.test_tools))
        paths = list(self.settings.definitions)
        problems = registry.load(paths) if paths else []
        self.registry = registry
        self.definition_problems = problems
        self._registered_seq = 0
        self._import_registered_files()
        self._apply_registered(self.store.read_sync(registered_q.since, 0))
        return self.definition_problems

    def _import_registered_files(self) -> None:
        """Jobs registered through the API before they lived in the store were files under
        ``$TOOLWEAVE_HOME/registered``: they are brought into the store (once; the same id and
        version again is a no-op)."""
        folder = self.settings.home / "registered"
        if not folder.is_dir():
            return
        loaded, problems = load_definitions([folder])
        self.definition_problems.extend(problems)
        for defn in loaded:
            if isinstance(defn, JobDefinition):
                self.store.run_sync(registered_q.register, defn.job_id, defn.version, defn.dump(), time.time())

    def _apply_registered(self, rows: list[Any]) -> None:
        """Register jobs read from the store, in the order they were registered."""
        for row in rows:
            self._registered_seq = max(self._registered_seq, int(row.seq))
            try:
                defn = JobDefinition.model_validate(row.body)
            except ValueError as exc:
                self.definition_problems.append(Problem("store", f"registered job {row.job_id}", str(exc)))
                continue
            problems = self.registry.register(defn, file="store")
            if problems:
                log.warning("registered job %s version %s is refused now: %s", row.job_id, row.version,
                            "; ".join(str(p) for p in problems))
                self.definition_problems.extend(problems)

    async def sync_definitions(self) -> None:
        """Take in the jobs other processes registered since this one last looked (one indexed
        read; the front ends call it before they answer with definitions)."""
        rows = await self.store.read(registered_q.since, self._registered_seq)
        if rows:
            self._apply_registered(rows)

    async def aclose(self) -> None:
        for service in self.services.values():
            try:
                await service.close()
            except Exception:
                log.exception("closing service %s failed", service.name)
        await self.http.aclose()
        self.evaluator.close()
        self.store.close()

    @property
    def budgets(self) -> Budgets:
        return Budgets(self.settings.condition_budget_ms / 1000, self.settings.template_budget_ms / 1000)

    def make_worker(self, slots: int | None = None, **options: Any) -> Worker:
        options.setdefault("sweep_seconds", self.settings.sweep_seconds)
        options.setdefault("evaluator", self.evaluator)
        options.setdefault("budgets", self.budgets)
        return Worker(
            self.store,
            self.engine,
            self.services,
            slots=slots or self.settings.worker_slots,
            webhook_url=self.webhook_url,
            deliver=self.notifier.deliver,
            **options,
        )

    # --- definitions ---------------------------------------------------------------------------

    def check_definition(self, raw: Any) -> tuple[JobDefinition | None, list[Problem]]:
        """Validate a posted job definition (a mapping) against the registry without registering it."""
        from toolweave.registry.loader import _build
        from toolweave.registry.validate import validate_job

        problems: list[Problem] = []
        if isinstance(raw, dict) and ("toolId" in raw or "tool_id" in raw):
            return None, [Problem(None, "toolId", "only jobs can be registered here; tools come from definition files")]
        defn = _build(raw, "", "", problems)
        if defn is None or problems:
            return None, problems
        assert isinstance(defn, JobDefinition)
        defn._source = None
        existing = self.registry.get_job(defn.job_id)
        if existing is not None and existing.version == defn.version and existing.dump() != defn.dump():
            return defn, [Problem(None, "version", f"job {defn.job_id!r} version {defn.version!r} is already "
                                  "registered with different content; change its version")]
        return defn, validate_job(defn, self.registry, file="")

    async def register_job(self, raw: Any) -> tuple[JobDefinition | None, list[Problem]]:
        """Validate a job definition, keep it in the store (every process then knows it) and
        register it here."""
        await self.sync_definitions()
        # parsing its conditions and templates is bounded (a CPU budget each) and runs off the loop
        defn, problems = await asyncio.to_thread(self.check_definition, raw)
        if defn is None or problems:
            return defn, problems
        row = await self.store.tx(registered_q.register, defn.job_id, defn.version, defn.dump(), time.time())
        if row.body != defn.dump():  # another process registered this version first, differently
            return defn, [Problem(None, "version", f"job {defn.job_id!r} version {defn.version!r} is already "
                                  "registered with different content; change its version")]
        await self.sync_definitions()
        return defn, []

    def list_services(self) -> list[dict[str, Any]]:
        """Every service known here: name, kind, where it comes from, whether it is configured (and
        why not), and how many registered tools name it."""
        counts: dict[str, int] = {}
        for tool in self.registry.tools():
            counts[tool.service] = counts.get(tool.service, 0) + 1
        return [dict(row, tools=counts.get(row["name"], 0)) for row in self.catalog.rows()]

    def list_tools(self, *, include_hidden: bool = False) -> list[ToolDefinition]:
        tools = self.registry.tools()
        return [t for t in tools if include_hidden or t.visibility is Visibility.PUBLIC]

    def list_jobs(self, *, include_hidden: bool = False) -> list[JobDefinition]:
        jobs = self.registry.jobs()
        return [j for j in jobs if include_hidden or j.visibility is Visibility.PUBLIC]

    def definition(self, target_id: str, version: str | None = None) -> ToolDefinition | JobDefinition:
        """The tool or job with this id: the given version, or the latest. ``UnknownDefinition``
        names the registered versions when the id is known but the version is not."""
        if self.registry.get_job(target_id) is None and self.registry.get_tool(target_id) is None:
            self._refused(target_id)
            raise UnknownDefinition(f"no tool or job named {target_id!r}{self._did_you_mean(target_id)}")
        if version is None:
            return self.registry.find(target_id)
        try:
            found: ToolDefinition | JobDefinition = (
                self.registry.job(target_id, version) if self.registry.get_job(target_id) else self.registry.tool(target_id, version)
            )
        except KeyError as exc:
            raise UnknownDefinition(str(exc.args[0])) from None
        return found

    def _did_you_mean(self, target_id: str) -> str:
        import difflib

        known = [t.tool_id for t in self.registry.tools()] + [j.job_id for j in self.registry.jobs()]
        close = difflib.get_close_matches(target_id, known, n=1, cutoff=0.75)
        return f"; did you mean {close[0]!r}?" if close else ""

    def _refused(self, target_id: str) -> None:
        """Raise ``InvalidDefinition`` when a loaded file declares ``target_id`` but was refused."""
        from toolweave.registry.loader import declared_ids

        files = sorted({p.file for p in self.definition_problems if p.file})
        for file in files:
            if target_id in declared_ids(Path(file)):
                problems = [p for p in self.definition_problems if p.file == file]
                raise InvalidDefinition(
                    f"{target_id!r} is defined in {file} but cannot be used: "
                    f"{len(problems)} problem{'s' if len(problems) != 1 else ''} (see `toolweave validate {file}`)",
                    problems,
                )

    def versions(self, target_id: str) -> list[ToolDefinition | JobDefinition]:
        """Every registered version of a tool or job, oldest first (``UnknownDefinition`` if none)."""
        found = [self.definition(target_id, v) for v in self.registry.versions(target_id)]
        if not found:
            raise UnknownDefinition(f"no tool or job named {target_id!r}")
        return found

    def job_for(self, target_id: str, version: str | None = None) -> JobDefinition:
        definition = self.definition(target_id, version)
        return tool_job(definition) if isinstance(definition, ToolDefinition) else definition

    # --- runs ----------------------------------------------------------------------------------

    async def submit(self, target_id: str, inputs: Mapping[str, Any] | None = None, **options: Any) -> str:
        """Validate and coerce the inputs, then create the run; returns its id (``submit_run``
        takes the same options)."""
        run_id, _created = await self.submit_run(target_id, inputs, **options)
        return run_id

    async def submit_run(
        self,
        target_id: str,
        inputs: Mapping[str, Any] | None = None,
        *,
        account_id: str,
        origin: dict[str, Any] | None = None,
        session_id: str | None = None,
        initiating_event_id: str | None = None,
        idempotency_key: str | None = None,
        callback_url: str | None = None,
        priority: int = 0,
        coerce_text: bool = True,
        allow_local_paths: bool = False,
        version: str | None = None,
    ) -> tuple[str, bool]:
        """Validate and coerce the inputs, then create the run. Returns (run id, created): False
        when ``idempotency_key`` was used before by the account (also by a request running at
        the same time), and the id is of the run that key made.

        Every check comes before anything is stored (``toolweave.admission``): values that cannot
        be stored, URLs the server may not reach, artifacts the account does not hold (anywhere in
        the inputs). Only then are uploads, ``data:`` URIs and local files stored as artifacts of
        the account. Raises ``UnknownDefinition``, ``InputError`` (every bad field at once) or
        ``MediaError``.
        """
        await self.sync_definitions()
        job = self.job_for(target_id, version)
        request = await self._request(
            job, inputs, account_id, coerce_text=coerce_text, allow_local_paths=allow_local_paths, origin=origin,
            session_id=session_id, initiating_event_id=initiating_event_id, idempotency_key=idempotency_key,
            callback_url=callback_url, priority=priority,
        )
        created: tuple[str, bool] = await self.store.tx(self.engine.submit_tx, request, time.time())
        return created

    async def submit_many(
        self,
        target_id: str,
        rows: Sequence[Mapping[str, Any]],
        *,
        account_id: str,
        idempotency_keys: Sequence[str | None] | None = None,
        origin: dict[str, Any] | None = None,
        callback_url: str | None = None,
        priority: int = 0,
        coerce_text: bool = True,
        version: str | None = None,
        chunk: int = SUBMIT_CHUNK,
        allow_local_paths: bool = False,
    ) -> list[Submitted]:
        """Submit one run of ``target_id`` per row of inputs (bulk submission), ``chunk`` runs per
        transaction. Returns one ``Submitted`` per row, in order: its run, or the error that kept
        it from starting (a bad row does not stop the others). ``idempotency_keys`` gives each row
        its own key (a row whose key names a run already gets that run, ``created`` False).

        Raises ``UnknownDefinition`` when the target itself is unknown."""
        job = self.job_for(target_id, version)
        keys = list(idempotency_keys) if idempotency_keys is not None else [None] * len(rows)
        if len(keys) != len(rows):
            raise ValueError(f"{len(keys)} idempotency keys for {len(rows)} rows")
        results = [Submitted(index) for index in range(len(rows))]
        pending: list[tuple[int, SubmitRequest]] = []
        looked_up = admission.HostLookups()  # a host name is looked up once for the whole batch
        for index, (inputs, key) in enumerate(zip(rows, keys, strict=True)):
            try:
                request = await self._request(
                    job, inputs, account_id, coerce_text=coerce_text, allow_local_paths=allow_local_paths, origin=origin,
                    idempotency_key=key, callback_url=callback_url, priority=priority, looked_up=looked_up,
                )
            except (InputError, MediaError) as exc:
                results[index].error = exc
                continue
            pending.append((index, request))
        for first in range(0, len(pending), max(1, chunk)):
            part = pending[first:first + max(1, chunk)]
            requests = [request for _, request in part]
            made = await self.store.tx(self.engine.submit_many_tx, requests, time.time())
            for (index, _), (run_id, created) in zip(part, made, strict=True):
                results[index].run_id, results[index].created = run_id, created
        return results

    async def _request(
        self, job: JobDefinition, inputs: Mapping[str, Any] | None, account_id: str, *, coerce_text: bool,
        allow_local_paths: bool, origin: dict[str, Any] | None = None, session_id: str | None = None,
        initiating_event_id: str | None = None, idempotency_key: str | None = None, callback_url: str | None = None,
        priority: int = 0, looked_up: admission.HostLookups | None = None,
    ) -> SubmitRequest:
        """A run's request: its inputs admitted (``_admit``: checked, coerced, media stored as
        artifacts; ``InputError``, ``MediaError``), and every definition it may run."""
        prepared = await self._admit(
            job, dict(inputs or {}), account_id, coerce_text=coerce_text, allow_local_paths=allow_local_paths,
            callback_url=callback_url, idempotency_key=idempotency_key, looked_up=looked_up,
        )
        tools, nested = self._closure(job)
        return SubmitRequest(
            job=job,
            tools=tools,
            nested_jobs=nested,
            inputs=prepared,
            random_inputs=drawn_seeds(job.input_schema, inputs),
            account_id=account_id,
            origin=origin or {},
            session_id=session_id,
            initiating_event_id=initiating_event_id,
            idempotency_key=idempotency_key,
            callback_url=callback_url,
            priority=priority,
        )

    async def _admit(
        self,
        job: JobDefinition,
        raw: dict[str, Any],
        account_id: str,
        *,
        coerce_text: bool,
        allow_local_paths: bool,
        callback_url: str | None = None,
        idempotency_key: str | None = None,
        looked_up: admission.HostLookups | None = None,
    ) -> dict[str, Any]:
        """The inputs of a new run (a submit or a fork), checked (``toolweave.admission``), then
        with uploads, ``data:`` URIs and local files stored as artifacts of the account."""
        depth = self.settings.input_max_depth
        admission.check_storable(raw, depth, callback_url=callback_url, idempotency_key=idempotency_key)
        prepared = prepare_inputs(job.input_schema, raw, coerce_text=coerce_text, allow_paths=allow_local_paths)
        admission.check_storable(prepared, depth)  # text that prepare_inputs read as JSON
        await admission.check_urls(job, prepared, callback_url, self.settings, looked_up)
        prepared = await admission.resolve_artifacts(prepared, account_id, self.store, self.artifacts)
        return await self._store_media(job, prepared, account_id)

    def _closure(self, job: JobDefinition) -> tuple[dict[str, ToolDefinition], dict[str, JobDefinition]]:
        """Every tool and nested job a job may run, from the registry (snapshotted with the run)."""
        tools: dict[str, ToolDefinition] = {}
        nested: dict[str, JobDefinition] = {}
        pending = [job]
        while pending:
            current = pending.pop()
            for step in current.steps:
                handling = current.error_handling_for(step)
                for tool_id in (step.tool_id, handling.fallback_tool_id):
                    if tool_id and tool_id not in tools:
                        tools[tool_id] = self.registry.tool(tool_id)
                if step.job_id and step.job_id not in nested:
                    nested[step.job_id] = self.registry.job(step.job_id)
                    pending.append(nested[step.job_id])
        return tools, nested

    async def _store_media(self, job: JobDefinition, inputs: dict[str, Any], account_id: str) -> dict[str, Any]:
        """Refuse media that is not of its input's type (a text file for an image input), then
        store uploads, ``data:`` URIs and local files as artifacts of the account — none unless
        every media input passes (the last step of admission). Artifact values were checked and
        written out by ``admission.resolve_artifacts``; URLs are fetched at dispatch."""
        out = dict(inputs)
        problems: list[FieldProblem] = []
        pending: list[tuple[str, bytes, str | None, str | None]] = []
        for param in job.input_schema:
            if not param.type.is_media or param.name not in inputs:
                continue
            name, value = param.name, inputs[param.name]
            if ArtifactRef.is_ref(value):
                ref = ArtifactRef.model_validate(value)
                head = await asyncio.to_thread(self.artifacts.head, ref, 65536)
                problem = media_problem(param.type.value, head, width=ref.width)
                if problem:
                    problems.append(FieldProblem(name, f"the artifact {problem}"))
                continue
            if isinstance(value, Upload):
                data, mime, filename = value.data, value.mime_type, value.filename
                label = filename or "the uploaded file"
            else:
                text = str(value)
                if text.startswith(("http://", "https://")):
                    continue
                if text.startswith("data:"):
                    try:
                        data, mime = decode_data_uri(text, self.settings.media_max_bytes)
                    except ValueError as exc:  # its message follows the input's name
                        problems.append(FieldProblem(name, str(exc)))
                        continue
                    filename, label = None, "the data: URI"
                else:
                    data, mime, filename = await asyncio.to_thread(_read_local, text), None, Path(text).name
                    label = filename
            problem = media_problem(param.type.value, data)
            if problem:
                problems.append(FieldProblem(name, f"{label} {problem}"))
                continue
            pending.append((name, data, filename, mime))
        if problems:
            raise InputError(problems)
        for name, data, filename, mime in pending:
            out[name] = await self.put_media(data, account_id, filename=filename, mime_type=mime)
        return out

    async def put_media(
        self, data: bytes, account_id: str, *, filename: str | None = None, mime_type: str | None = None
    ) -> dict[str, Any]:
        """Store uploaded bytes as an artifact owned by ``account_id``; returns the artifact value."""
        ref = await asyncio.to_thread(self.artifacts.put_bytes, data, mime_type, filename)
        value = ref.as_value()
        await self.store.tx(accounts_q.own_upload, account_id, value, time.time())
        return value

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
        detail["statusDetail"] = None
        if detail["status"] == RunStatus.QUEUED.value:
            detail["statusDetail"] = presence.waiting_reason(await self.live_workers())
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
        await self.store.tx(self.engine.retry_tx, run_id, account_id, time.time())

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
        new_id: str = await self.store.tx(
            self.engine.fork_tx, run_id, account_id, from_step, inputs_now, origin or {}, time.time(),
            (sorted(given), drawn),
        )
        return new_id

    async def events(self, run_id: str, account_id: str | None = None, after: int = 0) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await self.store.read(run_events, run_id, account_id, after)
        return found

    async def watch(self, run_id: str, account_id: str | None = None, after: int = 0) -> AsyncIterator[dict[str, Any]]:
        """Events of a run as they are appended, from ``after``; ends after the run's final event.
        NotFound (at the first step) for an unknown run or another account's. Every watcher of
        this process shares one reader of the store (``watching.EventHub``)."""
        backlog = await self.events(run_id, account_id, after)
        async for item in self.event_hub.follow(run_id, after, backlog):
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

    # --- webhooks ------------------------------------------------------------------------------

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
        _d, applied = await self.store.tx(
            self.engine.apply_update_tx, gen.run_id, generation_id, update, time.time(), None, None, (service_name, key)
        )
        return bool(applied)

    # --- accounts, keys, artifacts, state ------------------------------------------------------

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
        count: int = await self.store.tx(accounts_q.revoke_key, key_id_or_prefix, time.time())
        return count

    async def artifact(self, sha256: str, account_id: str | None) -> tuple[Path, ArtifactRef]:
        """An artifact's file and metadata as ``account_id`` knows it (its file name, the type it
        gave); NotFound unless the account holds it. ``None`` (the admin): any artifact, with the
        metadata its content gives (no file name)."""
        ref: ArtifactRef | None = None
        if account_id is not None:
            owned = await self.store.read(accounts_q.artifact_owned, sha256, account_id)
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

    async def kv_get(self, namespace: str, key: str) -> Any:
        return await self.store.read(kv_q.get, namespace, key, time.time())

    async def kv_set(self, namespace: str, key: str, value: Any, ttl: float | None = None) -> None:
        now = time.time()
        await self.store.tx(kv_q.put, namespace, key, value, now, now + ttl if ttl else None)

    async def kv_items(self, namespace: str) -> list[tuple[str, Any]]:
        """Every unexpired (key, value) of a namespace, by key."""
        items: list[tuple[str, Any]] = await self.store.read(kv_q.items, namespace, time.time())
        return items

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




def _read_local(text: str) -> bytes:
    return Path(text).expanduser().read_bytes()
