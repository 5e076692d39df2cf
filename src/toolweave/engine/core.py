"""The engine's transactions: submit, advance, apply an update, cancel, retry.

Every function named ``*_tx`` runs inside one store transaction (``await store.tx(fn, ...)``):
the state change, the tasks that follow from it and its events commit together. The planner
(``plan.decide``) chooses what happens; ``_apply`` writes it, each status change a
compare-and-set from the states allowed before it.

A transaction that starts steps may lease their ``dispatch`` tasks straight to the calling
worker (``Lease``), which runs them at once: a synchronous step's successor starts without a
round trip through the queue.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from hashlib import sha256
from typing import Any

from toolweave.engine import cache, items, plan, replay
from toolweave.engine.actions import StepEvaluation
from toolweave.engine.evaluate import EvaluateWork
from toolweave.model.definitions import (
    CostingModel,
    InputMapping,
    JobDefinition,
    JobOutput,
    RateSource,
    Step,
    ToolDefinition,
)
from toolweave.model.records import ArtifactRef, RunUpdate
from toolweave.model.status import (
    GenerationStatus,
    RunStatus,
    StepStatus,
    TaskKind,
)
from toolweave.services.base import GenerationContext
from toolweave.store import accounts as accounts_q
from toolweave.store import cache as cache_q
from toolweave.store import events as events_q
from toolweave.store import generations as gens_q
from toolweave.store import items as items_q
from toolweave.store import notifications as notes_q
from toolweave.store import runs as runs_q
from toolweave.store import tasks as tasks_q
from toolweave.store.db import Row, Tx
from toolweave.store.ids import new_id

log = logging.getLogger("toolweave.engine")

DEFAULT_POLL_SECONDS = 2.0
DEFAULT_TIMEOUT_SECONDS = 3600.0
UNDER_WAY_AHEAD_SECONDS = 0.001
"""How far ahead of its run's creation a step of a run under way is due: ahead of new runs' first
steps, including those of runs created in the same transaction (a bulk submission)."""
INPUTS_KEPT = 4096


class NotFound(LookupError):
    """No such run (or not this account's): front ends answer 404."""


class Conflict(RuntimeError):
    """The request does not fit the run's state (e.g. retrying a run that is still running)."""


@dataclass
class Lease:
    """Lets a transaction hand up to ``capacity`` new dispatch tasks straight to a worker."""

    owner: str
    capacity: int
    seconds: float
    used: int = 0

    def attempt(self, tx: Tx) -> Lease:
        """This lease for one attempt at a transaction: the store may run a transaction function
        again from the start, so what an attempt uses counts only once it commits."""
        mine = replace(self)
        tx.after_commit(lambda: setattr(self, "used", mine.used))
        return mine


@dataclass
class DispatchWork:
    """A leased dispatch task with everything needed to call the service."""

    task_id: int
    task_attempts: int
    generation_id: str
    run_id: str
    step_id: str
    attempt: int
    account_id: str
    tool: ToolDefinition
    inputs: dict[str, Any]
    deadline_at: float | None
    platform_run_id: str | None = None
    claim_token: str = ""
    """The token of the claim that holds the dispatch task (``tasks.Claim``)."""

    @property
    def claim(self) -> tasks_q.Claim:
        return tasks_q.Claim(self.task_id, self.claim_token)

    def leased(self, task: tasks_q.Task) -> None:
        """The dispatch task made for this work, leased to the worker that runs it."""
        self.task_id, self.task_attempts, self.claim_token = task.task_id, task.attempts, task.token

    @property
    def recovering(self) -> bool:
        """An earlier lease of this task may have reached the backend."""
        return self.task_attempts > 1

    def context(self, webhook_url: str | None, now: float | None = None) -> GenerationContext:
        remaining = (self.deadline_at - (now or time.time())) if self.deadline_at else DEFAULT_TIMEOUT_SECONDS
        return GenerationContext(
            generation_id=self.generation_id,
            run_id=self.run_id,
            step_id=self.step_id,
            attempt=self.attempt,
            account_id=self.account_id,
            tool=self.tool,
            inputs=self.inputs,
            platform_run_id=self.platform_run_id,
            webhook_url=webhook_url,
            timeout_seconds=max(1.0, remaining),
            recovering=self.recovering,
        )


@dataclass(frozen=True)
class Outcome:
    """What a service's ``submit`` came back with, for one dispatch."""

    work: DispatchWork
    platform_run_id: str | None
    update: RunUpdate | None
    requested_at: float
    """When the service was called."""
    answered_at: float
    """When it answered: a generation finished by its submit ends here, not when it is recorded."""
    poll_after: float | None


@dataclass
class SubmitRequest:
    job: JobDefinition
    tools: dict[str, ToolDefinition]
    """Every tool the job may call (steps and fallbacks), by id, and nested jobs as ``job:<id>``."""
    nested_jobs: dict[str, JobDefinition]
    inputs: dict[str, Any]
    account_id: str
    origin: dict[str, Any] = field(default_factory=dict)
    session_id: str | None = None
    initiating_event_id: str | None = None
    idempotency_key: str | None = None
    callback_url: str | None = None
    priority: int = 0
    random_inputs: list[str] = field(default_factory=list)
    """The seed inputs drawn at random at submission (steps reading them are never cached)."""


Work = DispatchWork | EvaluateWork
"""What a transaction may hand its worker to do next: call a service, or evaluate steps."""


@dataclass
class _Ctx:
    """What one transaction accumulates: dispatches leased to the caller, the lease budget."""

    now: float
    lease: Lease | None
    dispatches: list[Work] = field(default_factory=list)
    picked_up: bool = True
    """False when no worker is behind this transaction (submit, retry, cancel): a queued run stays
    ``queued`` until a worker claims one of its tasks (``_claim``)."""
    again: bool = False
    """Set when an attempt was answered at once (a cache hit): the run is decided again."""

    def can_lease(self) -> bool:
        return self.lease is not None and self.lease.used < self.lease.capacity


def tool_job(tool: ToolDefinition) -> JobDefinition:
    """A single tool call as a one-step job (a run of a tool is a run of this job)."""
    step = Step(
        step_id=tool.tool_id,
        tool_id=tool.tool_id,
        input_mappings=[InputMapping(target_input_name=p.name, source_job_input=p.name) for p in tool.input_schema],
    )
    return JobDefinition(
        job_id=tool.tool_id,
        display_name=tool.display_name,
        command_name=tool.command_name,
        description=tool.description,
        version=tool.version,
        input_schema=[p.model_copy() for p in tool.input_schema],
        output_schema=[
            JobOutput(name=o.name, type=o.type, description=o.description, source_step_id=tool.tool_id, source_output_name=o.name)
            for o in tool.output_schema
        ],
        steps=[step],
        platform_hints=tool.platform_hints,
        delivery_hints=tool.delivery_hints,
        visibility=tool.visibility,
        metadata={"toolRun": True},
    )


def generation_cost(
    model: CostingModel | None, duration_s: float, outputs: Mapping[str, Any] | None, rates: Mapping[str, Decimal]
) -> Decimal:
    """The cost of one generation from the tool's costing model and its measured duration."""
    if model is None:
        return Decimal(0)
    if model.rate_source is RateSource.STATIC and model.static_cost is not None:
        return model.static_cost.amount
    if model.rate_source is RateSource.MACHINE:
        rate = model.rate
        if rate is None and model.machine_class is not None:
            rate = rates.get(model.machine_class)
        if rate is None:
            return Decimal(0)
        return (rate * Decimal(str(round(duration_s, 3)))).quantize(Decimal("0.00000001"))
    if model.rate_source is RateSource.OUTPUT_UNIT and model.unit_cost is not None:
        units = 0
        for name, value in (outputs or {}).items():
            if model.unit_output and name != model.unit_output:
                continue
            units += len(value) if isinstance(value, list) else 1
        return model.unit_cost.amount * units
    return Decimal(0)


_STEP_STATUS = {s.value: s for s in StepStatus}
_GENERATION_STATUS = {s.value: s for s in GenerationStatus}


def _work_status_of_child(status: str) -> GenerationStatus | None:
    return {
        RunStatus.COMPLETED.value: GenerationStatus.COMPLETED,
        RunStatus.PARTIALLY_COMPLETED.value: GenerationStatus.COMPLETED,
        RunStatus.FAILED.value: GenerationStatus.FAILED,
        RunStatus.CANCELLED.value: GenerationStatus.CANCELLED,
    }.get(status)


class Engine:
    """Transaction functions over the store, with caches of definition snapshots."""

    def __init__(self, *, rates: Mapping[str, Decimal], secret: bytes, lease_seconds: float = 30.0) -> None:
        self.rates = dict(rates)
        self.secret = secret
        self.lease_seconds = lease_seconds
        self._jobs: dict[str, tuple[JobDefinition, tuple[str, ...]]] = {}
        self._tools: dict[str, ToolDefinition] = {}
        self._stored: set[str] = set()
        """Snapshots known to be committed: a submit skips inserting these. A snapshot enters it only
        after the transaction that inserted it committed, so a concurrent submit never relies on
        a row another transaction may still roll back (or has not yet made visible)."""
        self._run_inputs: dict[str, dict[str, Any]] = {}
        """Inputs of runs in progress, by run id (at most ``INPUTS_KEPT``, the oldest dropped first)."""
        self.notification_rules: list[Any] = []
        """Callables ``(run_row, status) -> list[(channel, target)]`` deciding who hears of a run's end."""

    # --- snapshots -----------------------------------------------------------------------------

    def _job(self, tx: Tx, sha: str) -> tuple[JobDefinition, tuple[str, ...]]:
        cached = self._jobs.get(sha)
        if cached is None:
            job = JobDefinition.model_validate(runs_q.get_snapshot(tx, sha))
            cached = (job, tuple(plan.topological_order(job)))
            self._jobs[sha] = cached
        return cached

    def _tool(self, tx: Tx, sha: str) -> ToolDefinition:
        tool = self._tools.get(sha)
        if tool is None:
            tool = ToolDefinition.model_validate(runs_q.get_snapshot(tx, sha))
            self._tools[sha] = tool
        return tool

    def _snapshot(self, tx: Tx, kind: str, definition: ToolDefinition | JobDefinition, now: float) -> str:
        body = definition.dump()
        sha = runs_q.snapshot_sha(body)
        if sha not in self._stored:
            def_id = definition.tool_id if isinstance(definition, ToolDefinition) else definition.job_id
            runs_q.put_snapshot(tx, sha, kind, def_id, definition.version, body, now)
            tx.after_commit(lambda: self._stored.add(sha))
            if isinstance(definition, ToolDefinition):
                self._tools.setdefault(sha, definition)
            elif sha not in self._jobs:
                self._jobs[sha] = (definition, tuple(plan.topological_order(definition)))
        return sha

    def _inputs(self, tx: Tx, run: Any) -> dict[str, Any]:
        """A run's inputs: from its row when it was read whole, else read once and kept (they never
        change, and a map step's list may be long: each transition would decode it again)."""
        if "job_inputs" in run:
            return dict(run.job_inputs or {})
        found = self._run_inputs.get(run.run_id)
        if found is None:
            found = runs_q.inputs(tx, run.run_id)
            self._keep_inputs(run.run_id, found)
        return found

    def _keep_inputs(self, run_id: str, inputs: dict[str, Any]) -> None:
        if len(self._run_inputs) >= INPUTS_KEPT:
            self._run_inputs.pop(next(iter(self._run_inputs)))
        self._run_inputs[run_id] = inputs

    # --- submit --------------------------------------------------------------------------------

    def submit_tx(self, tx: Tx, req: SubmitRequest, now: float) -> tuple[str, bool]:
        """Create a run with its steps and start what can start. Returns (run_id, created): with an
        idempotency key the account used before (or a concurrent request is using: the insert
        waits for it on PostgreSQL), the run that key made and False."""
        return self.submit_many_tx(tx, [req], now)[0]

    def submit_many_tx(self, tx: Tx, reqs: Sequence[SubmitRequest], now: float) -> list[tuple[str, bool]]:
        """Create many runs in one transaction (bulk submission; ``submit_tx`` is a batch of one).
        Returns (run_id, created) per request, in order: a request whose idempotency key names a
        run already (stored, earlier in the batch, or made by a concurrent request: the insert
        waits for it on PostgreSQL) gets that run and False.

        A new run is planned before it is written: when its first plan only starts tools, skips
        steps or sets a timer (``_FreshRuns``), its rows go in already in that state, with one
        multi-row INSERT per table for the whole batch and no UPDATE. Any other run (a nested job,
        one that ends at once) is created and then advanced like any run."""
        results: list[tuple[str, bool]] = []
        known = self._runs_by_key(tx, reqs)
        ensured: set[str] = set()
        fresh = _FreshRuns()
        for req in reqs:
            key = (req.account_id, req.idempotency_key) if req.idempotency_key else None
            if key is not None and key in known:
                results.append((known[key], False))
                continue
            if req.account_id not in ensured:
                accounts_q.ensure(tx, req.account_id, req.account_id, now)
                ensured.add(req.account_id)
            tool_shas = {tid: self._snapshot(tx, "tool", t, now) for tid, t in req.tools.items()}
            for jid, nested in req.nested_jobs.items():
                tool_shas[f"job:{jid}"] = self._snapshot(tx, "job", nested, now)
            run_id = self._plan_fresh(tx, fresh, req, tool_shas, now)
            if run_id is None:
                run_id = self._create_run(tx, req.job, tool_shas, req, now, parent=None)
                if run_id is None:  # a concurrent request with the same key won
                    results.append((self._key_owner(tx, req), False))
                    continue
                self._advance(tx, run_id, _Ctx(now, None, picked_up=False))
            if key is not None:
                known[key] = run_id
            results.append((run_id, True))
        lost = fresh.write(tx)
        if lost:  # runs whose key a concurrent request took first: theirs is the run
            for index, (run_id, _created) in enumerate(results):
                if run_id in lost:
                    results[index] = (self._key_owner(tx, reqs[index]), False)
        return results

    def _key_owner(self, tx: Tx, req: SubmitRequest) -> str:
        winner = runs_q.by_idempotency_key(tx, req.account_id, req.idempotency_key or "")
        if winner is None:
            raise RuntimeError("an idempotency key conflicted with a run that cannot be read")
        return str(winner.run_id)

    def _runs_by_key(self, tx: Tx, reqs: Sequence[SubmitRequest]) -> dict[tuple[str, str], str]:
        """The runs the requests' idempotency keys name already, by (account, key)."""
        keys: dict[str, list[str]] = {}
        for req in reqs:
            if req.idempotency_key:
                keys.setdefault(req.account_id, []).append(req.idempotency_key)
        found: dict[tuple[str, str], str] = {}
        for account, wanted in keys.items():
            for key, run_id in runs_q.by_idempotency_keys(tx, account, sorted(set(wanted))).items():
                found[(account, key)] = run_id
        return found

    def _plan_fresh(
        self, tx: Tx, fresh: _FreshRuns, req: SubmitRequest, tool_shas: dict[str, str], now: float
    ) -> str | None:
        """Plan a new run before writing it and add its rows, in their planned state, to ``fresh``;
        None (nothing written) when the first plan does more than start tools, skip steps and set
        a timer."""
        job_sha = self._snapshot(tx, "job", req.job, now)
        job, order = self._job(tx, job_sha)
        run_id = new_id("run_")
        tools = {tid: self._tool(tx, sha) for tid, sha in tool_shas.items() if not tid.startswith("job:")}
        deadline = (now + job.timeout_seconds) if job.timeout_seconds else None
        view = plan.RunView(
            run_id=run_id, status=RunStatus.QUEUED, job=job, inputs=req.inputs,
            steps={s.step_id: plan.StepView(s.step_id) for s in job.steps}, tools=tools, deadline_at=deadline,
            order=order,
        )
        actions = plan.decide(view, now)
        if not all(_fresh_action(a, tools, job) for a in actions):
            return None
        run = Row(
            run_id=run_id, job_definition_id=job.job_id, definition_version=job.version, definition_sha=job_sha,
            tool_shas=tool_shas, master_account_id=req.account_id, session_id=req.session_id,
            initiating_event_id=req.initiating_event_id, origin=req.origin, status=RunStatus.QUEUED.value,
            job_inputs=req.inputs, callback_url=req.callback_url, idempotency_key=req.idempotency_key,
            parent_run_id=None, parent_step_id=None, priority=req.priority, deadline_at=deadline, created_at=now,
            started_at=None, updated_at=now, random_inputs=req.random_inputs or None,
        )  # queued: a worker's claim of its first dispatch makes it running (``_claim``)
        steps: dict[str, dict[str, Any]] = {
            s.step_id: {
                "run_id": run_id, "step_id": s.step_id, "position": i, "status": StepStatus.PENDING.value,
                "attempt": 0, "tool_id": None, "using_fallback": False, "generation_id": None,
                "generation_ids": [], "reason": None, "error": None, "skipped_by_error": False, "progress": None,
                "started_at": None, "finished_at": None,
            }
            for i, s in enumerate(job.steps)
        }
        events = fresh.events
        events.append(_event(run_id, "run.created", None, now, jobId=job.job_id, version=job.version, parentRunId=None))
        for action in actions:
            if isinstance(action, plan.StartRun):
                continue  # no worker has the run yet
            elif isinstance(action, plan.StartStep):
                tool = tools[action.tool_id or ""]
                gen_id = new_id("gen_")
                steps[action.step_id].update(
                    status=StepStatus.RUNNING.value, attempt=action.attempt, tool_id=tool.tool_id,
                    using_fallback=action.using_fallback, generation_id=gen_id, generation_ids=[gen_id],
                    started_at=now, progress=0.0,
                )
                fresh.generations.append(_generation_row(run, action, tool, gen_id, now))
                fresh.tasks.append(_task_row(TaskKind.DISPATCH, run_id, gen_id, now, req.priority))
                events.append(_event(run_id, "step.started", action.step_id, now, attempt=action.attempt,
                                     toolId=tool.tool_id, generationId=gen_id, fallback=action.using_fallback))
            elif isinstance(action, plan.SkipStep):
                steps[action.step_id].update(
                    status=StepStatus.SKIPPED.value, reason=action.reason, error=action.error,
                    skipped_by_error=action.by_error, finished_at=now,
                )
                events.append(_event(run_id, "step.skipped", action.step_id, now, reason=action.reason,
                                     byError=action.by_error))
            elif isinstance(action, plan.Wake):
                fresh.tasks.append(_task_row(TaskKind.ADVANCE, run_id, run_id, action.at, 0, created_at=now))
        fresh.runs.append(run)
        fresh.steps.extend(steps.values())
        fresh.artifacts.extend((req.account_id, value, run_id, now) for value in _artifact_values(req.inputs))
        return run_id

    def _create_run(
        self,
        tx: Tx,
        job: JobDefinition,
        tool_shas: dict[str, str],
        req: SubmitRequest,
        now: float,
        parent: tuple[str, str] | None,
    ) -> str | None:
        """Insert the run and its steps; None when its idempotency key is taken already."""
        job_sha = self._snapshot(tx, "job", job, now)
        run_id = new_id("run_")
        inserted = runs_q.insert_run(
            tx,
            run_id=run_id,
            job_definition_id=job.job_id,
            definition_version=job.version,
            definition_sha=job_sha,
            tool_shas=tool_shas,
            master_account_id=req.account_id,
            session_id=req.session_id,
            initiating_event_id=req.initiating_event_id,
            origin=req.origin,
            status=RunStatus.QUEUED.value,
            job_inputs=req.inputs,
            callback_url=req.callback_url if parent is None else None,
            idempotency_key=req.idempotency_key if parent is None else None,
            parent_run_id=parent[0] if parent else None,
            parent_step_id=parent[1] if parent else None,
            priority=req.priority,
            deadline_at=(now + job.timeout_seconds) if job.timeout_seconds else None,
            created_at=now,
            updated_at=now,
            random_inputs=req.random_inputs or None,
        )
        if not inserted:
            return None
        runs_q.insert_steps(tx, run_id, [s.step_id for s in job.steps])
        events_q.append(tx, run_id, "run.created", now, jobId=job.job_id, version=job.version, parentRunId=parent[0] if parent else None)
        return run_id

    # --- advance -------------------------------------------------------------------------------

    def advance_tx(
        self, tx: Tx, run_id: str, claim: tasks_q.Claim | None, now: float, lease: Lease | None
    ) -> list[Work]:
        ctx = _Ctx(now, lease.attempt(tx) if lease else None)
        if claim is not None:
            tasks_q.finish_many(tx, [claim])
        self._advance(tx, run_id, ctx)
        return ctx.dispatches

    def _load_view(
        self, tx: Tx, run_id: str, run: Any = None, evaluations: Mapping[str, StepEvaluation] | None = None,
        rows: list[Row] | None = None,
    ) -> tuple[Any, plan.RunView, dict[str, Any]] | None:
        """The run (locked) and the planner's view of it; ``run`` and its step rows with their work
        (``rows``) when the caller read them already."""
        if run is None:
            run = runs_q.lock_state(tx, run_id)
        if run is None:
            return None
        job, order = self._job(tx, run.definition_sha)
        step_rows = {r["step_id"]: r for r in (runs_q.steps_with_work(tx, run_id) if rows is None else rows)}
        maps = {s.step_id: s.map for s in job.steps if s.map is not None}
        views: dict[str, plan.StepView] = {}
        for sid, row in step_rows.items():
            status = _STEP_STATUS[row["status"]]
            work_status = work_outputs = work_error = None
            if status is StepStatus.RUNNING:
                if row["child_run_id"]:
                    child = runs_q.get(tx, row["child_run_id"])
                    if child is not None:
                        work_status = _work_status_of_child(child.status)
                        work_outputs = child.final_outputs
                        work_error = child.error
                elif row["work_status"] is not None:
                    work_status = _GENERATION_STATUS[row["work_status"]]
                    work_outputs = row["work_outputs"]
                    work_error = row["work_error"]
            spec = maps.get(sid)
            views[sid] = plan.StepView(
                step_id=sid, status=status, attempt=row["attempt"], tool_id=row["tool_id"],
                using_fallback=row["using_fallback"], outputs=row["outputs"], skipped_by_error=row["skipped_by_error"],
                reason=row["reason"], next_attempt_at=row["next_attempt_at"], started_at=row["started_at"],
                work_status=work_status, work_outputs=work_outputs, work_error=work_error,
                map=items.map_view(tx, run_id, row, spec) if spec is not None and row["items_total"] is not None else None,
            )
        tools: dict[str, ToolDefinition] = {}
        jobs: dict[str, JobDefinition] = {}
        for tid, sha in run.tool_shas.items():
            if tid.startswith("job:"):
                jobs[tid[4:]] = self._job(tx, sha)[0]
            else:
                tools[tid] = self._tool(tx, sha)
        view = plan.RunView(
            run_id=run_id,
            status=RunStatus(run.status),
            job=job,
            inputs=self._inputs(tx, run),
            steps=views,
            tools=tools,
            jobs=jobs,
            evaluations=evaluations or {},
            cancel_requested=run.cancel_requested,
            deadline_at=run.deadline_at,
            order=order,
        )
        return run, view, step_rows

    def _advance(
        self, tx: Tx, run_id: str, ctx: _Ctx, run: Any = None, evaluations: Mapping[str, StepEvaluation] | None = None,
        rows: list[Row] | None = None,
    ) -> None:
        while True:
            loaded = self._load_view(tx, run_id, run, evaluations, rows)
            if loaded is None:
                return
            run, view, step_rows = loaded
            actions = plan.decide(view, ctx.now)
            ctx.again = False
            if not actions or not (self._apply(tx, run, view, step_rows, actions, ctx) or ctx.again):
                return
            run = rows = None  # a map step completed, or a cache hit answered a step: decide again

    def _apply(
        self, tx: Tx, run: Any, view: plan.RunView, step_rows: dict[str, Any], actions: list[plan.Action], ctx: _Ctx
    ) -> bool:
        """Write the planner's actions; True when a map step completed (decide again)."""
        now = ctx.now
        run_id = run.run_id
        evs: list[dict[str, Any]] = []
        writes = items.ItemWrites()

        def event(type_: str, step_id: str | None = None, **data: Any) -> None:
            evs.append({"run_id": run_id, "type": type_, "step_id": step_id, "data": data, "created_at": now})

        def ended_map(step_id: str, reason: str) -> None:
            step = view.job.step(step_id)
            if step is not None and step.map is not None:
                items.close(self, tx, run_id, step_id, reason, ctx)

        evaluating: list[plan.Evaluate] = []
        for action in actions:
            if isinstance(action, plan.OpenMap | plan.FinishItem | plan.CompleteMap) or (
                isinstance(action, plan.RetryStep | plan.ExpireWork) and action.item is not None
            ):
                items.apply(self, tx, run, view, action, ctx, writes, event)
            elif isinstance(action, plan.StartRun):
                if ctx.picked_up and runs_q.set_status(tx, run_id, RunStatus.RUNNING, now, started_at=now):
                    event("run.started")
            elif isinstance(action, plan.StartStep):
                self._start_step(tx, run, view, step_rows[action.step_id], action, ctx, event)
            elif isinstance(action, plan.CompleteStep):
                row = step_rows[action.step_id]
                if runs_q.update_step(
                    tx, run_id, action.step_id, (StepStatus.RUNNING,),
                    status=StepStatus.SUCCEEDED, outputs=action.outputs, finished_at=now, progress=1.0, error=None,
                ):
                    event("step.succeeded", action.step_id, outputs=action.outputs, attempt=row.attempt,
                          durationMs=_ms(now - (row.started_at or now)))
            elif isinstance(action, plan.SkipStep):
                if runs_q.update_step(
                    tx, run_id, action.step_id,
                    (StepStatus.PENDING, StepStatus.READY, StepStatus.RUNNING, StepStatus.WAITING_RETRY),
                    status=StepStatus.SKIPPED, reason=action.reason, error=action.error,
                    skipped_by_error=action.by_error, finished_at=now,
                ):
                    event("step.skipped", action.step_id, reason=action.reason, byError=action.by_error)
                    ended_map(action.step_id, action.reason)
            elif isinstance(action, plan.FailStep):
                if runs_q.update_step(
                    tx, run_id, action.step_id,
                    (StepStatus.PENDING, StepStatus.READY, StepStatus.RUNNING, StepStatus.WAITING_RETRY),
                    status=StepStatus.FAILED, reason=action.reason, error=action.error, finished_at=now,
                ):
                    event("step.failed", action.step_id, reason=action.reason, error=action.error)
                    ended_map(action.step_id, f"step {action.step_id} failed")
            elif isinstance(action, plan.RetryStep):
                if runs_q.update_step(
                    tx, run_id, action.step_id, (StepStatus.RUNNING, StepStatus.PENDING),
                    status=StepStatus.WAITING_RETRY, next_attempt_at=action.at, error=action.error,
                ):
                    event("step.retry_scheduled", action.step_id, at=action.at, nextAttempt=action.next_attempt,
                          error=action.error)
            elif isinstance(action, plan.CancelStep):
                row = step_rows[action.step_id]
                if runs_q.update_step(
                    tx, run_id, action.step_id,
                    (StepStatus.PENDING, StepStatus.READY, StepStatus.RUNNING, StepStatus.WAITING_RETRY),
                    status=StepStatus.CANCELLED, reason=action.reason, finished_at=now,
                ):
                    event("step.cancelled", action.step_id, reason=action.reason)
                    ended_map(action.step_id, action.reason)
                    if action.was_running:
                        self._stop_work(tx, row, GenerationStatus.CANCELLED, action.reason, ctx)
            elif isinstance(action, plan.ExpireWork):
                self._stop_work(tx, step_rows[action.step_id], GenerationStatus.TIMEOUT, "timed out", ctx)
            elif isinstance(action, plan.FinishRun):
                self._finish_run(tx, run, action, ctx, event)
            elif isinstance(action, plan.Evaluate):
                if runs_q.update_step(
                    tx, run_id, action.step_id,
                    (StepStatus.PENDING, StepStatus.READY, StepStatus.RUNNING, StepStatus.WAITING_RETRY),
                    status=StepStatus.READY, attempt=action.attempt, tool_id=action.tool_id,
                    using_fallback=action.using_fallback, next_attempt_at=None,
                ):
                    evaluating.append(action)
            elif isinstance(action, plan.Wake):
                tasks_q.schedule_advance(tx, run_id, action.at, now)
        writes.flush(tx, run_id)
        if evaluating:
            self._schedule_evaluation(tx, run, view, evaluating, ctx)
        events_q.append_many(tx, evs)
        return writes.completed

    def _schedule_evaluation(
        self, tx: Tx, run: Any, view: plan.RunView, evaluating: list[plan.Evaluate], ctx: _Ctx
    ) -> None:
        """One ``evaluate`` task for the run's ready steps: leased to the calling worker (which then
        evaluates them at once) when it has room, else queued."""
        lease = ctx.lease if ctx.can_lease() else None
        task = tasks_q.schedule_evaluation(
            tx, run.run_id, now=ctx.now, at=min(ctx.now, run.created_at), priority=run.priority,
            lease_owner=lease.owner if lease else None, lease_seconds=lease.seconds if lease else 0,
        )
        if lease is not None:
            lease.used += 1
            # the task replaces any queued one: it takes every ready step of the run along
            work = _ready_work(task, view, exclude={a.step_id for a in evaluating})
            steps = {s.step_id: s for s in view.job.steps}
            work.steps[:0] = [(steps[a.step_id], a.attempt, a.steps) for a in evaluating]
            ctx.dispatches.append(work)

    def evaluated_tx(
        self, tx: Tx, claim: tasks_q.Claim, run_id: str, evaluations: list[StepEvaluation], now: float,
        lease: Lease | None,
    ) -> list[Work]:
        """Evaluations of ready steps came back: the planner starts, skips or fails them."""
        ctx = _Ctx(now, lease.attempt(tx) if lease else None)
        tasks_q.finish_many(tx, [claim])
        self._advance(tx, run_id, ctx, evaluations={e.step_id: e for e in evaluations})
        return ctx.dispatches

    def _evaluation_work(self, tx: Tx, task: tasks_q.Task) -> EvaluateWork | None:
        """A claimed ``evaluate`` task's work: the run's ready steps, each with what it sees."""
        loaded = self._load_view(tx, task.ref_id or "", run=runs_q.get(tx, task.ref_id or ""))
        if loaded is None or loaded[1].status.terminal:
            return None
        work = _ready_work(task, loaded[1])
        return work if work.steps else None

    def _start_step(
        self, tx: Tx, run: Any, view: plan.RunView, row: Any, action: plan.StartStep, ctx: _Ctx, event: Any
    ) -> None:
        """Start an attempt of a step, or of one item of a map step (``action.item``)."""
        now = ctx.now
        item = action.item
        prior = (StepStatus.PENDING, StepStatus.READY, StepStatus.WAITING_RETRY, StepStatus.RUNNING)

        def claim(**values: Any) -> bool:
            if item is None:
                return runs_q.update_step(tx, run.run_id, action.step_id, prior, **values)
            return items_q.update(tx, run.run_id, action.step_id, item, items.ITEM_START_PRIOR, **values)

        started = "step.started" if item is None else "item.started"
        at = {} if item is None else {"item": item}
        if action.job_id:
            nested, _ = self._job(tx, run.tool_shas[f"job:{action.job_id}"])
            req = SubmitRequest(
                job=nested, tools={}, nested_jobs={}, inputs=action.inputs, account_id=run.master_account_id,
                origin=run.origin, session_id=run.session_id, initiating_event_id=run.initiating_event_id,
                priority=run.priority,
            )
            child_id = self._create_run(tx, nested, run.tool_shas, req, now, parent=(run.run_id, action.step_id))
            assert child_id is not None  # a child run has no idempotency key
            if not claim(
                status=StepStatus.RUNNING, attempt=action.attempt, child_run_id=child_id, started_at=now,
                progress=0.0, next_attempt_at=None,
            ):
                return
            event(started, action.step_id, attempt=action.attempt, childRunId=child_id, jobId=action.job_id, **at)
            self._advance(tx, child_id, ctx)
            return
        assert action.tool_id is not None
        tool = view.tools.get(action.tool_id)
        if tool is None:
            raise RuntimeError(f"run {run.run_id} has no snapshot of tool {action.tool_id}")
        gen_id = new_id("gen_")
        history = {"generation_ids": [*(row.generation_ids or []), gen_id]} if item is None else {}
        if not claim(
            status=StepStatus.RUNNING, attempt=action.attempt, tool_id=action.tool_id,
            using_fallback=action.using_fallback, generation_id=gen_id, started_at=now, progress=0.0,
            next_attempt_at=None, child_run_id=None, **history,
        ):
            return
        generation = _generation_row(run, action, tool, gen_id, now)
        deadline = generation["deadline_at"]
        cached = self._cache_plan(run, view.job.step(action.step_id), tool, action)
        if cached is not None:
            key, seconds = cached
            hit = cache_q.find(tx, run.master_account_id, key, now)
            if hit is not None:  # the same tool on the same inputs made these outputs: no call, no cost
                generation.update(
                    status=GenerationStatus.COMPLETED.value, outputs=hit.outputs, cost_usd=Decimal(0),
                    cached_from=hit.generation_id, request_timestamp=now, response_timestamp=now, duration_ms=0,
                    progress=1.0,
                )
                gens_q.insert(tx, **generation)
                for value in _artifact_values(hit.outputs):  # linked to this run too (the cache is per account)
                    accounts_q.own_artifact(tx, run.master_account_id, value, run.run_id, now)
                event(started, action.step_id, attempt=action.attempt, toolId=tool.tool_id, generationId=gen_id,
                      fallback=action.using_fallback, cacheHit=True, cachedFrom=hit.generation_id, **at)
                ctx.again = True  # decided again in this transaction: the step (or item) completes
                return
            generation.update(cache_key=key, cache_seconds=seconds)
        gens_q.insert(tx, **generation)
        lease = ctx.lease if ctx.can_lease() else None
        if lease is None:
            # queued work is ordered by its run's age: steps of runs under way go before new runs (also
            # before the first steps of runs submitted in the same batch, which share a creation time)
            tasks_q.enqueue(
                tx, TaskKind.DISPATCH, run_id=run.run_id, ref_id=gen_id, now=now,
                at=min(now, run.created_at - UNDER_WAY_AHEAD_SECONDS), priority=run.priority,
            )
        else:
            lease.used += 1
            work = DispatchWork(
                task_id=0, task_attempts=1, generation_id=gen_id, run_id=run.run_id, step_id=action.step_id,
                attempt=action.attempt, account_id=run.master_account_id, tool=tool, inputs=action.inputs,
                deadline_at=deadline,
            )
            ctx.dispatches.append(work)
            tasks_q.enqueue_leased(
                tx, TaskKind.DISPATCH, run_id=run.run_id, ref_id=gen_id, now=now, priority=run.priority,
                owner=lease.owner, lease_seconds=lease.seconds, then=work.leased,
            )
        event(started, action.step_id, attempt=action.attempt, toolId=tool.tool_id, generationId=gen_id,
              fallback=action.using_fallback, **at)

    def _cache_plan(
        self, run: Any, step: Step | None, tool: ToolDefinition, action: plan.StartStep
    ) -> tuple[str, float] | None:
        """(cache key, lifetime) of an attempt that may use the cache, or None: the step (or its
        tool) opts in, and no seed of the attempt was drawn at random (by the planner, or at
        submission for a job input the step reads)."""
        if step is None or action.drawn_seeds:
            return None
        seconds = cache.lifetime(step, tool)
        tool_sha = (run.tool_shas or {}).get(tool.tool_id)
        if seconds is None or tool_sha is None or cache.reads_random(step, run.random_inputs or ()):
            return None
        return cache.key(tool_sha, action.inputs), seconds

    def _stop_work(self, tx: Tx, row: Any, status: GenerationStatus, reason: str, ctx: _Ctx) -> None:
        """Stop a step's running work: CAS its generation and cancel it at the backend (or the child run)."""
        if row.child_run_id:
            if runs_q.request_cancel(tx, row.child_run_id, ctx.now):
                self._advance(tx, row.child_run_id, ctx)
            return
        if not row.generation_id:
            return
        gen = gens_q.get(tx, row.generation_id)
        if gen is None:
            return
        if gens_q.set_status(
            tx, gen.generation_id, status, error={"message": reason, "retryable": status is GenerationStatus.TIMEOUT},
            response_timestamp=ctx.now,
        ):
            tasks_q.delete_for(tx, gen.generation_id, (TaskKind.POLL,))
            if gen.platform_specific_run_id:
                tasks_q.delete_for(tx, gen.generation_id, (TaskKind.DISPATCH,))
                tasks_q.enqueue(tx, TaskKind.CANCEL, run_id=gen.run_id, ref_id=gen.generation_id, now=ctx.now)
            elif not tasks_q.is_leased(tx, gen.generation_id, TaskKind.DISPATCH):
                # not yet submitted: a queued dispatch task must not submit it; a leased one finds
                # the generation terminal when it records its submission, and cancels it then.
                tasks_q.delete_for(tx, gen.generation_id, (TaskKind.DISPATCH,))

    def _finish_run(self, tx: Tx, run: Any, action: plan.FinishRun, ctx: _Ctx, event: Any) -> None:
        now = ctx.now
        if not runs_q.set_status(
            tx, run.run_id, action.status, now, final_outputs=action.outputs, error=action.error, finished_at=now
        ):
            return
        event(f"run.{action.status.value}", outputs=action.outputs, error=action.error)
        for value in _artifact_values(action.outputs):
            accounts_q.own_artifact(tx, run.master_account_id, value, run.run_id, now)
        if run.parent_run_id:
            self._advance(tx, run.parent_run_id, ctx)
            return
        self._notify(tx, run, action, now)

    def _notify(self, tx: Tx, run: Any, action: plan.FinishRun, now: float) -> None:
        targets: list[tuple[str, dict[str, Any]]] = []
        if run.callback_url:
            targets.append(("callback", {"url": run.callback_url}))
        for rule in self.notification_rules:
            targets.extend(rule(run, action.status))
        event_type = {
            RunStatus.COMPLETED: "run.completed",
            RunStatus.PARTIALLY_COMPLETED: "run.completed",
            RunStatus.FAILED: "run.failed",
            RunStatus.CANCELLED: "run.cancelled",
        }[action.status]
        for channel, target in targets:
            nid = new_id("ntf_")
            notes_q.insert(
                tx, notification_id=nid, run_id=run.run_id, account_id=run.master_account_id, channel=channel,
                event_type=event_type, target=target,
                payload={"runId": run.run_id, "status": action.status.value, "jobId": run.job_definition_id,
                         "outputs": action.outputs, "error": action.error},
                created_at=now,
            )
            tasks_q.enqueue(tx, TaskKind.NOTIFY, run_id=run.run_id, ref_id=nid, now=now)

    # --- updates from services -----------------------------------------------------------------

    def record_submissions_tx(
        self, tx: Tx, outcomes: list[Outcome], now: float, lease: Lease | None
    ) -> list[tuple[list[Work], bool]]:
        """Record several submissions in one transaction (group commit). If one of them fails, the
        whole transaction rolls back and the worker records them one at a time.

        The batch's statements are few and do not wait for each other (pipelined on PostgreSQL):
        the finished dispatch tasks go in one statement; every run of the batch is locked in one
        statement, in the order of their ids, so two batches that touch the same runs cannot
        deadlock; the generations their ``submit`` finished are compare-and-set together, and the
        step rows of their runs read in one statement. Steps of one run that finished together
        (the branches of a fan-out) make one pass of the planner; the successors they start go
        back with the first of them."""
        lease = lease.attempt(tx) if lease is not None else None
        results: list[tuple[list[Work], bool]] = [([], False)] * len(outcomes)
        by_run: dict[str, list[int]] = {}
        for index in sorted(range(len(outcomes)), key=lambda i: outcomes[i].work.run_id):
            by_run.setdefault(outcomes[index].work.run_id, []).append(index)
        finished = {i for i, o in enumerate(outcomes) if o.update is not None and o.update.status.terminal}
        ending = sorted({outcomes[i].work.run_id for i in finished})
        # sent together, read after: one round trip on PostgreSQL
        tasks_q.finish_many(tx, [outcomes[i].work.claim for i in finished])
        # every transaction locks a run before its parts; this also keeps each run's events in
        # commit order, which readers of new events rely on (watching.EventHub)
        locked = runs_q.lock_states(tx, list(by_run))
        finishes = sorted(finished)
        finished_rows = gens_q.finish_each(tx, [_finish_of(outcomes[i], now) for i in finishes])
        inputs = runs_q.inputs_of(tx, [r for r in ending if r not in self._run_inputs])
        read_steps = runs_q.steps_with_work_of(tx, ending)
        runs = locked()
        applied = {i: row for i, row in zip(finishes, finished_rows(), strict=True) if row is not None}
        for run_id, found in inputs().items():
            self._keep_inputs(run_id, found)
        steps = read_steps()
        for run_id, group in by_run.items():
            run = runs.get(run_id)
            ended = [i for i in group if i in applied]
            for index in group:
                if index not in finished:
                    results[index] = self._record_submitted(tx, outcomes[index], now)
            if run is None or not ended:
                continue
            ctx = _Ctx(now, lease)
            for index in ended:
                update = outcomes[index].update
                assert update is not None
                self._finished_generation(tx, run, applied[index], update, ctx)
            self._advance(tx, run_id, ctx, run=run, rows=steps[run_id])
            results[next(i for i in group if i in finished)] = (ctx.dispatches, False)
        return results

    def _record_submitted(self, tx: Tx, outcome: Outcome, now: float) -> tuple[list[Work], bool]:
        """Record an asynchronous backend's acceptance (its platform run id): the generation is
        processing and a poll task follows it. The caller holds the run's lock. Returns
        (dispatches, cancel_needed): the latter when the generation was stopped while the call was
        under way and the backend run must be cancelled."""
        work, update, platform_run_id = outcome.work, outcome.update, outcome.platform_run_id
        tasks_q.finish_many(tx, [work.claim])
        row = gens_q.set_status(
            tx, work.generation_id, GenerationStatus.PROCESSING, platform_specific_run_id=platform_run_id,
            request_timestamp=outcome.requested_at, progress=update.progress if update else None,
        )
        if row is None:  # terminal already: stopped by us, or finished by the backend's own report
            gen = gens_q.get(tx, work.generation_id)
            # A fast backend may report the end (websocket, webhook) before this commit: only a
            # generation we stopped (cancelled, timed out) while the call was under way is
            # cancelled at the backend.
            stopped = gen is not None and gen.status in (GenerationStatus.CANCELLED.value, GenerationStatus.TIMEOUT.value)
            if platform_run_id:
                gens_q.update(tx, work.generation_id, platform_specific_run_id=platform_run_id)
                if stopped:
                    tasks_q.enqueue(tx, TaskKind.CANCEL, run_id=work.run_id, ref_id=work.generation_id, now=now)
            return [], stopped and platform_run_id is not None
        tasks_q.enqueue(
            tx, TaskKind.POLL, run_id=work.run_id, ref_id=work.generation_id, now=now,
            at=now + (outcome.poll_after if outcome.poll_after is not None else DEFAULT_POLL_SECONDS),
        )
        events_q.append(tx, work.run_id, "step.submitted", now, step_id=work.step_id,
                        generationId=work.generation_id, platformRunId=platform_run_id)
        return [], False

    def apply_update_tx(
        self, tx: Tx, run_id: str, generation_id: str, update: RunUpdate, now: float, lease: Lease | None = None,
        claim: tasks_q.Claim | None = None, receipt: tuple[str, str] | None = None,
    ) -> tuple[list[Work], bool]:
        """The one entry point for updates (poll, webhook, stream). Returns (dispatches, applied)."""
        ctx = _Ctx(now, lease.attempt(tx) if lease else None)
        if claim is not None:
            tasks_q.finish_many(tx, [claim])
        if receipt is not None and not gens_q.record_webhook_receipt(tx, receipt[0], receipt[1], generation_id, now):
            return [], False
        applied = self._apply_update(tx, run_id, generation_id, update, ctx)
        return ctx.dispatches, applied

    def _apply_update(self, tx: Tx, run_id: str, gid: str, update: RunUpdate, ctx: _Ctx) -> bool:
        run = runs_q.lock_state(tx, run_id)  # every transaction locks the run before its parts
        if run is None:
            return False
        if not update.status.terminal:
            return self._record_progress(tx, run_id, gid, update, ctx.now)
        if not self._finish_generation(tx, run, gid, update, ctx):
            return False
        self._advance(tx, run_id, ctx, run=run)
        return True

    def _record_progress(self, tx: Tx, run_id: str, gid: str, update: RunUpdate, now: float) -> bool:
        gen = gens_q.get(tx, gid)
        if gen is None or GenerationStatus(gen.status).terminal:
            return False
        if update.progress == gen.progress and update.live_status == gen.live_status:
            return False
        if update.progress is not None and gen.progress is not None and update.progress < gen.progress:
            return False  # an older update arriving late (reordered webhooks): progress only goes forward
        gens_q.set_status(tx, gid, GenerationStatus.PROCESSING, progress=update.progress, live_status=update.live_status)
        if gen.item_index is not None:  # an item's progress; its map step's progress counts items
            items_q.update(tx, run_id, gen.step_id, gen.item_index, (StepStatus.RUNNING,), known=False,
                           progress=update.progress)
            events_q.append(tx, run_id, "item.progress", now, step_id=gen.step_id, item=gen.item_index,
                            progress=update.progress, liveStatus=update.live_status)
            return True
        runs_q.update_step(tx, run_id, gen.step_id, (StepStatus.RUNNING,), known=False, progress=update.progress)
        events_q.append(tx, run_id, "step.progress", now, step_id=gen.step_id, progress=update.progress,
                        liveStatus=update.live_status)
        return True

    def _finish_generation(self, tx: Tx, run: Any, gid: str, update: RunUpdate, ctx: _Ctx) -> bool:
        """A terminal update's compare-and-set of the generation, its cost and its artifacts; the
        caller holds the run's lock and advances the run. False when it was terminal already."""
        completed = update.status is GenerationStatus.COMPLETED
        row = gens_q.finish(
            tx, gid, update.status, ctx.now,
            outputs=update.outputs if completed else None,
            error=update.error.model_dump() if update.error else None,
            raw=update.raw,
            progress=1.0 if completed else None,
        )
        if row is None:
            return False
        tasks_q.delete_for(tx, gid, (TaskKind.POLL,))
        self._finished_generation(tx, run, row, update, ctx)
        return True

    def _finished_generation(self, tx: Tx, run: Any, row: Row, update: RunUpdate, ctx: _Ctx) -> None:
        """What follows a generation's end (``row``: what its compare-and-set returned): its cost,
        the artifacts its outputs name, its outputs kept for the cache."""
        now, run_id, gid = ctx.now, run.run_id, row.generation_id
        completed = update.status is GenerationStatus.COMPLETED
        cost = update.cost_usd
        if cost is None and completed:
            sha = run.tool_shas.get(row.tool_id)
            model = self._tool(tx, sha).costing_model if sha else None
            if model is not None:
                cost = generation_cost(model, (row.duration_ms or 0) / 1000, update.outputs, self.rates)
        if cost:
            gens_q.update(tx, gid, cost_usd=cost)
            runs_q.add_cost(tx, run_id, cost, now)
            if row.item_index is not None:
                items_q.add_cost(tx, run_id, row.step_id, row.item_index, cost)
        for value in _artifact_values(update.outputs):
            accounts_q.own_artifact(tx, row.master_account_id, value, run_id, now)
        if completed and row.cache_key and row.cache_seconds:
            cache_q.put(
                tx, account_id=row.master_account_id, key=row.cache_key, tool_id=row.tool_id,
                outputs=update.outputs or {}, generation_id=gid, run_id=run_id, now=now,
                expires_at=now + row.cache_seconds,
            )

    def reschedule_poll_tx(
        self, tx: Tx, claim: tasks_q.Claim, at: float, update: RunUpdate | None, run_id: str, generation_id: str,
        now: float,
    ) -> None:
        """A poll found the generation still busy: record progress (if any) and poll again later."""
        if update is not None:
            self._apply_update(tx, run_id, generation_id, update, _Ctx(now, None))
        tasks_q.reschedule(tx, claim, at)

    def finish_task_tx(self, tx: Tx, claim: tasks_q.Claim) -> None:
        tasks_q.finish(tx, claim)

    # --- claims --------------------------------------------------------------------------------

    def claim_tx(self, tx: Tx, owner: str, limit: int, now: float) -> tuple[list[Any], float | None]:
        """Lease due tasks and load what each needs. Returns (work items, next due time if idle).
        Tasks found to have nothing left to do (their generation or run finished) are deleted, and
        the claim goes on in the queue for others in their place."""
        items: list[Any] = []
        while len(items) < limit:
            found, taken = self._claim(tx, owner, limit - len(items), now)
            items += found
            if len(found) == taken:  # none dropped: the queue has no more due tasks, or the limit is met
                break
        next_due = None
        if len(items) < limit:
            next_due = tasks_q.next_due(tx, now)
        return items, next_due

    def record_and_claim_tx(
        self, tx: Tx, outcomes: list[Outcome], now: float, lease: Lease | None, owner: str | None, room: int
    ) -> tuple[list[tuple[list[Work], bool]], list[Any]]:
        """``record_submissions_tx``, then, in the same transaction, claim for ``owner`` queued tasks
        into the slots the batch leaves free: a worker that finishes a run takes its next task
        without a transaction of its own. ``room`` is how many tasks the batch and the claims may
        hold together (the worker's claim rule); the dispatches the batch goes on with count first."""
        results = self.record_submissions_tx(tx, outcomes, now, lease)
        freed = sum(1 for dispatches, _ in results if not dispatches)
        limit = min(freed, room - sum(len(dispatches) for dispatches, _ in results))
        claimed = self._claim(tx, owner, limit, now)[0] if owner is not None and limit > 0 else []
        return results, claimed

    def _claim(self, tx: Tx, owner: str, limit: int, now: float) -> tuple[list[Any], int]:
        """(work items, how many tasks were leased): stale tasks are finished, not handed out."""
        claimed = tasks_q.claim(tx, owner, limit, now, self.lease_seconds)
        needs_generation = [t for t in claimed if t.kind in (TaskKind.DISPATCH, TaskKind.POLL, TaskKind.CANCEL)]
        found = gens_q.with_tool_shas(tx, [t.ref_id or "" for t in needs_generation])
        items: list[Any] = []
        for task in claimed:
            if task.kind is TaskKind.EVALUATE:
                evaluation = self._evaluation_work(tx, task)
                if evaluation is None:
                    tasks_q.finish_many(tx, [task.claim])
                else:
                    items.append((task, evaluation))
                continue
            if task not in needs_generation:
                items.append((task, None))
                continue
            gen = found.get(task.ref_id or "")
            stale = gen is None or (
                task.kind in (TaskKind.DISPATCH, TaskKind.POLL) and GenerationStatus(gen.status).terminal
            )
            work = None if stale else self._work(tx, gen, task)
            if work is None:
                tasks_q.finish_many(tx, [task.claim])
                continue
            items.append((task, work))
        picked = sorted({w.run_id for t, w in items if t.kind in (TaskKind.DISPATCH, TaskKind.EVALUATE) and w is not None})
        for run_id in runs_q.mark_picked_up(tx, picked, now):
            events_q.append(tx, run_id, "run.started", now)
        return items, len(claimed)

    def generation_work_tx(self, tx: Tx, generation_id: str) -> DispatchWork:
        """A generation as a service sees it (for webhooks that need the service's help)."""
        gen = gens_q.with_tool_shas(tx, [generation_id]).get(generation_id)
        work = self._work(tx, gen, tasks_q.Task(0, TaskKind.DISPATCH, None, generation_id, 1)) if gen is not None else None
        if work is None:
            raise NotFound(generation_id)
        return work

    def _work(self, tx: Tx, gen: Any, task: tasks_q.Task) -> DispatchWork | None:
        """``gen`` carries its run's ``tool_shas`` (``generations.with_tool_shas``)."""
        sha = (gen.tool_shas or {}).get(gen.tool_id)
        if sha is None:
            return None
        return DispatchWork(
            task_id=task.task_id, task_attempts=task.attempts, generation_id=gen.generation_id, run_id=gen.run_id,
            step_id=gen.step_id, attempt=gen.attempt, account_id=gen.master_account_id,
            tool=self._tool(tx, sha), inputs=gen.request_payload or {},
            deadline_at=gen.deadline_at, platform_run_id=gen.platform_specific_run_id, claim_token=task.token,
        )

    # --- cancel and retry ----------------------------------------------------------------------

    def cancel_tx(self, tx: Tx, run_id: str, account_id: str | None, now: float) -> str:
        run = runs_q.get(tx, run_id, lock=True)
        if run is None or (account_id is not None and run.master_account_id != account_id):
            raise NotFound(run_id)
        if RunStatus(run.status).terminal:
            return str(run.status)
        runs_q.request_cancel(tx, run_id, now)
        events_q.append(tx, run_id, "run.cancel_requested", now)
        self._advance(tx, run_id, _Ctx(now, None, picked_up=False))
        status: str = runs_q.get(tx, run_id).status  # type: ignore[union-attr]
        return status

    def retry_tx(self, tx: Tx, run_id: str, account_id: str | None, now: float) -> None:
        """Run a finished run again from its failed, cancelled and skipped steps; succeeded steps
        keep their outputs and are not executed again."""
        run = runs_q.get(tx, run_id, lock=True)
        if run is None or (account_id is not None and run.master_account_id != account_id):
            raise NotFound(run_id)
        if run.parent_run_id:
            raise Conflict("a nested run is retried through its parent run")
        if run.status not in (RunStatus.FAILED.value, RunStatus.PARTIALLY_COMPLETED.value, RunStatus.CANCELLED.value):
            raise Conflict(
                f"only a failed, partially completed or cancelled run can be retried in place; this one is "
                f"{run.status} (to run it again as a new run, name a step to run again from, or change an input)"
            )
        reset = 0
        for row in runs_q.steps(tx, run_id):
            if row.status != StepStatus.SUCCEEDED.value and row.items_total is not None:
                # a map step whose items were under way goes on from the items that did not succeed
                items_q.reset_unfinished(tx, run_id, row.step_id)
                runs_q.update_step(
                    tx, run_id, row.step_id, tuple(StepStatus), status=StepStatus.RUNNING, items_failed=0,
                    outputs=None, reason=None, error=None, skipped_by_error=False, finished_at=None,
                    next_attempt_at=None,
                )
                reset += 1
            elif row.status != StepStatus.SUCCEEDED.value:
                runs_q.update_step(
                    tx, run_id, row.step_id, tuple(StepStatus), status=StepStatus.PENDING, attempt=0,
                    outputs=None, reason=None, error=None, skipped_by_error=False, finished_at=None,
                    next_attempt_at=None, progress=None, child_run_id=None, using_fallback=False,
                )
                reset += 1
        runs_q.update(
            tx, run_id, status=RunStatus.QUEUED.value, cancel_requested=False, error=None, final_outputs=None,
            finished_at=None, updated_at=now,
            deadline_at=(now + (run.deadline_at - run.started_at)) if run.deadline_at and run.started_at else None,
        )
        events_q.append(tx, run_id, "run.retried", now, stepsReset=reset)
        self._advance(tx, run_id, _Ctx(now, None, picked_up=False))

    def run_job_tx(self, tx: Tx, run_id: str, account_id: str | None) -> tuple[JobDefinition, dict[str, Any], str]:
        """The definition version a run pinned, its inputs and its account (NotFound for another
        account's run)."""
        run = runs_q.get(tx, run_id)
        if run is None or (account_id is not None and run.master_account_id != account_id):
            raise NotFound(run_id)
        job, _ = self._job(tx, run.definition_sha)
        return job, dict(run.job_inputs), str(run.master_account_id)

    def fork_tx(
        self, tx: Tx, run_id: str, account_id: str | None, from_step: str | None, inputs: dict[str, Any],
        origin: dict[str, Any], now: float, seeds: tuple[list[str], list[str]] = ([], []),
    ) -> str:
        """A new run of a finished run's version, reusing every step it need not run again (``replay``);
        ``seeds`` is (the inputs given anew, the seeds among them drawn at random)."""
        return replay.fork_tx(
            self, tx, run_id, account_id, from_step=from_step, inputs=inputs, origin=origin, now=now, seeds=seeds
        )

    # --- webhooks ------------------------------------------------------------------------------

    def webhook_token(self, service: str, generation_id: str) -> str:
        return hmac.new(self.secret, f"{service}:{generation_id}".encode(), sha256).hexdigest()[:32]

    def check_webhook_token(self, service: str, generation_id: str, token: str) -> bool:
        expected = self.webhook_token(service, generation_id).encode()
        return hmac.compare_digest(expected, (token or "").encode("utf-8", "surrogateescape"))


@dataclass
class _FreshRuns:
    """Rows of new runs written in their first planned state (``Engine.submit_many_tx``): one
    multi-row INSERT per table for a whole batch."""

    runs: list[Row] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    generations: list[dict[str, Any]] = field(default_factory=list)
    tasks: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    artifacts: list[tuple[str, dict[str, Any], str, float]] = field(default_factory=list)

    def write(self, tx: Tx) -> set[str]:
        """Insert the rows; returns the runs not written because a concurrent request had taken
        their idempotency keys (nothing of theirs is written)."""
        lost = runs_q.insert_runs(tx, [dict(r) for r in self.runs])

        def kept(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [r for r in rows if r["run_id"] not in lost] if lost else rows

        runs_q.insert_step_rows(tx, kept(self.steps))
        gens_q.insert_many(tx, kept(self.generations))
        tasks_q.enqueue_many(tx, kept(self.tasks))
        events_q.append_many(tx, kept(self.events))
        for account_id, value, run_id, now in self.artifacts:
            if run_id not in lost:
                accounts_q.own_artifact(tx, account_id, value, run_id, now)
        return lost


def _fresh_action(action: plan.Action, tools: Mapping[str, ToolDefinition], job: JobDefinition) -> bool:
    """Whether a new run's first plan can be written straight into its rows (``_FreshRuns``): not
    a nested job, a map step's item or a cached step (which looks its result up first)."""
    if isinstance(action, plan.StartStep):
        step, tool = job.step(action.step_id), tools.get(action.tool_id or "")
        return (
            action.job_id is None and action.item is None and tool is not None and step is not None
            and cache.lifetime(step, tool) is None
        )
    return isinstance(action, plan.StartRun | plan.SkipStep | plan.Wake)


def _finish_of(outcome: Outcome, now: float) -> dict[str, Any]:
    """``generations.finish``'s arguments for a generation its ``submit`` finished."""
    update = outcome.update
    assert update is not None
    completed = update.status is GenerationStatus.COMPLETED
    return {
        "generation_id": outcome.work.generation_id, "status": update.status, "now": now,
        "outputs": update.outputs if completed else None,
        "error": update.error.model_dump() if update.error else None,
        "raw": update.raw, "progress": 1.0 if completed else None, "requested_at": outcome.requested_at,
        "answered_at": outcome.answered_at, "platform_run_id": outcome.platform_run_id,
    }


def _generation_row(run: Any, action: plan.StartStep, tool: ToolDefinition, gen_id: str, now: float) -> dict[str, Any]:
    """The generation a started step makes: the recorded intent to call ``tool``."""
    return {
        "generation_id": gen_id,
        "run_id": run.run_id,
        "step_id": action.step_id,
        "attempt": action.attempt,
        "master_account_id": run.master_account_id,
        "session_id": run.session_id,
        "initiating_event_id": run.initiating_event_id,
        "service_name": tool.service,
        "tool_id": tool.tool_id,
        "status": GenerationStatus.PENDING.value,
        "request_payload": action.inputs,
        "notification_platform": (run.origin or {}).get("platform"),
        "created_at": now,
        "deadline_at": action.deadline_at or now + (tool.timeout_seconds or DEFAULT_TIMEOUT_SECONDS),
        "item_index": action.item,
    }


def _task_row(
    kind: TaskKind, run_id: str, ref_id: str, at: float, priority: int, created_at: float | None = None
) -> dict[str, Any]:
    return {"kind": kind.value, "run_id": run_id, "ref_id": ref_id, "priority": priority, "available_at": at,
            "created_at": at if created_at is None else created_at}


def _event(run_id: str, type_: str, step_id: str | None, now: float, **data: Any) -> dict[str, Any]:
    return {"run_id": run_id, "type": type_, "step_id": step_id, "data": data, "created_at": now}


def _ready_work(task: tasks_q.Task, view: plan.RunView, exclude: frozenset[str] | set[str] = frozenset()) -> EvaluateWork:
    """The ``ready`` steps of a run as ``EvaluateWork`` for ``task``, each seeing the steps'
    statuses and outputs as stored (its dependencies have all finished)."""
    context = {sid: {"status": str(v.status), "outputs": v.outputs or {}} for sid, v in view.steps.items()}
    ready = [s for s in view.job.steps if view.steps[s.step_id].status is StepStatus.READY and s.step_id not in exclude]
    return EvaluateWork(task.task_id, task.token, view.run_id, dict(view.inputs),
                        [(s, view.steps[s.step_id].attempt, context) for s in ready])


def _artifact_values(values: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def walk(v: Any) -> None:
        if ArtifactRef.is_ref(v):
            found.append(v)
        elif isinstance(v, dict):
            for item in v.values():
                walk(item)
        elif isinstance(v, list):
            for item in v:
                walk(item)

    walk(values)
    return found


def _ms(seconds: float) -> int:
    return round(seconds * 1000)
