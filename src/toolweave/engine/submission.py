"""Submission: new runs created with their steps and first plan, many per transaction, with
idempotency keys; a run of a single tool as a one-step job (``tool_job``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from toolweave.accounting.gate import Place, Refused
from toolweave.engine import cache, plan
from toolweave.engine.grants import _artifact_values
from toolweave.engine.transitions import Transitions, _budget, _generation_row
from toolweave.engine.work import SubmitRequest, _Ctx
from toolweave.model.definitions import InputMapping, JobDefinition, JobOutput, Step, ToolDefinition
from toolweave.model.status import RunStatus, StepStatus, TaskKind
from toolweave.store import accounts as accounts_q
from toolweave.store import events as events_q
from toolweave.store import generations as gens_q
from toolweave.store import runs as runs_q
from toolweave.store import tasks as tasks_q
from toolweave.store.codec import _encode
from toolweave.store.db import Row, Tx
from toolweave.store.ids import new_id


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


class Submission(Transitions):
    """Creating runs (``submit_tx``, ``submit_many_tx``)."""

    def submit_tx(self, tx: Tx, req: SubmitRequest, now: float) -> tuple[str, bool]:
        """Create a run with its steps and start what can start. Returns (run_id, created): with an
        idempotency key the account used before (or a concurrent request is using: the insert
        waits for it on PostgreSQL), the run that key made and False. Raises ``Refused`` (over a
        limit, not enough credits) with nothing written."""
        found = self.submit_many_tx(tx, [req], now)[0]
        if isinstance(found, Refused):
            raise found
        return found

    def submit_many_tx(
        self, tx: Tx, reqs: Sequence[SubmitRequest], now: float, planned: Sequence[PlannedRun | None] | None = None,
    ) -> list[tuple[str, bool] | Refused]:
        """Create many runs in one transaction (bulk submission; ``submit_tx`` is a batch of one).
        Returns (run_id, created) per request, in order: a request whose idempotency key names a
        run already (stored, earlier in the batch, or made by a concurrent request: the insert
        waits for it on PostgreSQL) gets that run and False; a request refused by the account's
        limits or credits (``accounting.gate``) gets the ``Refused`` and nothing is written for it.

        A new run is planned before it is written: when its first plan only starts tools, skips
        steps or sets a timer (``_FreshRuns``), its rows go in already in that state, with one
        multi-row INSERT per table for the whole batch and no UPDATE. Any other run (a nested job,
        one that ends at once) is created and then advanced like any run. ``planned``: the
        requests' first plans made before the transaction (``plan_submits`` with the same ``now``),
        so that the write lock is not held while the planner runs; without it they are made here.
        What the transaction reads — idempotency keys, limits, credits and places, the stored
        snapshots — is decided here either way."""
        if planned is None:
            planned = self.plan_submits(reqs, now)
        if len(planned) != len(reqs):
            raise ValueError(f"{len(planned)} plans for {len(reqs)} requests")
        results: list[tuple[str, bool] | Refused] = []
        known = self._runs_by_key(tx, reqs)
        ensured: set[str] = set()
        fresh = _FreshRuns()
        admission = self.gate.open(tx, [r.account_id for r in reqs], now)
        for req, first_plan in zip(reqs, planned, strict=True):
            key = (req.account_id, req.idempotency_key) if req.idempotency_key else None
            if key is not None and key in known:
                results.append((known[key], False))
                continue
            try:
                place = admission.admit(req.account_id, req.estimate, req.estimate_unknown)
            except Refused as refused:  # over a limit, or not enough credits: nothing of this run
                results.append(refused)
                continue
            if req.account_id not in ensured:
                accounts_q.ensure(tx, req.account_id, req.account_id, now)
                ensured.add(req.account_id)
            tool_shas = {tid: self._snapshot(tx, "tool", t, now) for tid, t in req.tools.items()}
            for jid, nested in req.nested_jobs.items():
                tool_shas[f"job:{jid}"] = self._snapshot(tx, "job", nested, now)
            run_id: str | None = None
            if first_plan is not None:
                self._snapshot(tx, "job", req.job, now)
                run_id = fresh.add(first_plan, place)
            else:
                run_id = self._create_run(tx, req.job, tool_shas, req, now, parent=None, place=place)
                if run_id is None:  # a concurrent request with the same key won
                    results.append((self._key_owner(tx, req), False))
                    continue
                self._advance(tx, run_id, _Ctx(now, None, picked_up=False))
            admission.held_by(req.account_id, run_id, place)
            if key is not None:
                known[key] = run_id
            results.append((run_id, True))
        lost = fresh.write(tx)
        admission.write(tx, lost)
        if lost:  # runs whose key a concurrent request took first: theirs is the run
            for index, found in enumerate(results):
                if isinstance(found, tuple) and found[0] in lost:
                    results[index] = (self._key_owner(tx, reqs[index]), False)
        return results

    def plan_submits(self, reqs: Sequence[SubmitRequest], now: float, *, encoded: bool = False) -> list[PlannedRun | None]:
        """Each request's first plan as of ``now`` and the rows it writes (``_plan_fresh``), made
        without the store: a transaction (``submit_many_tx``) may take them. Nothing in them
        depends on what that transaction reads but the run's place (``_FreshRuns.add``).
        ``encoded``: the rows' values already as parameters (JSON columns as text, ``codec``), for
        SQLite; PostgreSQL's multi-row writes want JSON columns as values (``multirow``)."""
        plans = [self._plan_fresh(req, now) for req in reqs]
        return [p.encoded() if p is not None else None for p in plans] if encoded else plans

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

    def _plan_fresh(self, req: SubmitRequest, now: float) -> PlannedRun | None:
        """Plan a new run before it is written and make its rows in their planned state (all but
        its place, ``_FreshRuns.add``); None when the first plan does more than start tools, skip
        steps and set a timer. Reads no store: the definitions are the request's own (the same
        content as their snapshots, by hash), parsed once per process."""
        job_sha, _ = self._content(req.job)
        job, order = self._jobs.get(job_sha) or (req.job, tuple(plan.topological_order(req.job)))
        self._jobs.setdefault(job_sha, (job, order))
        tool_shas = {tid: self._content(t)[0] for tid, t in req.tools.items()}
        for jid, nested in req.nested_jobs.items():
            tool_shas[f"job:{jid}"] = self._content(nested)[0]
        tools = {tid: self._tools.setdefault(tool_shas[tid], t) for tid, t in req.tools.items()}
        run_id = new_id("run_")
        deadline = (now + job.timeout_seconds) if job.timeout_seconds else None
        view = plan.RunView(
            run_id=run_id, status=RunStatus.QUEUED, job=job, inputs=req.inputs,
            steps={s.step_id: plan.StepView(s.step_id) for s in job.steps}, tools=tools, deadline_at=deadline,
            order=order, budget=_budget(req.budget, Decimal(0)),
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
            credit_run_id=None, budget=req.budget, queue_at=None,
        )  # queued: a worker's claim of its first dispatch makes it running (``_claim``)
        planned = PlannedRun(run)
        steps: dict[str, dict[str, Any]] = {
            s.step_id: {
                "run_id": run_id, "step_id": s.step_id, "position": i, "status": StepStatus.PENDING.value,
                "attempt": 0, "tool_id": None, "using_fallback": False, "generation_id": None,
                "generation_ids": [], "reason": None, "error": None, "skipped_by_error": False, "progress": None,
                "started_at": None, "finished_at": None,
            }
            for i, s in enumerate(job.steps)
        }
        events = planned.events
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
                planned.generations.append(_generation_row(run, action, tool, gen_id, now))
                # due at the run's place, which the transaction decides (``_FreshRuns.add``)
                planned.dispatches.append(_task_row(TaskKind.DISPATCH, run_id, gen_id, now, req.priority,
                                                    created_at=now))
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
                planned.timers.append(_task_row(TaskKind.ADVANCE, run_id, run_id, action.at, 0, created_at=now))
        planned.steps.extend(steps.values())
        planned.artifacts.extend((req.account_id, value, run_id, now) for value in _artifact_values(req.inputs))
        return planned


@dataclass
class PlannedRun:
    """A new run's rows in its first planned state (``Submission.plan_submits``), all but its place
    in the claiming order and its credit hold, which its transaction decides (``_FreshRuns.add``).
    Never changed once made: a transaction that runs again takes the same rows."""

    run: Row
    steps: list[dict[str, Any]] = field(default_factory=list)
    generations: list[dict[str, Any]] = field(default_factory=list)
    dispatches: list[dict[str, Any]] = field(default_factory=list)
    """Dispatch tasks, due at the run's place."""
    timers: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    artifacts: list[tuple[str, dict[str, Any], str, float]] = field(default_factory=list)

    def encoded(self) -> PlannedRun:
        """The same rows with their values as parameters (``codec._encode``: JSON columns as text)."""
        return PlannedRun(
            Row(_encode(self.run)), [_encode(r) for r in self.steps], [_encode(r) for r in self.generations],
            self.dispatches, self.timers, [_encode(r) for r in self.events], self.artifacts,
        )


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

    def add(self, planned: PlannedRun, place: Place) -> str:
        """Add a planned run's rows at the place the transaction gave it; returns its id."""
        run_id = str(planned.run.run_id)
        self.runs.append(Row({**planned.run, "credit_run_id": run_id if place.credits else None,
                              "queue_at": place.queue_at}))
        self.steps.extend(planned.steps)
        self.generations.extend(planned.generations)
        self.tasks.extend({**task, "available_at": place.queue_at} for task in planned.dispatches)
        self.tasks.extend(planned.timers)
        self.events.extend(planned.events)
        self.artifacts.extend(planned.artifacts)
        return run_id

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


def _task_row(
    kind: TaskKind, run_id: str, ref_id: str, at: float, priority: int, created_at: float | None = None
) -> dict[str, Any]:
    return {"kind": kind.value, "run_id": run_id, "ref_id": ref_id, "priority": priority, "available_at": at,
            "created_at": at if created_at is None else created_at}


def _event(run_id: str, type_: str, step_id: str | None, now: float, **data: Any) -> dict[str, Any]:
    return {"run_id": run_id, "type": type_, "step_id": step_id, "data": data, "created_at": now}
