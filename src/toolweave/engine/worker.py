"""The worker: claims tasks, applies the planner's actions, calls services, heartbeats.

Services are called outside transactions. An asynchronous service's run is a row and a poll
task once submitted; the slot is free again at once. ``slots`` bounds the tasks handled at the
same time; a transaction that starts steps leases their dispatch tasks to this worker only up to
the slots it has free. While the event loop itself is the bottleneck, only two queued tasks are
claimed at a time (``claimable``). SIGTERM (``stop()``) finishes what is in flight and hands back
the rest.

This module is the loop (claims, handlers, heartbeat, sweep, housekeeping) and the slots (the claim
rule, leases for the dispatches a transaction hands back, tasks handed back); the calls to services
are ``engine/service_calls.py``, the group commit of their outcomes ``engine/group_commit.py``.
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
from toolweave.engine.group_commit import FLUSH_DEFERRALS as FLUSH_DEFERRALS  # read as worker.FLUSH_DEFERRALS
from toolweave.engine.group_commit import FLUSHES as FLUSHES
from toolweave.engine.group_commit import GroupCommit
from toolweave.engine.service_calls import ServiceCalls
from toolweave.engine.work import DispatchWork, Lease, Work
from toolweave.model.status import TaskKind
from toolweave.sandbox import EvaluationPool
from toolweave.services.base import Service
from toolweave.store import tasks as tasks_q
from toolweave.store.db import Store
from toolweave.store.ids import new_id

log = logging.getLogger("toolweave.worker")
_JITTER = random.Random()
"""Jitter of sleeps and backoffs: a source of its own, so the program's ``random`` (seeded by a host
program or a test framework) neither steers it nor is moved by it."""

SATURATED_IN_FLIGHT = 2
"""Tasks kept in hand while the event loop is the bottleneck: one being recorded, one in its call."""
SATURATED_BUSY = 0.9
"""The share of wall time the event loop's thread spends on the CPU above which it is the bottleneck."""
BUSY_WINDOW_SECONDS = 0.1


class Worker(ServiceCalls, GroupCommit):
    """A worker process's loop and its slots; its calls to services are ``ServiceCalls``
    (``engine/service_calls.py``), the recording of their outcomes ``GroupCommit``
    (``engine/group_commit.py``)."""

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
        self._to_record = []
        self._flush_scheduled = False
        self._spawned = 0
        self._spawned_seen = 0
        self._deferrals = 0
        self._flushes = set()
        self._recording = set()
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


def _hand_back_tx(tx: Any, claims: list[tasks_q.Claim], at: float) -> None:
    for claim in claims:
        tasks_q.reschedule(tx, claim, at)
