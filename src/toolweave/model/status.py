"""Status enums of runs, step runs, generations, tasks and notifications.

Each enum is mirrored by a CHECK constraint in the store; a test keeps the two in sync.
``ALLOWED_PRIOR`` lists, for every target status, the states a compare-and-set may move from.
Terminal states have no successors.
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    QUEUED = "queued"
    """No worker has picked the run up yet (was ``pending`` before migration 0007)."""
    RUNNING = "running"
    WAITING_INPUT = "waiting_input"
    """A step waits for a person's answer (an ``ask`` step); the run needs its account."""
    COMPLETED = "completed"
    PARTIALLY_COMPLETED = "partially_completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in RUN_TERMINAL


RUN_TERMINAL = frozenset(
    {RunStatus.COMPLETED, RunStatus.PARTIALLY_COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED}
)


class StepStatus(StrEnum):
    PENDING = "pending"
    READY = "ready"
    RUNNING = "running"
    WAITING_RETRY = "waiting_retry"
    WAITING_INPUT = "waiting_input"
    """An ``ask`` step: its question is stored and it waits for an answer or its timeout."""
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in STEP_TERMINAL


STEP_TERMINAL = frozenset({StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELLED})


class GenerationStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"

    @property
    def terminal(self) -> bool:
        return self in GENERATION_TERMINAL


GENERATION_TERMINAL = frozenset(
    {GenerationStatus.COMPLETED, GenerationStatus.FAILED, GenerationStatus.CANCELLED, GenerationStatus.TIMEOUT}
)


class TaskKind(StrEnum):
    ADVANCE = "advance"
    DISPATCH = "dispatch"
    POLL = "poll"
    CANCEL = "cancel"
    NOTIFY = "notify"
    EVALUATE = "evaluate"


class QuestionStatus(StrEnum):
    WAITING = "waiting"
    ANSWERED = "answered"
    """A person answered (``answered_by``)."""
    EXPIRED = "expired"
    """The timeout answered (the ask step's ``onTimeout``)."""
    CLOSED = "closed"
    """The step ended otherwise (the run was cancelled, failed or passed its deadline)."""


class NotificationStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


# target status -> statuses it may be reached from (compare-and-set guards)
RUN_UNFINISHED = frozenset({RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.WAITING_INPUT})


RUN_ALLOWED_PRIOR: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.QUEUED: frozenset(),
    RunStatus.RUNNING: frozenset({RunStatus.QUEUED, RunStatus.WAITING_INPUT}),
    RunStatus.WAITING_INPUT: frozenset({RunStatus.QUEUED, RunStatus.RUNNING}),
    RunStatus.COMPLETED: RUN_UNFINISHED,
    RunStatus.PARTIALLY_COMPLETED: RUN_UNFINISHED,
    RunStatus.FAILED: RUN_UNFINISHED,
    RunStatus.CANCELLED: RUN_UNFINISHED,
}
"""A run is queued until a worker claims one of its tasks; it is ``waiting_input`` while one of
its steps waits for a person; a finished run goes back to the queue only through an explicit retry
(which resets it directly)."""

GENERATION_ALLOWED_PRIOR: dict[GenerationStatus, frozenset[GenerationStatus]] = {
    GenerationStatus.PENDING: frozenset(),
    GenerationStatus.PROCESSING: frozenset({GenerationStatus.PENDING, GenerationStatus.PROCESSING}),
    GenerationStatus.COMPLETED: frozenset({GenerationStatus.PENDING, GenerationStatus.PROCESSING}),
    GenerationStatus.FAILED: frozenset({GenerationStatus.PENDING, GenerationStatus.PROCESSING}),
    GenerationStatus.CANCELLED: frozenset({GenerationStatus.PENDING, GenerationStatus.PROCESSING}),
    GenerationStatus.TIMEOUT: frozenset({GenerationStatus.PENDING, GenerationStatus.PROCESSING}),
}
