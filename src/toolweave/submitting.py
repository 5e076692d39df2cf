"""How an ``App`` makes runs: a submit or a bulk submit, each run's inputs admitted
(``admission.py``: checked before anything is stored; then media stored as artifacts of the
account) and every definition it may run gathered, then one ``Engine.submit_tx`` (or
``submit_many_tx``) transaction.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from toolweave import admission, presence
from toolweave.accounting import Refused
from toolweave.accounting.desk import CreditDesk
from toolweave.artifacts import ArtifactStore, decode_data_uri, media_problem
from toolweave.definitions import Definitions
from toolweave.engine.core import Engine
from toolweave.engine.submission import PlannedRun
from toolweave.engine.work import SubmitRequest
from toolweave.host import MediaError
from toolweave.inputs import FieldProblem, InputError, Upload, drawn_seeds, prepare_inputs
from toolweave.model.definitions import JobDefinition, ToolDefinition
from toolweave.model.records import ArtifactRef
from toolweave.notify.outbox import Notice, Outbox
from toolweave.run_views import run_details
from toolweave.store import accounts as accounts_q
from toolweave.store import tasks as tasks_q
from toolweave.store.batching import GroupCommit
from toolweave.store.db import Tx

SUBMIT_CHUNK = 500
"""Runs per transaction in a bulk submission (``App.submit_many``)."""
SUBMIT_TRANSACTIONS = 4
"""Transactions storing single submits at the same time (those arriving meanwhile wait and go
together in the next one)."""


class KeyRevoked(Exception):
    """The API key a submit came with was revoked (or removed) before its run was stored: nothing
    was stored."""

    def __init__(self) -> None:
        super().__init__("the API key is unknown or revoked")


@dataclass
class _Submit:
    """A single submit queued for the group commit: its request, the API key to check in the
    transaction (None: checked already), whether to read the run back for the answer, and the
    notifications to queue with the run (``notices``, asked for at ``asked_at``)."""

    request: SubmitRequest
    key_id: str | None
    show: bool
    notices: Callable[[str], Sequence[Notice]] | None = None
    asked_at: float = 0.0
    queued: list[tasks_q.Task] = field(default_factory=list)
    """The notify tasks of ``notices``, once the transaction that queued them committed."""


@dataclass
class Submitted:
    """One row of a bulk submission: its run (``created`` False when its idempotency key named a
    run already), or the error that kept it from starting."""

    index: int
    run_id: str | None = None
    created: bool = False
    error: Exception | None = None


class Submitting(Definitions):
    """Submitting runs (a part of ``App``)."""

    engine: Engine
    artifacts: ArtifactStore
    credits: CreditDesk
    outbox: Outbox
    _submits: GroupCommit[_Submit, tuple[str, bool, dict[str, Any] | None] | Exception] | None = None

    @property
    def submit_transactions(self) -> int:
        """Transactions that stored single submits so far (fewer than the submits when they arrive
        together)."""
        return self._submits.transactions if self._submits is not None else 0

    async def submit(self, target_id: str, inputs: Mapping[str, Any] | None = None, **options: Any) -> str:
        """Validate and coerce the inputs, then create the run; returns its id (``submit_run``
        takes the same options)."""
        run_id, _created = await self.submit_run(target_id, inputs, **options)
        return run_id

    async def submit_run(self, target_id: str, inputs: Mapping[str, Any] | None = None, **options: Any) -> tuple[str, bool]:
        """Validate and coerce the inputs, then create the run (``_submit_one`` says how, and
        takes the options). Returns (run id, created): False when ``idempotency_key`` was used
        before by the account (also by a request running at the same time), and the id is of the
        run that key made."""
        run_id, created, _detail = await self._submit_one(target_id, inputs, **options)
        return run_id, created

    async def submit_shown(
        self, target_id: str, inputs: Mapping[str, Any] | None = None, *, key_id: str | None = None, **options: Any,
    ) -> tuple[dict[str, Any], bool]:
        """``submit_run``, returning the run as ``get_run`` shows it (read in the transaction that
        stored it) and whether it was made now. ``key_id``: the API key the request came with,
        checked in that transaction (``KeyRevoked``: nothing stored), for a caller that took the
        key from ``Accounts.remembered_key``."""
        _run_id, created, detail = await self._submit_one(target_id, inputs, key_id=key_id, show=True, **options)
        assert detail is not None
        return detail, created

    async def _submit_one(
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
        cost_ceiling: Decimal | None = None,
        key_id: str | None = None,
        show: bool = False,
        notices: Callable[[str], Sequence[Notice]] | None = None,
    ) -> tuple[str, bool, dict[str, Any] | None]:
        """Validate and coerce the inputs, then create the run. Returns (run id, created): False
        when ``idempotency_key`` was used before by the account (also by a request running at
        the same time), and the id is of the run that key made.

        Every check comes before anything is stored (``toolweave.admission``): values that cannot
        be stored, URLs the server may not reach, artifacts the account does not hold (anywhere in
        the inputs). Only then are uploads, ``data:`` URIs and local files stored as artifacts of
        the account. The run's estimate is held from the account's credits when it pays from them
        (``accounting``). Raises ``UnknownDefinition``, ``InputError`` (every bad field at once),
        ``MediaError`` or ``Refused`` (``InsufficientCredits``, ``OverLimit``: nothing is stored).
        ``cost_ceiling``: the most the run may cost (a step that would pass it is not started).
        ``key_id`` and ``show``: see ``submit_shown`` (the run read back is the third value).
        ``notices(run_id)``: notifications a front end queues about the run (the Telegram status
        message), written in the transaction that stores it — also when the idempotency key names
        a run already (give them a ``dedupe_key``) — and counted as queued before it, so nothing
        the run queues (its result, even from a run that ends in that transaction) goes ahead of
        them in their chat; this process delivers them once it committed.
        """
        await self.sync_definitions()
        job = self.job_for(target_id, version)
        request = await self._request(
            job, inputs, account_id, coerce_text=coerce_text, allow_local_paths=allow_local_paths, origin=origin,
            session_id=session_id, initiating_event_id=initiating_event_id, idempotency_key=idempotency_key,
            callback_url=callback_url, priority=priority, cost_ceiling=cost_ceiling,
        )
        return await self._submit_together(_Submit(request, key_id, show, notices, time.time()))

    async def _submit_together(self, item: _Submit) -> tuple[str, bool, dict[str, Any] | None]:
        if self._submits is None:
            self._submits = GroupCommit(self.store, self._submit_tx, concurrency=SUBMIT_TRANSACTIONS,
                                        prepare=self._plan_submits)
        found = await self._submits(item)
        if item.queued:
            self.outbox.deliver_soon(item.queued)
        if isinstance(found, Exception):
            raise found
        return found

    def _queue_notices(self, tx: Tx, item: _Submit, run_id: str, now: float) -> None:
        """Queue ``item``'s notices about ``run_id`` in the run's transaction, as of when the submit
        was asked for (before ``now``, which anything the run queues in it is stamped with)."""
        assert item.notices is not None
        when = min(item.asked_at, math.nextafter(now, 0.0))
        tasks = [task for notice in item.notices(run_id)
                 if (task := self.outbox.queue_tx(tx, replace(notice, created_at=when), now)) is not None]
        if tasks:
            tx.after_commit(functools.partial(item.queued.extend, tasks))

    def _plan_submits(self, items: Sequence[_Submit]) -> tuple[float, list[PlannedRun | None]]:
        """The time of a group commit's transaction and its runs' first plans, made before it
        (``Engine.plan_submits``): the write lock is not held while the planner runs."""
        now = time.time()
        return now, self.engine.plan_submits([item.request for item in items], now)

    def _submit_tx(
        self, tx: Tx, items: Sequence[_Submit], prepared: tuple[float, list[PlannedRun | None]] | None = None,
    ) -> list[tuple[str, bool, dict[str, Any] | None] | Exception]:
        """Submits arriving together (a server's concurrent requests) stored in one transaction, as a
        bulk submission stores its rows (group commit); each is gated as if it came alone after
        the ones before it. A submit whose API key is revoked by then gets ``KeyRevoked``; one
        that asks to be shown gets its run read back in the same transaction. ``prepared``: the
        time and the first plans of ``_plan_submits`` (else planned here, now)."""
        now, planned = prepared if prepared is not None else self._plan_submits(items)
        results: list[tuple[str, bool, dict[str, Any] | None] | Exception] = [KeyRevoked()] * len(items)
        keys: dict[str, bool] = {}
        admitted = []
        for index, item in enumerate(items):
            if item.key_id is not None and item.key_id not in keys:
                keys[item.key_id] = accounts_q.key_in_use(tx, item.key_id, now)
            if item.key_id is None or keys[item.key_id]:
                admitted.append(index)
        made = self.engine.submit_many_tx(
            tx, [items[i].request for i in admitted], now, [planned[i] for i in admitted]) if admitted else []
        if any(items[i].show for i in admitted):
            tx.flush_deferred()  # rows queued for the commit, read back below
        workers: list[list[dict[str, Any]]] = []

        def live() -> list[dict[str, Any]]:  # read once for the batch, when a run is queued
            if not workers:
                workers.append(presence.live_workers_tx(tx, now))
            return workers[0]

        shown = [(index, found[0]) for index, found in zip(admitted, made, strict=True)
                 if not isinstance(found, Refused) and items[index].show]
        details = dict(zip((index for index, _ in shown),
                           run_details(tx, [(run_id, items[index].request.account_id) for index, run_id in shown]),
                           strict=True)) if shown else {}
        for index, found in zip(admitted, made, strict=True):
            if isinstance(found, Refused):
                results[index] = found
                continue
            if items[index].notices is not None:
                self._queue_notices(tx, items[index], found[0], now)
            detail = details.get(index)
            if isinstance(detail, Exception):  # not there, or not the account's: cannot be, as written
                results[index] = detail
                continue
            if detail is not None:
                detail["statusDetail"] = presence.status_detail(detail, live)
            results[index] = (found[0], found[1], detail)
        return results

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
        cost_ceiling: Decimal | None = None,
    ) -> list[Submitted]:
        """Submit one run of ``target_id`` per row of inputs (bulk submission), ``chunk`` runs per
        transaction. Returns one ``Submitted`` per row, in order: its run, or the error that kept
        it from starting (a bad row does not stop the others; a row the account's limits or
        credits refuse has a ``Refused`` error). ``idempotency_keys`` gives each row its own key
        (a row whose key names a run already gets that run, ``created`` False).

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
                    cost_ceiling=cost_ceiling,
                )
            except (InputError, MediaError) as exc:
                results[index].error = exc
                continue
            pending.append((index, request))
        for first in range(0, len(pending), max(1, chunk)):
            part = pending[first:first + max(1, chunk)]
            requests = [request for _, request in part]
            now = time.time()
            # planned before the transaction: the write lock is held for the writes and what they
            # depend on, not the planner (and another process takes the lock between chunks)
            planned = self.engine.plan_submits(requests, now, encoded=self.store.dialect == "sqlite")
            made = await self.store.tx(self.engine.submit_many_tx, requests, now, planned)
            for (index, _), found in zip(part, made, strict=True):
                if isinstance(found, Refused):
                    results[index].error = found
                else:
                    results[index].run_id, results[index].created = found
        return results

    async def _request(
        self, job: JobDefinition, inputs: Mapping[str, Any] | None, account_id: str, *, coerce_text: bool,
        allow_local_paths: bool, origin: dict[str, Any] | None = None, session_id: str | None = None,
        initiating_event_id: str | None = None, idempotency_key: str | None = None, callback_url: str | None = None,
        priority: int = 0, looked_up: admission.HostLookups | None = None, cost_ceiling: Decimal | None = None,
    ) -> SubmitRequest:
        """A run's request: its inputs admitted (``_admit``: checked, coerced, media stored as
        artifacts; ``InputError``, ``MediaError``), every definition it may run, and its estimate."""
        prepared = await self._admit(
            job, dict(inputs or {}), account_id, coerce_text=coerce_text, allow_local_paths=allow_local_paths,
            callback_url=callback_url, idempotency_key=idempotency_key, looked_up=looked_up,
        )
        tools, nested = self._closure(job)
        estimate = await self.credits.estimate(job, tools, nested, prepared)
        budget = None
        if cost_ceiling is not None:
            budget = {"ceiling": str(cost_ceiling), "steps": estimate.per_step()}
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
            estimate=min(estimate.total, cost_ceiling) if cost_ceiling is not None else estimate.total,
            estimate_unknown=estimate.unknown,
            budget=budget,
        )

    async def estimate(
        self, target_id: str, inputs: Mapping[str, Any] | None = None, *, account_id: str, version: str | None = None,
        strict: bool = True,
    ) -> dict[str, Any]:
        """What a run of ``target_id`` with ``inputs`` would cost (``accounting.estimate``): the
        total, each step and how it was found, what the account has available (None when it does
        not pay from a balance) and whether that covers it. Nothing is stored. ``strict``: bad
        inputs raise ``InputError``; else they are left out (a form being filled in)."""
        await self.sync_definitions()
        job = self.job_for(target_id, version)
        try:
            prepared = prepare_inputs(job.input_schema, dict(inputs or {}), coerce_text=True, allow_paths=False)
        except InputError as exc:
            if strict:
                raise
            bad = {p.field.split(".", 1)[0].split("[", 1)[0] for p in exc.problems}
            prepared = {k: v for k, v in (inputs or {}).items() if k not in bad}
        tools, nested = self._closure(job)
        found = await self.credits.estimate(job, tools, nested, prepared)
        shown = found.as_dict()
        balance = await self.credits.balance(account_id)
        available = Decimal(balance["available"]) if balance["credits"] else None
        shown["available"] = balance["available"] if balance["credits"] else None
        shown["covered"] = available is None or (
            available >= found.total and not (found.unknown and available <= 0))
        shown["confirmAbove"] = balance["limits"]["confirmAbove"]
        return shown

    async def _estimate_again(self, run_id: str, account_id: str | None) -> tuple[Decimal, bool]:
        """(estimate, part of it unknown) of running a run's job again with its inputs (every step
        counted: an upper bound for a retry or a fork)."""
        job, inputs, _owner = await self.store.read(self.engine.run_job_tx, run_id, account_id)
        try:
            tools, nested = self._closure(job)
        except LookupError:  # a tool no longer registered: nothing to price it by
            return Decimal(0), True
        found = await self.credits.estimate(job, tools, nested, inputs)
        return found.total, found.unknown

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
                    filename, mime = Path(text).name, None
                    label = filename
                    try:
                        data = await asyncio.to_thread(_read_local, text, self.settings.media_max_bytes)
                    except (OSError, ValueError) as exc:  # its message follows the file's name
                        problems.append(FieldProblem(name, f"{label} {exc}"))
                        continue
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


def _read_local(text: str, limit: int) -> bytes:
    """A local file's bytes, at most ``limit`` of them: ``ValueError`` with a phrase to follow the
    file's name for a file past the limit (one growing while read included), a pipe or a device
    (never a blocking read), or one that cannot be read."""
    from toolweave.files import read_regular_file

    try:
        return read_regular_file(Path(text).expanduser(), limit)
    except OSError as exc:
        if exc.strerror:
            raise ValueError(f"cannot be read: {exc.strerror}") from None
        raise ValueError(str(exc)) from None
