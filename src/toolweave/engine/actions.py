"""What the planner sees and what it says: the views of a run, its steps and a map step's items,
and the actions ``plan.decide`` returns for the engine to apply. Pure data; no I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from toolweave.model.definitions import JobDefinition, ToolDefinition
from toolweave.model.status import GenerationStatus, RunStatus, StepStatus

# --- state -----------------------------------------------------------------------------------


@dataclass(slots=True)
class StepView:
    """One step run as the planner sees it (read-only; not frozen because a frozen dataclass
    costs five times as much to build, and the engine builds one per step per transition)."""

    step_id: str
    status: StepStatus = StepStatus.PENDING
    attempt: int = 0
    tool_id: str | None = None
    using_fallback: bool = False
    outputs: dict[str, Any] | None = None
    skipped_by_error: bool = False
    reason: str | None = None
    next_attempt_at: float | None = None
    started_at: float | None = None
    work_status: GenerationStatus | None = None
    """Status of the step's current generation (or child run, for a nested job)."""
    work_outputs: dict[str, Any] | None = None
    work_error: dict[str, Any] | None = None
    map: MapView | None = None
    """A map step once its list is known: its items' counts and the items the planner must see."""
    question: dict[str, Any] | None = None
    """An ``ask`` step waiting for input: the question it asked (``engine.asking``)."""
    answer: dict[str, Any] | None = None
    """Its answer, once a person gave one (the question row's); None while it waits."""
    answered_by: str | None = None
    child_waiting: bool = False
    """A step running a nested job whose run waits for a person (or a map step one of whose items'
    nested runs does): this run waits for one too."""
    work_sending: bool = False
    """The generation's submit was sent (its mark) and has not recorded what became of it: past
    the step's deadline it is left to that submit's worker (``plan_rules.SENT_GRACE_SECONDS``)."""


@dataclass(slots=True)
class ItemView:
    """One item of a map step: like a step, with the item's value."""

    index: int
    status: StepStatus = StepStatus.PENDING
    value: Any = None
    attempt: int = 0
    tool_id: str | None = None
    using_fallback: bool = False
    next_attempt_at: float | None = None
    started_at: float | None = None
    work_status: GenerationStatus | None = None
    work_outputs: dict[str, Any] | None = None
    work_error: dict[str, Any] | None = None
    inputs: dict[str, Any] | None = None
    """The item's inputs as an evaluator resolved them when the map opened (a map step whose
    templates loop: ``engine.evaluate``); None otherwise."""
    inputs_error: dict[str, Any] | None = None
    """Why the evaluator could not resolve them (its budget, a template error): the item fails."""
    work_sending: bool = False
    """As ``StepView.work_sending``."""


@dataclass(slots=True)
class MapView:
    """A map step's items as the planner sees them: counts, every item in flight (running or waiting
    for a retry; at most the step's concurrency) and the first pending items (at most its
    concurrency). The planner never sees the rest, so a transition costs the same however many
    items the step has."""

    total: int
    succeeded: int = 0
    failed: int = 0
    active: Sequence[ItemView] = ()
    waiting: Sequence[ItemView] = ()
    children_waiting: bool = False
    """An item in flight runs a nested job whose run waits for a person (``StepView.child_waiting``)."""


@dataclass(frozen=True)
class StepEvaluation:
    """What evaluating one attempt of a ``ready`` step gave (``engine.evaluate``)."""

    step_id: str
    attempt: int
    condition: bool | None = None
    """The condition's value (None: not evaluated — the step has none, or this is not its first attempt)."""
    inputs: dict[str, Any] | None = None
    """The resolved inputs (None: the step has no templates that loop; the planner resolves its mappings)."""
    items: list[dict[str, Any]] | None = None
    """A map step whose templates loop: per item of its list, in order, ``{"inputs": …}`` (resolved,
    each item under its own budget) or ``{"error": …}`` (that item fails); None otherwise."""
    error: dict[str, Any] | None = None
    """Why it could not be evaluated: ``{message, retryable, code, stage}``, ``stage`` being
    ``condition`` or ``inputs``."""

    @classmethod
    def of(cls, step_id: str, attempt: int, answer: Mapping[str, Any]) -> StepEvaluation:
        """From an evaluator's answer (``evaluate.evaluate_step``)."""
        return cls(step_id, attempt, condition=answer.get("condition"), inputs=answer.get("inputs"),
                   items=answer.get("items"), error=answer.get("error"))


@dataclass(frozen=True)
class Budget:
    """A run's cost ceiling: what it has cost so far and one call's estimate per step (a nested
    job's step: its whole estimate). A step whose estimate, added to what the run has cost and
    what its steps under way are estimated at, would pass the ceiling is not started."""

    ceiling: Decimal
    spent: Decimal = Decimal(0)
    steps: Mapping[str, Decimal] = field(default_factory=dict)


@dataclass(frozen=True)
class RunView:
    run_id: str
    status: RunStatus
    job: JobDefinition
    inputs: dict[str, Any]
    steps: Mapping[str, StepView]
    tools: Mapping[str, ToolDefinition] = field(default_factory=dict)
    jobs: Mapping[str, JobDefinition] = field(default_factory=dict)
    """The nested jobs its steps run, by id (their input schemas are the steps' contracts)."""
    evaluations: Mapping[str, StepEvaluation] = field(default_factory=dict)
    """Evaluations of ``ready`` steps (their condition, their templates), made outside the
    transaction (``engine.evaluate``), by step id."""
    cancel_requested: bool = False
    deadline_at: float | None = None
    order: tuple[str, ...] = ()
    """Step ids in topological order (computed from ``job`` when empty; the engine caches it)."""
    budget: Budget | None = None
    """The run's cost ceiling, if it has one."""
    touched: frozenset[str] | None = None
    """The steps whose work ended since the run was last planned (a generation, a nested run): the
    planner decides only these and what follows from them (their successors, a fan-in that
    becomes ready, the run's end), not every step. None: every step (a timer, an answer, an
    evaluation, a cancel, a retry, a new run)."""
    unfinished: frozenset[str] | None = None
    """The steps not finished as stored (computed from ``steps`` when None and needed)."""
    statuses: Mapping[str, StepStatus] | None = None
    """Every step's stored status, the same as its view's, for reading it without making the view
    (the engine makes a step's view from its row when the planner first reads it, and reads the
    rows of a wide run's untouched steps only when one is needed); None: read from ``steps``."""


# --- actions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class StartRun:
    pass


@dataclass(frozen=True)
class Evaluate:
    """The step's condition or templates must be evaluated before this attempt starts: the step
    is ``ready`` until an evaluation (``RunView.evaluations``) comes back. ``steps`` is what the
    evaluation sees of the other steps."""

    step_id: str
    attempt: int
    tool_id: str | None
    using_fallback: bool
    steps: dict[str, dict[str, Any]] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class StartStep:
    """Run the step's tool (or nested job, when ``job_id`` is set) as a new attempt; with ``item``,
    that item of a map step."""

    step_id: str
    attempt: int
    inputs: dict[str, Any]
    tool_id: str | None = None
    job_id: str | None = None
    using_fallback: bool = False
    deadline_at: float | None = None
    item: int | None = None
    drawn_seeds: tuple[str, ...] = ()
    """Seed inputs the planner drew at random for this attempt (such an attempt is never cached)."""


@dataclass(frozen=True)
class OpenMap:
    """A map step starts: its list is ``items`` (each becomes an item, pending until started);
    ``evaluated``: each item's evaluated inputs or error (``StepEvaluation.items``), kept with it."""

    step_id: str
    items: Sequence[Any]
    evaluated: Sequence[dict[str, Any]] | None = None


@dataclass(frozen=True)
class FinishItem:
    """An item of a map step ends: succeeded with ``outputs``, or failed with ``error`` (after its
    retries and fallback)."""

    step_id: str
    item: int
    succeeded: bool
    outputs: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


@dataclass(frozen=True)
class CompleteMap:
    """Every item of a map step has ended and enough succeeded: the step succeeds with its items'
    outputs gathered into lists (which the engine reads; the run is decided again after)."""

    step_id: str


@dataclass(frozen=True)
class CompleteStep:
    step_id: str
    outputs: dict[str, Any]


@dataclass(frozen=True)
class SkipStep:
    step_id: str
    reason: str
    by_error: bool = False
    error: dict[str, Any] | None = None


@dataclass(frozen=True)
class FailStep:
    step_id: str
    reason: str
    error: dict[str, Any] | None = None


@dataclass(frozen=True)
class RetryStep:
    step_id: str
    at: float
    next_attempt: int
    error: dict[str, Any] | None = None
    item: int | None = None


@dataclass(frozen=True)
class CancelStep:
    """Cancel a step; if it is running, its generation is cancelled at the backend too."""

    step_id: str
    reason: str
    was_running: bool = False


@dataclass(frozen=True)
class ExpireWork:
    """A running step (or ``item`` of a map step) passed its timeout: its generation times out and is
    cancelled at the backend."""

    step_id: str
    item: int | None = None


@dataclass(frozen=True)
class FinishRun:
    status: RunStatus
    outputs: dict[str, Any]
    error: dict[str, Any] | None = None


@dataclass(frozen=True)
class AskStep:
    """An ``ask`` step asks its question: stored as a row, the step waits for input until
    ``expires_at`` (a ``Wake`` brings the decision that answers for the person then)."""

    step_id: str
    attempt: int
    question: dict[str, Any]
    expires_at: float


@dataclass(frozen=True)
class ExpireQuestion:
    """The person did not answer in time: ``answer`` (the step's ``onTimeout``) is recorded."""

    step_id: str
    answer: dict[str, Any]


@dataclass(frozen=True)
class SetWaiting:
    """The run is (``waiting``) or is no longer waiting for a person's input."""

    waiting: bool


@dataclass(frozen=True)
class Wake:
    """Decide again at this time (a retry falls due, a timeout or the deadline passes)."""

    at: float
    keep_earlier: bool = False
    """The call decided only the steps a transition touched (``RunView.touched``): a timer already
    set earlier (for a step it did not see) stays; otherwise this one replaces it."""


Action = (
    StartRun | StartStep | Evaluate | CompleteStep | SkipStep | FailStep | RetryStep | CancelStep | ExpireWork
    | FinishRun | Wake | OpenMap | FinishItem | CompleteMap | AskStep | ExpireQuestion | SetWaiting
)
