"""A run's transitions: the planner's view of a run read from the store (``_load_view``), its
decision written (``_apply``), each status change a compare-and-set from the states allowed before
it; steps started (a generation and its ``dispatch`` task, a nested run, a cache hit) and stopped,
ready steps handed to evaluation, the run finished and its notifications written (``run_end``).
Which references among a step's outputs grant its account the artifact is ``grants``.

A transaction that starts steps may lease their ``dispatch`` tasks straight to the calling worker
(``Lease``), which runs them at once: a synchronous step's successor starts without a round trip
through the queue.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from toolweave.accounting.gate import UNDER_WAY_AHEAD, Place
from toolweave.engine import ask_steps, cache, items, plan, run_end
from toolweave.engine.actions import StepEvaluation
from toolweave.engine.evaluate import EvaluateWork
from toolweave.engine.grants import made_media
from toolweave.engine.plan_rules import with_last_poll, work_sending
from toolweave.engine.snapshots import Snapshots
from toolweave.engine.step_views import Statuses, StepViews, unfinished, wanted_rows
from toolweave.engine.work import (
    DEFAULT_TIMEOUT_SECONDS,
    DispatchWork,
    Lease,
    SubmitRequest,
    Work,
    _Ctx,
)
from toolweave.model.definitions import JobDefinition, Step, ToolDefinition
from toolweave.model.status import GenerationStatus, RunStatus, StepStatus, TaskKind
from toolweave.store import accounts as accounts_q
from toolweave.store import cache as cache_q
from toolweave.store import events as events_q
from toolweave.store import generations as gens_q
from toolweave.store import items as items_q
from toolweave.store import runs as runs_q
from toolweave.store import tasks as tasks_q
from toolweave.store.db import Tx
from toolweave.store.ids import new_id

_UNFINISHED_STEP = (
    StepStatus.PENDING, StepStatus.READY, StepStatus.RUNNING, StepStatus.WAITING_RETRY, StepStatus.WAITING_INPUT,
)


def _work_status_of_child(status: str) -> GenerationStatus | None:
    return {
        RunStatus.COMPLETED.value: GenerationStatus.COMPLETED,
        RunStatus.PARTIALLY_COMPLETED.value: GenerationStatus.COMPLETED,
        RunStatus.FAILED.value: GenerationStatus.FAILED,
        RunStatus.CANCELLED.value: GenerationStatus.CANCELLED,
    }.get(status)


class Transitions(Snapshots):
    """Advancing runs: what every other part of the engine builds on."""

    def _create_run(
        self,
        tx: Tx,
        job: JobDefinition,
        tool_shas: dict[str, str],
        req: SubmitRequest,
        now: float,
        parent: tuple[str, str] | None,
        place: Place | None = None,
        run_id: str | None = None,
    ) -> str | None:
        """Insert the run and its steps; None when its idempotency key is taken already. ``place``:
        what the gate decided for a new top-level run (a nested run takes its parent's, from
        ``req``); ``run_id``: its id when the caller made it already (a nested run's)."""
        job_sha = self._snapshot(tx, "job", job, now)
        run_id = run_id or new_id("run_")
        credit_run_id = (run_id if place.credits else None) if place is not None else req.credit_run_id
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
            credit_run_id=credit_run_id,
            budget=req.budget if parent is None else None,
            queue_at=place.queue_at if place is not None else (req.queue_at or now),
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
        rows: runs_q.StepRows | None = None, touched: frozenset[str] | None = None,
    ) -> tuple[Any, plan.RunView, runs_q.StepRows] | None:
        """The run (locked) and the planner's view of it; ``run`` and its step rows with their work
        (``rows``) when the caller read them already; ``touched``: the steps whose work ended (the
        planner decides only those and what follows). A step's view is made when the planner first
        reads it (``_StepViews``); those of map steps and nested jobs, which read more rows, and of
        steps that ask, which read their question, are made here."""
        if run is None:
            run = runs_q.lock_state(tx, run_id)
        if run is None:
            return None
        job, order = self._job(tx, run["definition_sha"])
        graph = plan.graph_of(job)
        step_rows = runs_q.step_rows(tx, run_id, wanted_rows(graph, touched)) if rows is None else rows
        views = StepViews(step_rows)
        for sid in graph.nested:
            row = step_rows.get(sid)
            if row is not None and row["status"] == StepStatus.RUNNING.value and row["child_run_id"]:
                child = runs_q.get(tx, row["child_run_id"])
                if child is not None:
                    nested = views[sid]
                    nested.child_waiting = child.status == RunStatus.WAITING_INPUT.value
                    nested.work_status = _work_status_of_child(child.status)
                    nested.work_outputs = child.final_outputs
                    nested.work_error = child.error
        for sid in graph.maps:
            row = step_rows.get(sid)
            spec = graph.steps[sid].map
            if row is not None and spec is not None and row["items_total"] is not None:
                mapped = views[sid]
                mapped.map = items.map_view(tx, run_id, row, spec)
                # its items' nested runs wait for a person: this run waits too (``plan.waits``)
                mapped.child_waiting = mapped.map.children_waiting
        if graph.asks:
            ask_steps.attach(tx, {sid: step_rows[sid] for sid in graph.asks if sid in step_rows}, views)
        tools: dict[str, ToolDefinition] = {}
        jobs: dict[str, JobDefinition] = {}
        for tid, sha in run["tool_shas"].items():
            if tid.startswith("job:"):
                jobs[tid[4:]] = self._job(tx, sha)[0]
            else:
                tools[tid] = self._tool(tx, sha)
        view = plan.RunView(
            run_id=run_id,
            status=RunStatus(run["status"]),
            job=job,
            inputs=self._inputs(tx, run),
            steps=views,
            tools=tools,
            jobs=jobs,
            evaluations=evaluations or {},
            cancel_requested=run["cancel_requested"],
            deadline_at=run["deadline_at"],
            order=order,
            budget=_budget(run["budget"], run["cost_usd"]),
            touched=touched,
            unfinished=unfinished(step_rows) if touched is not None else None,
            statuses=Statuses(step_rows.statuses),
        )
        return run, view, step_rows

    def _advance(
        self, tx: Tx, run_id: str, ctx: _Ctx, run: Any = None, evaluations: Mapping[str, StepEvaluation] | None = None,
        rows: runs_q.StepRows | None = None, touched: frozenset[str] | None = None,
    ) -> None:
        """Decide the run and write what the planner says. ``touched``: the steps whose work ended
        (a generation, a nested run) — the planner then decides only those and what follows from
        them; None decides every step (timers, answers, evaluations, cancels, retries).

        A start the store refused (the step was started already: the rows decided from were read
        before it was) makes the run decided again from its rows as they are, once; on PostgreSQL a
        pipelined transaction finds the refusal at its commit and runs again unpipelined (``Tx.expect``),
        where it is refused as it runs.

        A nested run this decision starts may end (or wait for a person) at once: the run is then
        decided again here, once its actions are written (``_advance_parent``), not from inside
        the nested run's transition."""
        ctx.advanced.add(run_id)
        redecided = False
        outermost = run_id not in ctx.deciding
        ctx.deciding.add(run_id)
        try:
            while True:
                loaded = self._load_view(tx, run_id, run, evaluations, rows, touched)
                if loaded is None:
                    return
                run, view, step_rows = loaded
                actions = plan.decide(view, ctx.now)
                ctx.again = False
                refused = ctx.refused
                if not actions:
                    return
                again = self._apply(tx, run, view, step_rows, actions, ctx) or ctx.again
                if ctx.refused > refused and not redecided:
                    redecided = again = True
                if run_id in ctx.redecide:  # a nested run it started ended, or waits, already
                    ctx.redecide.discard(run_id)
                    again = True
                if not again:
                    return
                # a map step completed, a cache hit answered a step, a start was refused, or a nested
                # run changed: decide again
                run = rows = touched = None
        finally:
            if outermost:
                ctx.deciding.discard(run_id)

    def _advance_parent(self, tx: Tx, parent_id: str, ctx: _Ctx, touched: frozenset[str] | None) -> None:
        """A nested run changed its parent's step (it ended, or waits for a person): the parent is
        decided again now — unless a decision of the parent is being written further up this call
        (it started the nested run, which ended as it started), which then decides it again once
        its actions are written (``_advance``). A map step over nested runs that end at once is so
        a loop, not a recursion as deep as its items (Python's limit was hit at about 400)."""
        if parent_id in ctx.deciding:
            ctx.redecide.add(parent_id)
            return
        self._advance(tx, parent_id, ctx, touched=touched)

    def _apply(
        self, tx: Tx, run: Any, view: plan.RunView, step_rows: Mapping[str, Any], actions: list[plan.Action], ctx: _Ctx
    ) -> bool:
        """Write the planner's actions; True when a map step completed (decide again)."""
        now = ctx.now
        run_id = run["run_id"]
        evs: list[dict[str, Any]] = []
        writes = items.ItemWrites()

        def event(type_: str, step_id: str | None = None, **data: Any) -> None:
            evs.append({"run_id": run_id, "type": type_, "step_id": step_id, "data": data, "created_at": now})

        def ended_map(step_id: str, reason: str) -> None:
            step = plan.graph_of(view.job).steps.get(step_id)
            if step is not None and step.map is not None:
                items.close(self, tx, run_id, step_id, reason, ctx)

        evaluating: list[plan.Evaluate] = []
        for action in actions:
            if isinstance(action, plan.OpenMap | plan.FinishItem | plan.CompleteMap) or (
                isinstance(action, plan.RetryStep | plan.ExpireWork) and action.item is not None
            ):
                items.apply(self, tx, run, view, action, ctx, writes, event)
            elif isinstance(action, plan.AskStep | plan.ExpireQuestion | plan.SetWaiting):
                ask_steps.apply(self, tx, run, view, step_rows, action, ctx, event)
            elif isinstance(action, plan.StartRun):
                if ctx.picked_up and runs_q.set_status(tx, run_id, RunStatus.RUNNING, now, started_at=now):
                    event("run.started")
            elif isinstance(action, plan.StartStep):
                self._start_step(tx, run, view, step_rows[action.step_id], action, ctx, event)
            elif isinstance(action, plan.CompleteStep):
                row = step_rows[action.step_id]
                if runs_q.update_step(
                    tx, run_id, action.step_id, (StepStatus.RUNNING, StepStatus.WAITING_INPUT),
                    status=StepStatus.SUCCEEDED, outputs=action.outputs, finished_at=now, progress=1.0, error=None,
                ):
                    event("step.succeeded", action.step_id, outputs=action.outputs, attempt=row["attempt"],
                          durationMs=_ms(now - (row["started_at"] or now)))
            elif isinstance(action, plan.SkipStep):
                if runs_q.update_step(
                    tx, run_id, action.step_id,
                    _UNFINISHED_STEP, status=StepStatus.SKIPPED, reason=action.reason, error=action.error,
                    skipped_by_error=action.by_error, finished_at=now,
                ):
                    ask_steps.close_waiting(tx, step_rows[action.step_id], now)
                    event("step.skipped", action.step_id, reason=action.reason, byError=action.by_error)
                    ended_map(action.step_id, action.reason)
            elif isinstance(action, plan.FailStep):
                if runs_q.update_step(
                    tx, run_id, action.step_id,
                    _UNFINISHED_STEP, status=StepStatus.FAILED, reason=action.reason, error=action.error, finished_at=now,
                ):
                    ask_steps.close_waiting(tx, step_rows[action.step_id], now)
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
                    _UNFINISHED_STEP, status=StepStatus.CANCELLED, reason=action.reason, finished_at=now,
                ):
                    ask_steps.close_waiting(tx, row, now)
                    event("step.cancelled", action.step_id, reason=action.reason)
                    ended_map(action.step_id, action.reason)
                    if action.was_running:
                        self._stop_work(tx, row, GenerationStatus.CANCELLED, action.reason, ctx)
            elif isinstance(action, plan.ExpireWork):
                self._stop_work(tx, step_rows[action.step_id], GenerationStatus.TIMEOUT, "timed out", ctx)
            elif isinstance(action, plan.FinishRun):
                run_end.finish_run(self, tx, run, action, ctx, event)
            elif isinstance(action, plan.Evaluate):
                # as a start (``_start_step``): a step at this attempt already is not made ready again
                if runs_q.start_attempt(
                    tx, run_id, action.step_id, action.attempt, status=StepStatus.READY, tool_id=action.tool_id,
                    using_fallback=action.using_fallback, next_attempt_at=None,
                ):
                    evaluating.append(action)
                else:
                    ctx.refused += 1
            elif isinstance(action, plan.Wake):
                if not (action.keep_earlier and tasks_q.advance_due_by(tx, run_id, action.at)):
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
            tx, run.run_id, now=ctx.now, at=_under_way_at(run, ctx.now), priority=run.priority,
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

    def _start_step(
        self, tx: Tx, run: Any, view: plan.RunView, row: Any, action: plan.StartStep, ctx: _Ctx, event: Any
    ) -> None:
        """Start an attempt of a step, or of one item of a map step (``action.item``). Its row is
        compare-and-set to the attempt (``runs_q.NEW_ATTEMPT``): a step, or an item, that is at
        that attempt already (started by a decision made from rows read before it was) or finished
        does not start again; the refusal is counted in ``ctx.refused`` and the run decided again
        from its rows as they are (``_advance``)."""
        now = ctx.now
        item = action.item

        def claim(**values: Any) -> bool:
            if item is None:
                claimed = runs_q.start_attempt(tx, run["run_id"], action.step_id, action.attempt, **values)
            else:
                claimed = items_q.start(tx, run["run_id"], action.step_id, item, action.attempt, **values)
            if not claimed:
                ctx.refused += 1
            return claimed

        started = "step.started" if item is None else "item.started"
        at = {} if item is None else {"item": item}
        if action.job_id:
            nested, _ = self._job(tx, run["tool_shas"][f"job:{action.job_id}"])
            req = SubmitRequest(
                job=nested, tools={}, nested_jobs={}, inputs=action.inputs, account_id=run["master_account_id"],
                origin=run["origin"], session_id=run["session_id"], initiating_event_id=run["initiating_event_id"],
                priority=run["priority"], credit_run_id=run["credit_run_id"], queue_at=run["queue_at"],
            )
            child_id = new_id("run_")
            if not claim(  # before the child is made: a refused start leaves no run behind
                status=StepStatus.RUNNING, child_run_id=child_id, started_at=now, progress=0.0, next_attempt_at=None,
            ):
                return
            made = self._create_run(
                tx, nested, run["tool_shas"], req, now, parent=(run["run_id"], action.step_id), run_id=child_id,
            )
            assert made == child_id  # a child run has no idempotency key
            event(started, action.step_id, attempt=action.attempt, childRunId=child_id, jobId=action.job_id, **at)
            self._advance(tx, child_id, ctx)
            return
        assert action.tool_id is not None
        tool = view.tools.get(action.tool_id)
        if tool is None:
            raise RuntimeError(f"run {run['run_id']} has no snapshot of tool {action.tool_id}")
        gen_id = new_id("gen_")
        history = {"generation_ids": [*(row["generation_ids"] or []), gen_id]} if item is None else {}
        if not claim(
            status=StepStatus.RUNNING, tool_id=action.tool_id,
            using_fallback=action.using_fallback, generation_id=gen_id, started_at=now, progress=0.0,
            next_attempt_at=None, child_run_id=None, **history,
        ):
            return
        generation = _generation_row(run, action, tool, gen_id, now)
        deadline = generation["deadline_at"]
        cached = self._cache_plan(run, plan.graph_of(view.job).steps.get(action.step_id), tool, action)
        if cached is not None:
            key, seconds = cached
            hit = cache_q.find(tx, run["master_account_id"], key, now)
            if hit is not None:  # the same tool on the same inputs made these outputs: no call, no cost
                generation.update(
                    status=GenerationStatus.COMPLETED.value, outputs=hit.outputs, cost_usd=Decimal(0),
                    cached_from=hit.generation_id, request_timestamp=now, response_timestamp=now, duration_ms=0,
                    progress=1.0,
                )
                gens_q.insert(tx, **generation)
                for value in made_media(hit.outputs, tool.output_schema):  # linked to this run too (per account)
                    accounts_q.own_artifact(tx, run["master_account_id"], value, run["run_id"], now)
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
                tx, TaskKind.DISPATCH, run_id=run["run_id"], ref_id=gen_id, now=now, at=_under_way_at(run, now),
                priority=run["priority"],
            )
        else:
            lease.used += 1
            work = DispatchWork(
                task_id=0, task_attempts=1, generation_id=gen_id, run_id=run["run_id"], step_id=action.step_id,
                attempt=action.attempt, account_id=run["master_account_id"], tool=tool, inputs=action.inputs,
                deadline_at=deadline,
            )
            ctx.dispatches.append(work)
            tasks_q.enqueue_leased(
                tx, TaskKind.DISPATCH, run_id=run["run_id"], ref_id=gen_id, now=now, priority=run["priority"],
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
        tool_sha = (run["tool_shas"] or {}).get(tool.tool_id)
        if seconds is None or tool_sha is None or cache.reads_random(step, run["random_inputs"] or ()):
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
        error: dict[str, Any] = {"message": reason, "retryable": False}
        if status is GenerationStatus.TIMEOUT and work_sending(gen.status, gen.sent_at, gen.platform_specific_run_id):
            error = {"message": f"{reason} with its request sent and no outcome recorded (it may have been taken "
                                "and paid for)", "retryable": False, "code": "unknown_outcome",
                     "details": {"cause": "timeout", "maybePaid": True}}  # (``plan_rules.deadline_error``)
        elif status is GenerationStatus.TIMEOUT:  # a running generation's error is its last poll's failure
            error = {"message": with_last_poll(reason, gen.error), "retryable": True, "code": "timeout"}
        if gens_q.set_status(
            tx, gen.generation_id, status, error=error,
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


def _under_way_at(run: Any, now: float) -> float:
    """When a task of a run under way is due: just before its run's place in the claiming order
    (``accounting.gate``), so ahead of every run not yet started; never later than now."""
    place = run["queue_at"] if run["queue_at"] is not None else run["created_at"]
    return float(min(now, place - UNDER_WAY_AHEAD))


def _budget(stored: Mapping[str, Any] | None, spent: Decimal | None) -> plan.Budget | None:
    """The planner's view of a run's cost ceiling (``runs.budget``)."""
    if not stored or stored.get("ceiling") is None:
        return None
    steps = {k: Decimal(str(v)) for k, v in (stored.get("steps") or {}).items()}
    return plan.Budget(Decimal(str(stored["ceiling"])), Decimal(spent or 0), steps)


def _generation_row(run: Any, action: plan.StartStep, tool: ToolDefinition, gen_id: str, now: float) -> dict[str, Any]:
    """The generation a started step makes: the recorded intent to call ``tool``."""
    return {
        "generation_id": gen_id,
        "run_id": run["run_id"],
        "step_id": action.step_id,
        "attempt": action.attempt,
        "master_account_id": run["master_account_id"],
        "session_id": run["session_id"],
        "initiating_event_id": run["initiating_event_id"],
        "service_name": tool.service,
        "tool_id": tool.tool_id,
        "status": GenerationStatus.PENDING.value,
        "request_payload": action.inputs,
        "notification_platform": (run["origin"] or {}).get("platform"),
        "created_at": now,
        "deadline_at": action.deadline_at or now + (tool.timeout_seconds or DEFAULT_TIMEOUT_SECONDS),
        "item_index": action.item,
    }


def _ready_work(task: tasks_q.Task, view: plan.RunView, exclude: frozenset[str] | set[str] = frozenset()) -> EvaluateWork:
    """The ``ready`` steps of a run as ``EvaluateWork`` for ``task``, each seeing the steps'
    statuses and outputs as stored (its dependencies have all finished)."""
    context = {sid: {"status": str(v.status), "outputs": v.outputs or {}} for sid, v in view.steps.items()}
    ready = [s for s in view.job.steps if view.steps[s.step_id].status is StepStatus.READY and s.step_id not in exclude]
    return EvaluateWork(task.task_id, task.token, view.run_id, dict(view.inputs),
                        [(s, view.steps[s.step_id].attempt, context) for s in ready])


def _ms(seconds: float) -> int:
    return round(seconds * 1000)
