"""The worker: claims tasks, applies the planner's actions, calls services, heartbeats.

Services are called outside transactions. An asynchronous service's run is a row and a poll
task once submitted; the slot is free again at once. ``slots`` bounds the tasks handled at the
same time; a transaction that starts steps leases their dispatch tasks to this worker only up to
the slots it has free. While the event loop itself is the bottleneck, only two queued tasks are
claimed at a time (``claimable``). SIGTERM (``stop()``) finishes what is in flight and hands back
the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from toolweave.engine import sweep
from toolweave.engine.core import Engine
from toolweave.engine.evaluate import Budgets, EvaluateWork, evaluate
from toolweave.engine.work import DispatchWork, Lease, Outcome, Work
from toolweave.model.records import RunUpdate, ServiceErrorInfo, artifact_mentions
from toolweave.model.status import GenerationStatus, TaskKind
from toolweave.sandbox import EvaluationPool
from toolweave.services.base import GenerationContext, NotHeld, Service, ServiceError
from toolweave.store import accounts as accounts_q
from toolweave.store import generations as gens_q
from toolweave.store import tasks as tasks_q
from toolweave.store.db import Store
from toolweave.store.ids import new_id

log = logging.getLogger("toolweave.worker")
_JITTER = random.Random()
"""Jitter of sleeps and backoffs: a source of its own, so the program's ``random`` (seeded by a host
program or a test framework) neither steers it nor is moved by it."""

MAX_POLL_INTERVAL = 30.0
CAPACITY_RETRY_SECONDS = 0.5
"""How soon a dispatch that found its service's concurrency limit reached is tried again."""
SATURATED_IN_FLIGHT = 2
"""Tasks kept in hand while the event loop is the bottleneck: one being recorded, one in its call."""
SATURATED_BUSY = 0.9
"""The share of wall time the event loop's thread spends on the CPU above which it is the bottleneck."""
BUSY_WINDOW_SECONDS = 0.1
FLUSHES = 4
"""Transactions recording finished work at the same time (group commit: what finishes while they
run waits for the next one). On PostgreSQL a transaction mostly waits for the server, and with two
at once the worker's runs queued behind them (four: a third more chain jobs per second in
``bench/engine.py --store postgres``, eight no better); SQLite's run inline, one at a time."""
FLUSH_DEFERRALS = 3
"""How many turns of the event loop a transaction recording finished work waits at most for the
tasks spawned meanwhile (see ``_spawn_flush``)."""
LOST = "lost"
"""The ServiceError code of a poll whose backend no longer knows the run (e.g. ComfyUI restarted)."""


class Worker:
    def __init__(
        self,
        store: Store,
        engine: Engine,
        services: Mapping[str, Service],
        *,
        slots: int = 8,
        lease_seconds: float | None = None,
        heartbeat_seconds: float | None = None,
        idle_poll_seconds: float = 1.0,
        sweep_seconds: float = 60.0,
        housekeeping: Callable[[str], Awaitable[Any]] | None = None,
        housekeeping_seconds: float = 600.0,
        evaluator: EvaluationPool | None = None,
        budgets: Budgets | None = None,
        webhook_url: Callable[[str, str], str | None] | None = None,
        deliver: Callable[[tasks_q.Task], Awaitable[None]] | None = None,
        worker_id: str | None = None,
        wall_clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.thread_time,
    ) -> None:
        """``wall_clock`` and ``cpu_clock`` (the loop thread's CPU time) measure how busy the event
        loop is for the claim rule; tests pass their own to drive it.

        ``housekeeping(worker_id)`` is awaited at start and every ``housekeeping_seconds`` (periodic
        pruning, ``toolweave.retention.PeriodicPrune``, which decides itself whether it is due)."""
        self.store = store
        self.engine = engine
        self.services = services
        self.slots = max(1, slots)
        self.lease_seconds = lease_seconds or engine.lease_seconds
        self.heartbeat_seconds = heartbeat_seconds or self.lease_seconds / 3
        self.idle_poll_seconds = idle_poll_seconds
        self.sweep_seconds = sweep_seconds
        self.housekeeping = housekeeping
        self.housekeeping_seconds = housekeeping_seconds
        self.evaluator = evaluator or EvaluationPool(1)
        """Where steps' conditions and templates are evaluated (processes of their own)."""
        self.budgets = budgets or Budgets()
        self.webhook_url = webhook_url
        self.deliver = deliver
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{new_id()[-6:]}"
        self._inflight: set[asyncio.Task[None]] = set()
        self._reserved = 0
        self._stopping = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._to_record: list[tuple[Outcome, asyncio.Future[Any]]] = []
        self._flush_scheduled = False
        self._spawned = 0
        """Tasks spawned so far: a flush waits a turn while the last turn spawned some (``_spawn_flush``)."""
        self._spawned_seen = 0
        self._deferrals = 0
        self._flushes: set[asyncio.Task[None]] = set()
        self._recording: set[str] = set()
        """Runs whose outcomes a transaction under way is recording."""
        self._handing_back: list[tasks_q.Claim] = []
        """Tasks whose handling failed, not yet handed back to the queue (``_hand_back``)."""
        self.handled = 0
        self._wall_clock = wall_clock
        self._cpu_clock = cpu_clock
        self._busy = 0.0
        self._busy_sample = (wall_clock(), cpu_clock())

    # --- life cycle ----------------------------------------------------------------------------

    def stop(self) -> None:
        self._stopping.set()
        self._slot_freed.set()

    @property
    def in_flight(self) -> int:
        """Tasks this worker is handling now."""
        return len(self._inflight)

    @property
    def free(self) -> int:
        return self.slots - len(self._inflight) - self._reserved

    def claimable(self) -> int:
        """How many queued tasks to claim now: as many as there are free slots, unless the event
        loop's own thread is the bottleneck (in-process tools, SQLite transactions inline). Then
        more tasks would only wait in line for the loop, stretching every step's latency while
        another worker might have started them at once; so only ``SATURATED_IN_FLIGHT`` are kept
        in hand. Successors of runs already in hand are not held back (see ``_lease``)."""
        free = self.free
        if free <= 0:
            return 0
        return max(0, min(free, self._in_hand_limit() - len(self._inflight) - self._reserved))

    def _in_hand_limit(self) -> int:
        """How many tasks the claim rule lets this worker hold (see ``claimable``)."""
        return self.slots if self._loop_busy() < SATURATED_BUSY else SATURATED_IN_FLIGHT

    def _loop_busy(self) -> float:
        """The loop thread's CPU time over wall time, in windows of ``BUSY_WINDOW_SECONDS``."""
        at, cpu = self._busy_sample
        now = self._wall_clock()
        if now - at >= BUSY_WINDOW_SECONDS:
            spent = self._cpu_clock()
            self._busy = (spent - cpu) / (now - at)
            self._busy_sample = (now, spent)
        return self._busy

    async def run(self) -> None:
        heartbeat = asyncio.create_task(self._heartbeat(), name="toolweave-heartbeat")
        sweeper = asyncio.create_task(self._sweep(), name="toolweave-sweep") if self.sweep_seconds > 0 else None
        keeper = asyncio.create_task(self._housekeep(), name="toolweave-housekeeping") if self.housekeeping else None
        try:
            while not self._stopping.is_set():
                want = self.claimable()
                next_due: float | None = None
                if want > 0:
                    items, next_due = await self.store.tx(self.engine.claim_tx, self.worker_id, want, time.time())
                    for task, work in items:
                        self._spawn(self._handle(task, work))
                    if len(items) == want:
                        continue
                await self._wait(next_due, held_back=want < self.free)
            if self._inflight:
                await asyncio.gather(*self._inflight, return_exceptions=True)
        finally:
            for background in (heartbeat, sweeper, keeper):
                if background is not None:
                    background.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await background
            with contextlib.suppress(Exception):
                await self.store.tx(tasks_q.release_all, self.worker_id, time.time())

    async def run_until_idle(self, timeout: float = 60.0) -> None:
        """Work until no task is due or in flight (tests and the one-shot CLI); housekeeping once,
        at the start."""
        deadline = time.time() + timeout
        if self.housekeeping is not None:
            await self._housekeep_once()
        while time.time() < deadline:
            want = self.claimable()
            items: list[Any] = []
            next_due: float | None = None
            if want > 0 or not self._inflight:
                items, next_due = await self.store.tx(self.engine.claim_tx, self.worker_id, want, time.time())
            for task, work in items:
                self._spawn(self._handle(task, work))
            if self._inflight:
                await asyncio.wait(self._inflight, return_when=asyncio.FIRST_COMPLETED)
                continue
            if not items:
                if next_due is None or next_due > deadline:
                    return
                await asyncio.sleep(max(0.0, min(next_due - time.time(), 0.5)))

    async def _wait(self, next_due: float | None, *, held_back: bool = False) -> None:
        timeout = self.idle_poll_seconds
        if next_due is not None:
            timeout = max(0.0, min(timeout, next_due - time.time()))
        if self.free <= 0 or held_back:
            self._slot_freed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._slot_freed.wait(), timeout)
            return
        # new work or stop(), whichever comes first: a stopping worker must not sit out the timeout
        waiting = asyncio.ensure_future(self.store.wait_for_work(timeout))
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait((waiting, stopping), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (waiting, stopping):
                waiter.cancel()

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            try:
                await self._hand_back()  # before any lease is extended: what could not be handed back
                await self.store.tx(tasks_q.heartbeat, self.worker_id, time.time(), self.lease_seconds)
            except Exception:
                log.exception("heartbeat failed")

    async def _sweep(self) -> None:
        """Repair stranded runs: once at start (a worker that comes after a crash looks at once),
        then every ``sweep_seconds`` (with jitter, so workers started together spread out)."""
        while True:
            try:
                await sweep.sweep(self.store, self.engine, time.time())
            except Exception:
                log.exception("the sweep for stranded runs failed")
            await asyncio.sleep(self.sweep_seconds * _JITTER.uniform(0.9, 1.1))

    async def _housekeep_once(self) -> None:
        assert self.housekeeping is not None
        try:
            await self.housekeeping(self.worker_id)
        except Exception:
            log.exception("housekeeping (periodic pruning) failed")

    async def _housekeep(self) -> None:
        while True:
            await self._housekeep_once()
            await asyncio.sleep(self.housekeeping_seconds * _JITTER.uniform(0.9, 1.1))

    def _spawn(self, coro: Any) -> None:
        self._spawned += 1
        task = asyncio.create_task(coro)
        self._inflight.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self.handled += 1
        self._slot_freed.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("task handler failed", exc_info=task.exception())

    def _lease(self, own_slots: int = 1) -> tuple[Lease, int]:
        """Reserve free slots for dispatches a transaction may hand back (plus the callers' own)."""
        reserve = max(0, self.free)
        self._reserved += reserve
        return Lease(self.worker_id, reserve + own_slots, self.lease_seconds), reserve

    async def _with_lease(self, fn: Callable[..., Any], *args: Any) -> list[Work]:
        lease, reserved = self._lease()
        try:
            result = await self.store.tx(fn, *args, lease)
        finally:
            self._reserved -= reserved
        dispatches: list[Work] = result[0] if isinstance(result, tuple) else result
        return dispatches

    async def _run_dispatches(self, dispatches: list[Work]) -> None:
        """Run the first dispatch (or evaluation) in this slot, the rest in slots of their own."""
        for work in dispatches[1:]:
            self._spawn(self._work(work))
        if dispatches:
            await self._work(dispatches[0])

    async def _work(self, work: Work) -> None:
        if isinstance(work, EvaluateWork):
            await self._evaluate(work)
        else:
            await self._dispatch(work)

    async def _evaluate(self, work: EvaluateWork) -> None:
        """Evaluate ready steps' conditions and templates in the evaluator processes (the event
        loop only waits), then let the planner go on with them in one transaction."""
        try:
            evaluations = await evaluate(self.evaluator, work, self.budgets)
            dispatches = await self._with_lease(self.engine.evaluated_tx, work.claim, work.run_id, evaluations, time.time())
        except Exception:
            await self._hand_back(work.claim)
            raise
        await self._run_dispatches(dispatches)

    # --- handlers ------------------------------------------------------------------------------

    async def _handle(self, task: tasks_q.Task, work: Work | None) -> None:
        try:
            if task.kind is TaskKind.ADVANCE:
                dispatches = await self._with_lease(self.engine.advance_tx, task.ref_id, task.claim, time.time())
                await self._run_dispatches(dispatches)
            elif task.kind is TaskKind.EVALUATE and isinstance(work, EvaluateWork):
                await self._evaluate(work)
            elif task.kind is TaskKind.DISPATCH and isinstance(work, DispatchWork):
                await self._dispatch(work)
            elif task.kind is TaskKind.POLL and isinstance(work, DispatchWork):
                await self._poll(task, work)
            elif task.kind is TaskKind.CANCEL and isinstance(work, DispatchWork):
                await self._cancel(task, work)
            elif task.kind is TaskKind.NOTIFY:
                await self._notify(task)
        except Exception:
            log.exception("handling %s task %s failed; it will be retried when its lease expires", task.kind, task.task_id)
            if task.kind in (TaskKind.ADVANCE, TaskKind.POLL, TaskKind.CANCEL, TaskKind.NOTIFY):
                await self._hand_back(task.claim)  # (a dispatch or an evaluation handed its own back)

    async def _hand_back(self, claim: tasks_q.Claim | None = None) -> None:
        """Put a task whose handling failed (``claim``) back in the queue, due when its lease would
        have run out; its next claim counts as another attempt (a dispatch comes back
        ``recovering``). The heartbeat extends every lease this worker holds: a task left leased
        would never be tried again while the worker lives. What the store refuses to take back now
        is tried again before the next heartbeat; only the claim that holds a task hands it back
        (one another worker has claimed since stays that worker's)."""
        if claim is not None:
            self._handing_back.append(claim)
        claims = list(self._handing_back)
        if not claims:
            return
        try:
            await self.store.tx(_hand_back_tx, claims, time.time() + self.lease_seconds)
        except Exception:
            log.exception("handing back %d task(s) whose handling failed failed; trying again", len(claims))
            return
        self._handing_back = [c for c in self._handing_back if c not in claims]

    def _context(self, work: DispatchWork) -> GenerationContext:
        return work.context(self.webhook_url(work.tool.service, work.generation_id) if self.webhook_url else None)

    def _submit_context(self, service: Service, work: DispatchWork) -> GenerationContext:
        """The context of a submit: a service that marks before sending (``marks_sending``) gets
        the mark (``Engine.mark_sending_tx``), and is told ``recovering`` only when an earlier
        submit got as far as its mark; any other service keeps the rule of
        ``DispatchWork.recovering``. A mark the store failed to write is not the service's
        failure: the dispatch is handed back, as when recording fails (``_MarkFailed``)."""
        marks = getattr(service, "marks_sending", False) is True
        webhook = self.webhook_url(work.tool.service, work.generation_id) if self.webhook_url else None

        async def mark() -> bool:
            now = time.time()
            try:
                held: bool = await self.store.tx(
                    self.engine.mark_sending_tx, work.claim, work.generation_id, now, now + self.lease_seconds
                )
            except Exception as exc:
                raise _MarkFailed from exc
            return held

        return work.context(webhook, marks_sending=marks, on_sending=mark if marks else None)

    async def _dispatch(self, work: DispatchWork) -> None:
        """Call the service for one dispatch, then go on in this slot with the first of the
        dispatches its record leased to this worker (the rest get slots of their own). A loop, not
        a recursion: a map step hands one slot its items one after the other, thousands of them."""
        current: Work | None = work
        while current is not None:
            if isinstance(current, EvaluateWork):
                await self._evaluate(current)
                return
            try:
                following = await self._dispatch_one(current)
            except Exception:  # not recorded (the call's outcome is unknown): tried again as after a crash
                await self._hand_back(current.claim)
                raise
            for work_ in following[1:]:
                self._spawn(self._work(work_))
            current = following[0] if following else None

    async def _dispatch_one(self, work: DispatchWork) -> list[Work]:
        service = self.services.get(work.tool.service)
        if service is not None and not await self._take_capacity(service, work):
            return []
        requested_at = time.time()
        platform_id: str | None = None
        poll_after: float | None = None
        update: RunUpdate | None
        refused = await self._unheld_artifact(work) if service is not None else None
        if service is None:
            update = _failed(f"no service named {work.tool.service!r} is configured", retryable=False)
        elif refused is not None:
            update = _failed(refused, retryable=False, code="forbidden_artifact")
        else:
            ctx = self._submit_context(service, work)
            try:
                async with asyncio.timeout(ctx.timeout_seconds):  # no task of its own, unlike wait_for
                    submission = await service.submit(ctx)
                platform_id, update, poll_after = (
                    submission.platform_run_id, submission.update, submission.poll_after_seconds
                )
            except NotHeld:  # another worker took the dispatch over: nothing was sent, it is theirs
                log.warning("dispatch of generation %s was taken over by another worker before it was sent; "
                            "leaving it to them", work.generation_id)
                return []
            except _MarkFailed as exc:  # nothing was sent: handed back (``_dispatch``), sent again later
                raise exc.__cause__ or exc from None
            except ServiceError as exc:
                update = RunUpdate(status=GenerationStatus.FAILED, error=exc.info())
            except TimeoutError:
                update = RunUpdate(
                    status=GenerationStatus.TIMEOUT,
                    error=ServiceErrorInfo(message=f"no answer within {ctx.timeout_seconds:.0f} s", retryable=True, code="timeout"),
                )
            except Exception as exc:  # a bug in an adapter must not kill the worker
                log.exception("service %s failed on submit", work.tool.service)
                update = _failed(f"{type(exc).__name__}: {exc}", retryable=False)
        return await self._record(Outcome(work, platform_id, update, requested_at, time.time(), poll_after))

    async def _unheld_artifact(self, work: DispatchWork) -> str | None:
        """Why a step may not run: one of its inputs refers to an artifact its run's account does not
        hold (a template can build an ``artifact:`` URI or artifact JSON from a user's text; the
        submit check sees only the text). None when every reference is held."""
        mentions = list(artifact_mentions(work.inputs, json_text=True))
        if not mentions:
            return None
        shas = [m.sha256 for m in mentions if m.sha256 is not None]
        held = await self.store.read(accounts_q.artifacts_held, work.account_id, shas) if shas else {}
        for m in mentions:
            if m.sha256 is None or m.sha256 not in held:
                return f"input {m.path!r} refers to an artifact that is not one of this run's account's"
        return None

    async def _take_capacity(self, service: Service, work: DispatchWork) -> bool:
        """Honour the service's concurrency limit (``capacity(tool) -> (key, limit)``, e.g. one
        ComfyUI server's): take a slot in the store, or hand the dispatch task back to be tried
        again shortly without calling the backend. The count lives in the database, so the limit
        holds across workers and processes."""
        capacity = getattr(service, "capacity", None)
        if capacity is None:
            return True
        try:
            key, limit = capacity(work.tool)
        except ServiceError:
            return True  # a configuration problem: submit reports it
        now = time.time()
        taken: bool = await self.store.tx(_take_capacity_tx, work, key, limit, now + CAPACITY_RETRY_SECONDS)
        return taken

    async def _record(self, item: Outcome) -> list[Work]:
        """Record a submission; those finishing together share one transaction (group commit)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._to_record.append((item, future))
        self._schedule_flush()
        dispatches, _cancel_needed = await future
        return list(dispatches)

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._spawned_seen, self._deferrals = self._spawned, 0
            asyncio.get_running_loop().call_soon(self._spawn_flush)

    def _spawn_flush(self) -> None:
        """Record what finished, in one transaction, unless ``FLUSHES`` are under way already (the
        next one starts when one of them ends, with everything that finished meanwhile). Outcomes
        of a run that a transaction under way is recording wait for the next one: two
        transactions of one run would only queue on its lock.

        While the turns of the event loop since the flush was scheduled spawned tasks (the
        branches a fan-out started, the runs a transaction claimed), it waits one more turn (up to
        ``FLUSH_DEFERRALS``): they start in that turn, and an instant step among them finishes in
        it, in time for this transaction. Without the wait, the branches of a fan-out that a
        transaction handed back finished a turn after their first one was taken, and each of
        those runs took two transactions (the second waiting for the first, which holds the run)."""
        if self._spawned != self._spawned_seen and self._deferrals < FLUSH_DEFERRALS:
            self._spawned_seen = self._spawned
            self._deferrals += 1
            asyncio.get_running_loop().call_soon(self._spawn_flush)
            return
        self._flush_scheduled = False
        if len(self._flushes) >= FLUSHES:
            return
        busy = self._recording
        batch = [entry for entry in self._to_record if entry[0].work.run_id not in busy]
        if not batch:
            return
        self._to_record = [entry for entry in self._to_record if entry[0].work.run_id in busy] if busy else []
        runs = {outcome.work.run_id for outcome, _ in batch}
        busy.update(runs)
        task = asyncio.create_task(self._flush(batch))
        self._flushes.add(task)

        def done(_: asyncio.Task[None]) -> None:
            self._flushes.discard(task)
            busy.difference_update(runs)
            if self._to_record:
                self._schedule_flush()

        task.add_done_callback(done)

    async def _flush(self, batch: list[tuple[Outcome, asyncio.Future[Any]]]) -> None:
        lease, reserved = self._lease(own_slots=len(batch))
        owner = None if self._stopping.is_set() else self.worker_id
        # the batch's tasks are in _inflight; what others hold stays theirs
        room = self._in_hand_limit() - (len(self._inflight) - len(batch)) - (self._reserved - reserved)
        try:
            try:
                results, claimed = await self.store.tx(
                    self.engine.record_and_claim_tx, [item for item, _ in batch], time.time(), lease, owner, room
                )
            except Exception:
                if len(batch) == 1:
                    raise
                # one item spoiled the batch: record each on its own, so the others still land
                lease.used = 0
                for item, future in batch:
                    try:
                        one = await self.store.tx(self.engine.record_submissions_tx, [item], time.time(), lease)
                        future.set_result(one[0])
                    except Exception as exc:
                        future.set_exception(exc)
                return
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        finally:
            self._reserved -= reserved
        for task, work in claimed:
            self._spawn(self._handle(task, work))
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def _poll(self, task: tasks_q.Task, work: DispatchWork) -> None:
        service = self.services.get(work.tool.service)
        now = time.time()
        if service is None:
            update = _failed(f"no service named {work.tool.service!r} is configured", retryable=False)
        elif work.deadline_at is not None and now >= work.deadline_at:
            update = RunUpdate(
                status=GenerationStatus.TIMEOUT,
                error=ServiceErrorInfo(message="the backend did not finish in time", retryable=True, code="timeout"),
            )
            with contextlib.suppress(Exception):
                await service.cancel(self._context(work))
        else:
            try:
                update = await asyncio.wait_for(service.poll(self._context(work)), timeout=60)
            except (ServiceError, TimeoutError) as exc:
                # a poll that could not get an answer is tried again until the generation's
                # deadline; a backend that lost the run ("lost") fails the generation, retryably
                info = exc.info() if isinstance(exc, ServiceError) else ServiceErrorInfo(message="poll timed out", retryable=True)
                if info.retryable and info.code != LOST:
                    log.warning("poll of %s failed (%s); polling again", work.generation_id, info.message)
                    wait = max(_poll_interval(task.attempts), min(info.retry_after_seconds or 0.0, MAX_POLL_INTERVAL * 10))
                    await self.store.tx(
                        self.engine.reschedule_poll_tx, task.claim, now + wait, None,
                        work.run_id, work.generation_id, now,
                    )
                    return
                update = RunUpdate(status=GenerationStatus.FAILED, error=info)
            except Exception as exc:
                log.exception("service %s failed on poll", work.tool.service)
                update = _failed(f"{type(exc).__name__}: {exc}", retryable=True)
        if update.status.terminal:
            dispatches = await self._with_lease(
                self.engine.apply_update_tx, work.run_id, work.generation_id, update, time.time()
            )
            await self.store.tx(self.engine.finish_task_tx, task.claim)
            await self._run_dispatches(dispatches)
            return
        await self.store.tx(
            self.engine.reschedule_poll_tx, task.claim, now + _poll_interval(task.attempts), update, work.run_id,
            work.generation_id, now,
        )

    async def _cancel(self, task: tasks_q.Task, work: DispatchWork) -> None:
        service = self.services.get(work.tool.service)
        if service is not None:
            try:
                await asyncio.wait_for(service.cancel(self._context(work)), timeout=30)
            except Exception as exc:
                if task.attempts < 5:
                    log.warning("cancel of %s failed (%s); trying again", work.generation_id, exc)
                    await self.store.tx(tasks_q.reschedule, task.claim, time.time() + 2.0 * task.attempts)
                    return
                log.error("giving up cancelling %s at the backend: %s", work.generation_id, exc)
        await self.store.tx(self.engine.finish_task_tx, task.claim)

    async def _notify(self, task: tasks_q.Task) -> None:
        if self.deliver is None:
            return  # leave it for a worker that has channels; its lease expires
        await self.deliver(task)


def _take_capacity_tx(tx: Any, work: DispatchWork, key: str, limit: int, retry_at: float) -> bool:
    if gens_q.take_capacity(tx, work.generation_id, key, limit):
        return True
    tasks_q.put_back(tx, work.claim, retry_at)
    return False


class _MarkFailed(Exception):
    """The store failed to write a submit's mark (``GenerationContext.sending``); the cause is the
    store's error. Kept apart from the service's own failures, which fail the generation."""


def _hand_back_tx(tx: Any, claims: list[tasks_q.Claim], at: float) -> None:
    for claim in claims:
        tasks_q.reschedule(tx, claim, at)


def _poll_interval(attempt: int) -> float:
    return min(MAX_POLL_INTERVAL, 1.0 * (1.5 ** max(0, attempt - 1)))


def _failed(message: str, *, retryable: bool, code: str | None = None) -> RunUpdate:
    return RunUpdate(
        status=GenerationStatus.FAILED, error=ServiceErrorInfo(message=message, retryable=retryable, code=code)
    )
