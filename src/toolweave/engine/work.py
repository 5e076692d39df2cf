"""What the engine's transactions take and hand back: a submission (``SubmitRequest``), the
dispatches a transaction leases to its worker (``Lease``, ``DispatchWork``, ``Work``), what a
service's ``submit`` came back with (``Outcome``), what one transaction accumulates (``_Ctx``),
and the errors front ends answer (``NotFound``, ``Conflict``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from toolweave.engine.evaluate import EvaluateWork
from toolweave.model.definitions import JobDefinition, ToolDefinition
from toolweave.model.records import RunUpdate
from toolweave.services.base import GenerationContext
from toolweave.store import tasks as tasks_q
from toolweave.store.db import Tx

DEFAULT_POLL_SECONDS = 2.0
DEFAULT_TIMEOUT_SECONDS = 3600.0


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
    sent_at: float | None = None
    """When a submit of the generation was about to send its request (``generations.sent_at``, as
    the claim found it; None: no submit got that far)."""
    poll_error: dict[str, Any] | None = None
    """The failure the generation's last poll met, when it failed (a running generation's
    ``generations.error``, as the claim found it)."""

    @property
    def claim(self) -> tasks_q.Claim:
        return tasks_q.Claim(self.task_id, self.claim_token)

    def leased(self, task: tasks_q.Task) -> None:
        """The dispatch task made for this work, leased to the worker that runs it."""
        self.task_id, self.task_attempts, self.claim_token = task.task_id, task.attempts, task.token

    @property
    def recovering(self) -> bool:
        """An earlier lease of this task may have reached the backend, as far as a service that
        does not mark before sending can tell (``recovering_for``)."""
        return self.task_attempts > 1

    def recovering_for(self, marks_sending: bool) -> bool:
        """``recovering`` for a service that marks before sending (``marks_sending``) or not: an
        earlier lease ended unrecorded and, for one that marks, got as far as its mark."""
        return self.recovering and (self.sent_at is not None or not marks_sending)

    def context(
        self, webhook_url: str | None, now: float | None = None, *, marks_sending: bool = False,
        on_sending: Callable[[], Awaitable[bool]] | None = None,
    ) -> GenerationContext:
        """The generation as its service sees it. ``marks_sending``: the service marks before it
        sends (its ``recovering`` then depends on the mark); ``on_sending``: the mark itself."""
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
            recovering=self.recovering_for(marks_sending),
            on_sending=on_sending,
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
    estimate: Decimal | None = None
    """What the run is estimated to cost (held from the account's credits when it pays from them)."""
    estimate_unknown: bool = False
    """Part of the run's cost is only known after it runs."""
    budget: dict[str, Any] | None = None
    """The run's cost ceiling and its steps' estimates (``runs.budget``), None without a ceiling."""
    credit_run_id: str | None = None
    """For a nested run: the run whose hold pays for it."""
    queue_at: float | None = None
    """For a nested run: its parent's place in the claiming order."""


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
    refused: int = 0
    """Starts (and evaluations of a step for an attempt) the store refused: the step was at that
    attempt already, or finished (``runs.NEW_ATTEMPT``); the run is decided again (``_advance``)."""
    advanced: set[str] = field(default_factory=set)
    """The runs this transaction advanced (``Transitions._advance``). A batch shares one set among
    its runs' contexts: a run that a turn of another run advanced (a nested run's end advances its
    parent; a parent that halts cancels its nested runs) has changed since the batch read its rows."""

    deciding: set[str] = field(default_factory=set)
    """The runs whose decision is being written further up this call (``Transitions._advance``)."""
    redecide: set[str] = field(default_factory=set)
    """Runs among ``deciding`` that a nested run changed meanwhile (it ended, or waits for a
    person): decided again once their actions are written (``Transitions._advance_parent``)."""

    def can_lease(self) -> bool:
        return self.lease is not None and self.lease.used < self.lease.capacity
