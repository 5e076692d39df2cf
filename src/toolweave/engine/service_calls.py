"""The worker's calls to services, made outside transactions: a dispatch's ``submit`` (the
artifact check of its inputs, the service's concurrency limit taken in the store, the sending mark
of a service that marks before sending), a poll of an asynchronous run, a cancel at the backend and
the delivery of a notification. What a call reports is recorded by group commit (``GroupCommit``)
or by an engine transaction of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from toolweave.engine.core import Engine
from toolweave.engine.evaluate import EvaluateWork
from toolweave.engine.plan_rules import with_last_poll
from toolweave.engine.work import DispatchWork, Outcome, Work
from toolweave.model.records import RunUpdate, ServiceErrorInfo, artifact_mentions
from toolweave.model.status import GenerationStatus
from toolweave.services.base import GenerationContext, NotHeld, Service, ServiceError
from toolweave.store import accounts as accounts_q
from toolweave.store import generations as gens_q
from toolweave.store import tasks as tasks_q
from toolweave.store.db import Store

log = logging.getLogger("toolweave.worker")

MAX_POLL_INTERVAL = 30.0
CAPACITY_RETRY_SECONDS = 0.5
"""How soon a dispatch that found its service's concurrency limit reached is tried again."""
LOST = "lost"
"""The ServiceError code of a poll whose backend no longer knows the run (e.g. ComfyUI restarted)."""
LOOKUP_SECONDS = 30.0
"""The time a service is given to find out what became of a submit the step's deadline ended
after its request may have been sent (``ServiceCalls._after_deadline``)."""


class ServiceCalls:
    """The ``Worker``'s handlers that call a service; a part of ``Worker``, which provides what
    is declared below."""

    if TYPE_CHECKING:  # provided by ``Worker``
        store: Store
        engine: Engine
        services: Mapping[str, Service]
        lease_seconds: float
        webhook_url: Callable[[str, str], str | None] | None
        deliver: Callable[[tasks_q.Task], Awaitable[None]] | None

        def _spawn(self, coro: Any) -> None: ...
        async def _record(self, item: Outcome) -> list[Work]: ...
        async def _hand_back(self, claim: tasks_q.Claim | None = None) -> None: ...
        async def _with_lease(self, fn: Callable[..., Any], *args: Any) -> list[Work]: ...
        async def _run_dispatches(self, dispatches: list[Work]) -> None: ...
        async def _work(self, work: Work) -> None: ...
        async def _evaluate(self, work: EvaluateWork) -> None: ...

    def _context(self, work: DispatchWork) -> GenerationContext:
        return work.context(self.webhook_url(work.tool.service, work.generation_id) if self.webhook_url else None)

    def _submit_context(self, service: Service, work: DispatchWork, marked: list[float]) -> GenerationContext:
        """The context of a submit: a service that marks before sending (``marks_sending``) gets
        the mark (``Engine.mark_sending_tx``; ``marked`` gets its time), and is told
        ``recovering`` only when an earlier submit got as far as its mark; any other service keeps
        the rule of ``DispatchWork.recovering``. A mark the store failed to write is not the
        service's failure: the dispatch is handed back, as when recording fails (``_MarkFailed``)."""
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
            if held:
                marked.append(now)
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
            marked: list[float] = []
            ctx = self._submit_context(service, work, marked)
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
                if marked or (ctx.recovering and ctx.on_sending is not None):  # its request may have been sent
                    platform_id, update, poll_after = await self._after_deadline(service, ctx)
                else:  # nothing reached the backend (or a service that does not mark cannot tell)
                    update = _timed_out(ctx)
            except Exception as exc:  # a bug in an adapter must not kill the worker
                log.exception("service %s failed on submit", work.tool.service)
                update = _failed(f"{type(exc).__name__}: {exc}", retryable=False)
        return await self._record(Outcome(work, platform_id, update, requested_at, time.time(), poll_after))

    async def _after_deadline(
        self, service: Service, ctx: GenerationContext
    ) -> tuple[str | None, RunUpdate, float | None]:
        """The outcome of a submit the step's deadline ended after its mark (``gen.sending()``): its
        request may have reached the backend, which may be running it and charging for it. Sent
        again by a retry, it could run, and be paid for, twice. The service is asked what became of
        it as after a crash past the mark (``recovering``), and may not send it again: a service
        that finds it by our id follows it (ComfyUI: ``prompt_id`` = the generation id); one that
        says it would send it again holds the request harmless to repeat (an ``idempotent`` HTTP
        tool, a ComfyUI prompt it did not find): a retryable timeout, as before; any other answer
        (ComfyUI Deploy, a non-idempotent HTTP tool, a look-up that failed) is ``unknown_outcome``,
        maybe paid, not retried."""
        cause = (f"no answer from {ctx.tool.service} within the step's {ctx.timeout_seconds:g} s after the request "
                 "was sent (it may have been taken)")
        lookup = dataclasses.replace(ctx, recovering=True, timeout_seconds=LOOKUP_SECONDS, on_sending=_no_resend)
        try:
            async with asyncio.timeout(LOOKUP_SECONDS):
                found = await service.submit(lookup)
        except _Resend:
            return None, _timed_out(ctx), None
        except ServiceError as exc:
            if exc.code == "unknown_outcome":  # the service's own word on why it does not send again
                message = f"{cause}: {exc.message}"
            else:
                message = f"{cause}; looking for it failed ({exc.message}): not sent again"
        except TimeoutError:
            message = f"{cause}; looking for it got no answer within {LOOKUP_SECONDS:g} s either: not sent again"
        except Exception as exc:  # a bug in an adapter must not kill the worker
            log.exception("service %s failed looking for a submit its deadline ended", ctx.tool.service)
            message = f"{cause}; looking for it failed ({type(exc).__name__}: {exc}): not sent again"
        else:
            log.warning("generation %s: the step's deadline ended its submit; %s had it: following it",
                        ctx.generation_id, ctx.tool.service)
            update = found.update or RunUpdate(status=GenerationStatus.PROCESSING, platform_run_id=found.platform_run_id)
            # still running past its step's deadline: the first poll, at once, ends it as timed out
            # and cancels it at the backend (now that its id is known), before a retry sends another
            return found.platform_run_id, update, None if update.status.terminal else 0.0
        error = ServiceErrorInfo(message=message, retryable=False, code="unknown_outcome",
                                 details={"cause": "timeout", "maybePaid": True})
        return None, RunUpdate(status=GenerationStatus.FAILED, error=error), None

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

    async def _poll(self, task: tasks_q.Task, work: DispatchWork) -> None:
        service = self.services.get(work.tool.service)
        now = time.time()
        if service is None:
            update = _failed(f"no service named {work.tool.service!r} is configured", retryable=False)
        elif work.deadline_at is not None and now >= work.deadline_at:
            message = with_last_poll("the backend did not finish in time", work.poll_error)
            update = RunUpdate(
                status=GenerationStatus.TIMEOUT, error=ServiceErrorInfo(message=message, retryable=True, code="timeout"),
            )
            with contextlib.suppress(Exception):
                await service.cancel(self._context(work))
        else:
            try:
                update = await asyncio.wait_for(service.poll(self._context(work)), timeout=60)
            except (ServiceError, TimeoutError) as exc:
                # a poll that could not get an answer is tried again until the generation's
                # deadline (which names its failure: kept as the running generation's error); a
                # backend that lost the run ("lost") fails the generation, retryably
                info = exc.info() if isinstance(exc, ServiceError) else ServiceErrorInfo(message="poll timed out", retryable=True)
                if info.retryable and info.code != LOST:
                    log.warning("poll of %s failed (%s); polling again", work.generation_id, info.message)
                    wait = max(_poll_interval(task.attempts), min(info.retry_after_seconds or 0.0, MAX_POLL_INTERVAL * 10))
                    await self.store.tx(
                        self.engine.reschedule_poll_tx, task.claim, now + wait, None,
                        work.run_id, work.generation_id, now, info.model_dump(exclude_none=True),
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
            work.generation_id, now, None, work.poll_error is not None,
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


class _Resend(Exception):
    """Raised by the mark of a look-up after the deadline (``_after_deadline``): the service would
    send the request again, which that look-up never lets it do."""


async def _no_resend() -> bool:
    raise _Resend


def _timed_out(ctx: GenerationContext) -> RunUpdate:
    return RunUpdate(
        status=GenerationStatus.TIMEOUT,
        error=ServiceErrorInfo(message=f"no answer within {ctx.timeout_seconds:.0f} s", retryable=True, code="timeout"),
    )


class _MarkFailed(Exception):
    """The store failed to write a submit's mark (``GenerationContext.sending``); the cause is the
    store's error. Kept apart from the service's own failures, which fail the generation."""


def _poll_interval(attempt: int) -> float:
    return min(MAX_POLL_INTERVAL, 1.0 * (1.5 ** max(0, attempt - 1)))


def _failed(message: str, *, retryable: bool, code: str | None = None) -> RunUpdate:
    return RunUpdate(
        status=GenerationStatus.FAILED, error=ServiceErrorInfo(message=message, retryable=retryable, code=code)
    )
