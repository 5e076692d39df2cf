"""Fork and replay: a new run of a finished run's definition version that takes over the outcome of
every step it does not have to run again.

Which steps run again is decided by ``steps_to_run_again`` (pure): the step named by ``--from``,
the steps that read a changed job input, the steps that did not end well (failed, cancelled,
skipped past an error), and everything downstream of those. Every other step keeps its outcome:
succeeded steps their outputs, steps skipped by a condition or a missing source their skip. The
transaction (``fork_tx``) copies those outcomes into the new run's step rows, links the run to its
origin and each reused step to the run it actually ran in, and starts the rest.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from toolweave.engine.conditions import ConditionError, compile_condition
from toolweave.engine.mapping import MappingError, template_job_access
from toolweave.model.definitions import InputMapping, JobDefinition, Step
from toolweave.model.graph import descendants
from toolweave.model.status import RunStatus, StepStatus
from toolweave.store import events as events_q
from toolweave.store import runs as runs_q
from toolweave.store.db import Tx

if TYPE_CHECKING:
    from toolweave.engine.transitions import Transitions

REUSABLE = frozenset({StepStatus.SUCCEEDED.value, StepStatus.SKIPPED.value})
"""Outcomes a fork may take over (a skip only when it was not an error skipped past)."""


class BadRequest(ValueError):
    """A request that names something that does not exist in the run (a step): front ends answer 422."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _mapping_reads(mapping: InputMapping) -> frozenset[str] | None:
    """The job inputs one mapping reads (None: it reads ``job`` in a way that cannot be told)."""
    if mapping.source_job_input is not None:
        return frozenset({mapping.source_job_input})
    if mapping.template is not None:
        try:
            names, dynamic = template_job_access(mapping.template)
        except MappingError:
            return None
        return None if dynamic else names
    return frozenset()


def job_inputs_read(step: Step) -> frozenset[str] | None:
    """Every job input a step reads (mappings, templates, its condition); None when a template or the
    condition reads ``job`` dynamically, so that any changed input must count."""
    names: set[str] = {s.source_job_input for s in step.value_sources if s.source_job_input is not None}
    for mapping in step.input_mappings:
        found = _mapping_reads(mapping)
        if found is None:
            return None
        names |= found
    if step.condition:
        try:
            compiled = compile_condition(step.condition)
        except ConditionError:
            return None
        if compiled.dynamic_job:
            return None
        names |= compiled.job_refs
    return frozenset(names)


def steps_to_run_again(
    job: JobDefinition,
    outcomes: Mapping[str, tuple[str, bool]],
    *,
    from_step: str | None,
    changed_inputs: Iterable[str],
) -> set[str]:
    """The steps a fork runs again. ``outcomes`` maps each step id to its origin's ``(status,
    skipped_by_error)``. A step runs again when it is ``from_step``, reads a changed job input, did
    not end in a reusable outcome, or depends (directly or not) on such a step."""
    changed = set(changed_inputs)
    roots: set[str] = set()
    for step in job.steps:
        sid = step.step_id
        status, by_error = outcomes.get(sid, (StepStatus.PENDING.value, False))
        if sid == from_step or status not in REUSABLE or by_error:
            roots.add(sid)
            continue
        if changed:
            read = job_inputs_read(step)
            if read is None or read & changed:
                roots.add(sid)
    return descendants(job.steps, roots)


def fork_tx(
    engine: Transitions,
    tx: Tx,
    run_id: str,
    account_id: str | None,
    *,
    from_step: str | None,
    inputs: dict[str, Any],
    origin: dict[str, Any],
    now: float,
    seeds: tuple[list[str], list[str]] = ([], []),
    cost: tuple[Decimal | None, bool] = (None, False),
) -> str:
    """Create the fork of ``run_id`` (inputs already prepared) and start it; returns its id.

    NotFound for another account's run; Conflict for a run that has not ended, a nested run, or a
    fork that would run nothing; BadRequest for an unknown ``from_step``.
    """
    from toolweave.engine.work import Conflict, NotFound, SubmitRequest, _Ctx

    run = runs_q.get(tx, run_id)
    if run is None or (account_id is not None and run.master_account_id != account_id):
        raise NotFound(run_id)
    if run.parent_run_id:
        raise Conflict("a nested run is run again through its parent run")
    if not RunStatus(run.status).terminal:
        raise Conflict(f"the run is still {run.status}; wait for it to end (or cancel it) before running it again")
    job, _ = engine._job(tx, run.definition_sha)
    step_ids = [s.step_id for s in job.steps]
    if from_step is not None and from_step not in step_ids:
        raise BadRequest("fromStep", f"the job {job.job_id!r} has no step {from_step!r} (its steps: {', '.join(step_ids)})")
    rows = {r.step_id: r for r in runs_q.steps(tx, run_id)}
    changed = sorted(k for k in set(inputs) | set(run.job_inputs) if inputs.get(k) != run.job_inputs.get(k))
    again = steps_to_run_again(
        job, {sid: (r.status, bool(r.skipped_by_error)) for sid, r in rows.items()},
        from_step=from_step, changed_inputs=changed,
    )
    if not again:
        raise Conflict(
            f"the run {run.status} and nothing in it would run again; name a step to run again from "
            "(--from STEP, fromStep) or change an input"
        )
    given, drawn = seeds
    random_inputs = sorted((set(run.random_inputs or []) - set(given)) | set(drawn))
    req = SubmitRequest(
        job=job, tools={}, nested_jobs={}, inputs=inputs, account_id=run.master_account_id, origin=origin,
        session_id=run.session_id, priority=run.priority, random_inputs=random_inputs,
    )
    admission = engine.gate.open(tx, [run.master_account_id], now)  # limits and credits, as for a submit
    place = admission.admit(run.master_account_id, cost[0], cost[1])
    new_id = engine._create_run(tx, job, dict(run.tool_shas), req, now, parent=None, place=place)
    assert new_id is not None  # a fork has no idempotency key, so its insert cannot yield to another's
    admission.held_by(run.master_account_id, new_id, place)
    admission.write(tx)
    runs_q.update(tx, new_id, forked_from_run_id=run_id, forked_from_step=from_step)
    reused = [sid for sid in step_ids if sid not in again and sid in rows]
    for sid in reused:
        row = rows[sid]
        runs_q.update_step(
            tx, new_id, sid, (StepStatus.PENDING,),
            status=row.status, attempt=row.attempt, tool_id=row.tool_id, using_fallback=row.using_fallback,
            outputs=row.outputs, reason=row.reason, progress=row.progress,
            started_at=now, finished_at=now, reused_from_run_id=row.reused_from_run_id or run_id,
            items_total=row.items_total, items_succeeded=row.items_succeeded, items_failed=row.items_failed,
        )
    events_q.append(
        tx, new_id, "run.forked", now, forkedFrom=run_id, fromStep=from_step, changedInputs=changed,
        reusedSteps=reused, stepsToRun=[sid for sid in step_ids if sid in again],
    )
    engine._advance(tx, new_id, _Ctx(now, None, picked_up=False))  # queued until a worker claims it
    return new_id
