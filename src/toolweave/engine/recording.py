"""Recording what services report: a batch of ``submit`` outcomes (group commit), an update from
a poll or a stream (``apply_update_tx``), webhooks arriving together (``record_progress``,
``finish_generations_tx``), progress, a generation's end with its cost, artifacts and cache entry.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from toolweave.engine.grants import made_media
from toolweave.engine.transitions import Transitions
from toolweave.engine.work import DEFAULT_POLL_SECONDS, Lease, Outcome, Work, _Ctx
from toolweave.model.credits import MAX_AMOUNT, to_units
from toolweave.model.definitions import CostingModel, RateSource
from toolweave.model.records import RunUpdate
from toolweave.model.status import GenerationStatus, StepStatus, TaskKind
from toolweave.store import accounts as accounts_q
from toolweave.store import cache as cache_q
from toolweave.store import credits as credits_q
from toolweave.store import events as events_q
from toolweave.store import generations as gens_q
from toolweave.store import items as items_q
from toolweave.store import runs as runs_q
from toolweave.store import tasks as tasks_q
from toolweave.store.db import Row, Tx

log = logging.getLogger(__name__)


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


def cost_refusal(cost: Decimal) -> str | None:
    """Why a cost a backend reported cannot be charged or added up (None: it can): it is not a
    number, it is negative (a charge would add credits), or it is more than one ledger entry may
    move (``MAX_AMOUNT``: its units would not fit the ledger's 64-bit columns)."""
    if not cost.is_finite():
        return "it is not a finite number"
    if cost < 0:
        return "it is negative"
    if cost > MAX_AMOUNT:
        return f"it is more than {MAX_AMOUNT}"
    return None


def progress_moves(gen: Row, update: RunUpdate) -> bool:
    """Whether a progress update changes a generation: it has not ended, the update is no repeat,
    and progress only goes forward (an older update arriving late — reordered webhooks — does not)."""
    if GenerationStatus(gen.status).terminal:
        return False
    if update.progress == gen.progress and update.live_status == gen.live_status:
        return False
    return update.progress is None or gen.progress is None or update.progress >= gen.progress


class Recording(Transitions):
    """Recording submissions and updates of generations."""

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
        back with the first of them. The runs take their turns in the order of their ids; a run
        that an earlier turn advanced (a nested run's end advances its parent, a parent that halts
        cancels its nested runs) has changed since the batch read it, and is read again for its
        own turn."""
        tx.by_index()  # every statement here finds its rows by key
        lease = lease.attempt(tx) if lease is not None else None
        results: list[tuple[list[Work], bool]] = [([], False)] * len(outcomes)
        by_run: dict[str, list[int]] = {}
        for index in sorted(range(len(outcomes)), key=lambda i: outcomes[i].work.run_id):
            by_run.setdefault(outcomes[index].work.run_id, []).append(index)
        finished = {i for i, o in enumerate(outcomes) if o.update is not None and o.update.status.terminal}
        ending = sorted({outcomes[i].work.run_id for i in finished})
        # sent together, read after: one round trip on PostgreSQL. Every transaction locks a run
        # before its parts (its tasks too: a cancel holding the run deletes them); this also keeps
        # each run's events in commit order, which readers of new events rely on (watching.EventHub)
        locked = runs_q.lock_states(tx, list(by_run))
        tasks_q.finish_many(tx, [outcomes[i].work.claim for i in finished])
        finishes = sorted(finished)
        finished_rows = gens_q.finish_each(tx, [_finish_of(outcomes[i], now) for i in finishes])
        inputs = runs_q.inputs_of(tx, [r for r in ending if r not in self._run_inputs])
        read_steps = runs_q.steps_with_work_of(tx, ending)  # (on SQLite each run's when it needs them)
        runs = locked()
        applied = {i: row for i, row in zip(finishes, finished_rows(), strict=True) if row is not None}
        for run_id, found in inputs().items():
            self._keep_inputs(run_id, found)
        steps = read_steps() if read_steps is not None else {}
        advanced: set[str] = set()  # the runs the batch's turns advanced so far
        for run_id, group in by_run.items():
            run, rows = runs.get(run_id), steps.get(run_id)
            ended = [i for i in group if i in applied]
            for index in group:
                if index not in finished:
                    results[index] = self._record_submitted(tx, outcomes[index], now)
            if run is None or not ended:
                continue
            if run_id in advanced:  # an earlier turn changed it (its nested run ended): as it is now
                run, rows = runs_q.lock_state(tx, run_id) or run, None  # (locked: it cannot have gone)
            ctx = _Ctx(now, lease, advanced=advanced)
            for index in ended:
                update = outcomes[index].update
                assert update is not None
                self._finished_generation(tx, run, applied[index], update, ctx)
            touched = frozenset(applied[index]["step_id"] for index in ended)  # the planner decides from these
            self._advance(tx, run_id, ctx, run=run, rows=rows, touched=touched)
            results[next(i for i in group if i in finished)] = (ctx.dispatches, False)
        return results

    def finish_generations_tx(
        self, tx: Tx, ends: Sequence[tuple[str, str, RunUpdate]], runs: Mapping[str, Row], now: float
    ) -> list[bool]:
        """Updates that end generations, ``(run id, generation id, update)``, arriving together
        (webhooks): the caller holds the lock of every run (``runs``: their locked rows,
        ``runs_q.lock_states``) and recorded the deliveries. The generations are compare-and-set
        together and the runs' inputs and step rows read with them (one round trip on
        PostgreSQL); then, as ``record_submissions_tx`` does, each run makes one pass of the
        planner for all of its generations that ended (a run an earlier turn advanced read again
        first, as there). Returns for each whether it applied
        (False: the generation had ended already, or its run is not in ``runs``)."""
        order = sorted((i for i in range(len(ends)) if ends[i][0] in runs), key=lambda i: ends[i][0])
        finished_rows = gens_q.finish_each(tx, [_finish_args(ends[i][1], ends[i][2], now) for i in order])
        ending = sorted({ends[i][0] for i in order})
        inputs = runs_q.inputs_of(tx, [r for r in ending if r not in self._run_inputs])
        read_steps = runs_q.steps_with_work_of(tx, ending)
        applied = {i: row for i, row in zip(order, finished_rows(), strict=True) if row is not None}
        for run_id, found in inputs().items():
            self._keep_inputs(run_id, found)
        steps = read_steps() if read_steps is not None else {}
        by_run: dict[str, list[int]] = {}
        for i in order:
            if i in applied:
                by_run.setdefault(ends[i][0], []).append(i)
        advanced: set[str] = set()  # the runs the batch's turns advanced so far
        for run_id, group in by_run.items():
            run, rows, ctx = runs[run_id], steps.get(run_id), _Ctx(now, None, advanced=advanced)
            if run_id in advanced:  # an earlier turn changed it (its nested run ended): as it is now
                run, rows = runs_q.lock_state(tx, run_id) or run, None  # (locked: it cannot have gone)
            for i in group:
                tasks_q.delete_for(tx, ends[i][1], (TaskKind.POLL,))
                self._finished_generation(tx, run, applied[i], ends[i][2], ctx)
            self._advance(tx, run_id, ctx, run=run, rows=rows)
        return [i in applied for i in range(len(ends))]

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
        claim: tasks_q.Claim | None = None,
    ) -> tuple[list[Work], bool]:
        """One update of a generation (a poll, a stream). Returns (dispatches, applied)."""
        ctx = _Ctx(now, lease.attempt(tx) if lease else None)
        if claim is not None:
            tasks_q.finish_many(tx, [claim])
        applied = self._apply_update(tx, run_id, generation_id, update, ctx)
        return ctx.dispatches, applied

    def _apply_update(self, tx: Tx, run_id: str, gid: str, update: RunUpdate, ctx: _Ctx) -> bool:
        run = runs_q.lock_state(tx, run_id)  # every transaction locks the run before its parts
        if run is None:
            return False
        if not update.status.terminal:
            return self._record_progress(tx, run_id, gid, update, ctx.now)
        step_id = self._finish_generation(tx, run, gid, update, ctx)
        if step_id is None:
            return False
        self._advance(tx, run_id, ctx, run=run, touched=frozenset((step_id,)))
        return True

    def _record_progress(self, tx: Tx, run_id: str, gid: str, update: RunUpdate, now: float) -> bool:
        gen = gens_q.get(tx, gid)
        if gen is None or not progress_moves(gen, update):
            return False
        self.record_progress(tx, run_id, gen, update, now, known=False)
        return True

    def record_progress(self, tx: Tx, run_id: str, gen: Row, update: RunUpdate, now: float, *, known: bool) -> None:
        """Write a progress update that moves ``gen`` (``progress_moves``): the generation, its
        step's or its item's progress, the event. ``known``: the caller read ``gen`` in this
        transaction under the run's lock, so the compare-and-sets are queued with the other writes
        (``Tx.expect``) instead of waited for."""
        gid = gen.generation_id
        if known:
            gens_q.set_progress(tx, gid, update.progress, update.live_status)
        else:
            gens_q.set_status(tx, gid, GenerationStatus.PROCESSING, progress=update.progress, live_status=update.live_status)
        if gen.item_index is not None:  # an item's progress; its map step's progress counts items
            items_q.update(tx, run_id, gen.step_id, gen.item_index, (StepStatus.RUNNING,), known=False,
                           progress=update.progress)
            events_q.append(tx, run_id, "item.progress", now, step_id=gen.step_id, item=gen.item_index,
                            progress=update.progress, liveStatus=update.live_status)
            return
        runs_q.update_step(tx, run_id, gen.step_id, (StepStatus.RUNNING,), known=known, progress=update.progress)
        events_q.append(tx, run_id, "step.progress", now, step_id=gen.step_id, progress=update.progress,
                        liveStatus=update.live_status)

    def _finish_generation(self, tx: Tx, run: Any, gid: str, update: RunUpdate, ctx: _Ctx) -> str | None:
        """A terminal update's compare-and-set of the generation, its cost and its artifacts; the
        caller holds the run's lock and advances the run. Its step's id; None when it was terminal
        already."""
        completed = update.status is GenerationStatus.COMPLETED
        row = gens_q.finish(
            tx, gid, update.status, ctx.now,
            outputs=update.outputs if completed else None,
            error=update.error.model_dump() if update.error else None,
            raw=update.raw,
            progress=1.0 if completed else None,
        )
        if row is None:
            return None
        tasks_q.delete_for(tx, gid, (TaskKind.POLL,))
        self._finished_generation(tx, run, row, update, ctx)
        return str(row.step_id)

    def _finished_generation(self, tx: Tx, run: Any, row: Row, update: RunUpdate, ctx: _Ctx) -> None:
        """What follows a generation's end (``row``: what its compare-and-set returned): its cost,
        the artifacts its outputs name, its outputs kept for the cache."""
        now, run_id, gid = ctx.now, run["run_id"], row["generation_id"]
        completed = update.status is GenerationStatus.COMPLETED
        cost = update.cost_usd
        refused = None if cost is None else cost_refusal(cost)
        if refused is not None:  # a backend's nonsense: neither charged nor added up; the costing model's instead
            log.warning("generation %s: a reported cost of %s is refused: %s", gid, cost, refused)
            events_q.append(tx, run_id, "generation.cost_refused", now, step_id=row["step_id"], generationId=gid,
                            reported=str(cost), reason=refused)
            cost = None
        sha = run["tool_shas"].get(row["tool_id"])
        tool = self._tool(tx, sha) if sha else None
        if cost is None and completed:
            model = tool.costing_model if tool is not None else None
            if model is not None:
                cost = generation_cost(model, (row["duration_ms"] or 0) / 1000, update.outputs, self.rates)
                if cost_refusal(cost) is not None:  # (a definition's prices are never below 0; a rate table's?)
                    log.warning("generation %s: its costing model priced it at %s; not charged", gid, cost)
                    cost = None
        if cost:
            gens_q.update(tx, gid, cost_usd=cost)
            runs_q.add_cost(tx, run_id, cost, now)
            if "cost_usd" in run:  # the locked row the caller goes on deciding with: as it is now
                run["cost_usd"] = Decimal(run["cost_usd"] or 0) + cost
            if completed and run["credit_run_id"]:  # a generation that failed is not charged
                credits_q.charge(tx, row["master_account_id"], run["credit_run_id"], gid, row["tool_id"], to_units(cost), now)
            if row["item_index"] is not None:
                items_q.add_cost(tx, run_id, row["step_id"], row["item_index"], cost)
        # the media its tool made (a reference in a JSON answer grants nothing: ``made_media``)
        for value in made_media(update.outputs, tool.output_schema if tool is not None else [], undeclared=tool is not None):
            accounts_q.own_artifact(tx, row["master_account_id"], value, run_id, now)
        if completed and row["cache_key"] and row["cache_seconds"]:
            cache_q.put(
                tx, account_id=row["master_account_id"], key=row["cache_key"], tool_id=row["tool_id"],
                outputs=update.outputs or {}, generation_id=gid, run_id=run_id, now=now,
                expires_at=now + row["cache_seconds"],
            )

    def reschedule_poll_tx(
        self, tx: Tx, claim: tasks_q.Claim, at: float, update: RunUpdate | None, run_id: str, generation_id: str,
        now: float, poll_error: dict[str, Any] | None = None, clear_poll_error: bool = False,
    ) -> None:
        """A poll found the generation still busy (``update``: its progress, if any), or could not
        get an answer (``poll_error``, kept as the running generation's ``error`` for its timeout
        to name; ``clear_poll_error``: a poll answered after one that failed): poll again later."""
        if update is not None:
            self._apply_update(tx, run_id, generation_id, update, _Ctx(now, None))
        if poll_error is not None or clear_poll_error:
            if update is None:
                runs_q.lock_state(tx, run_id)  # every transaction locks the run before its parts
            gens_q.set_poll_error(tx, generation_id, poll_error)
        tasks_q.reschedule(tx, claim, at)

    def finish_task_tx(self, tx: Tx, claim: tasks_q.Claim) -> None:
        tasks_q.finish(tx, claim)

    def mark_sending_tx(self, tx: Tx, claim: tasks_q.Claim, generation_id: str, now: float, expires: float) -> bool:
        """A service is about to send the generation's request (``GenerationContext.sending``):
        mark it (``generations.sent_at``) if ``claim`` still holds its dispatch task, renewing the
        lease to ``expires`` so that no other worker takes it over while the request is out. False,
        with nothing written, when another worker took it over: the caller must send nothing."""
        if not tasks_q.hold(tx, claim, expires):
            return False
        gens_q.mark_sent(tx, generation_id, now)
        return True


def _finish_of(outcome: Outcome, now: float) -> dict[str, Any]:
    """``generations.finish``'s arguments for a generation its ``submit`` finished."""
    update = outcome.update
    assert update is not None
    return {
        **_finish_args(outcome.work.generation_id, update, now), "requested_at": outcome.requested_at,
        "answered_at": outcome.answered_at, "platform_run_id": outcome.platform_run_id,
    }


def _finish_args(generation_id: str, update: RunUpdate, now: float) -> dict[str, Any]:
    """``generations.finish``'s arguments for a terminal update of a generation."""
    completed = update.status is GenerationStatus.COMPLETED
    return {
        "generation_id": generation_id, "status": update.status, "now": now,
        "outputs": update.outputs if completed else None,
        "error": update.error.model_dump() if update.error else None,
        "raw": update.raw, "progress": 1.0 if completed else None,
    }
