"""Request and response bodies of the HTTP API (their JSON Schemas go into the OpenAPI document)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from toolweave.input_json_schema import json_schema
from toolweave.inputs import text_problem
from toolweave.model.definitions import JobDefinition, ToolDefinition


def _storable(value: str) -> str:
    """Text a body gives that is stored or looked up: a NUL (which PostgreSQL can neither store nor
    compare) is a 422 naming the field."""
    problem = text_problem(value)
    if problem:
        raise ValueError(problem)
    return value


StoredText = Annotated[str, AfterValidator(_storable)]
"""Body text that is stored or looked up in the store."""


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class OutputInfo(BaseModel):
    name: str
    type: str
    description: str = ""


class ToolSummary(_Open):
    toolId: str
    displayName: str
    description: str
    service: str
    version: str
    commandName: str | None
    category: str | None = None
    inputSchema: dict[str, Any] = Field(description="The tool's inputs as a JSON Schema (draft 2020-12)")
    outputs: list[OutputInfo]


class ToolDetail(ToolSummary):
    definition: dict[str, Any] = Field(description="The whole definition, as in its file")


class StepInfo(BaseModel):
    stepId: str
    toolId: str | None
    jobId: str | None
    dependencies: list[str]
    condition: str | None = None


class JobSummary(_Open):
    jobId: str
    displayName: str
    description: str
    version: str
    commandName: str | None
    inputSchema: dict[str, Any] = Field(description="The job's inputs as a JSON Schema (draft 2020-12)")
    outputs: list[OutputInfo]
    steps: list[StepInfo]


class JobDetail(JobSummary):
    definition: dict[str, Any]


class VersionInfo(BaseModel):
    version: str
    displayName: str
    description: str
    latest: bool
    steps: int | None = Field(default=None, description="How many steps (jobs only)")


class DefinitionProblem(BaseModel):
    path: str
    message: str


class ValidationResult(BaseModel):
    valid: bool
    jobId: str | None = None
    version: str | None = None
    problems: list[DefinitionProblem]


def _not_null(schema: dict[str, Any]) -> None:
    """Document an optional field as a plain string (absent, never null)."""
    schema.pop("anyOf", None)
    schema.pop("default", None)
    schema.update({"type": "string", "minLength": 1, "maxLength": 200})


class EstimateRequest(BaseModel):
    """What to run (or estimate): exactly one of ``toolId`` and ``jobId``, with its inputs."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"oneOf": [{"required": ["toolId"]}, {"required": ["jobId"]}]},
    )
    toolId: str | None = Field(default=None, min_length=1, max_length=200, json_schema_extra=_not_null)
    jobId: str | None = Field(default=None, min_length=1, max_length=200, json_schema_extra=_not_null)
    inputs: dict[str, Any] = Field(default_factory=dict, description="Input values by name (see the input schema)")
    version: str | None = Field(
        default=None, min_length=1, max_length=64, json_schema_extra=_not_null,
        description="The definition version to run (default: the latest; see GET /jobs/{id}/versions)",
    )


class SubmitRunRequest(EstimateRequest):
    """What to run: exactly one of ``toolId`` and ``jobId``."""

    callbackUrl: str | None = Field(
        default=None, max_length=2000, description="Where to POST the signed run.completed/failed/cancelled callback"
    )
    priority: int = Field(default=0, ge=-100, le=100)
    costCeiling: Decimal | None = Field(
        default=None, gt=0, le=1_000_000_000, decimal_places=8,
        description="The most the run may cost: a step whose estimate would take it past this is not "
                    "started, and the run ends partially_completed (see docs/credits.md)",
    )

    @field_validator("callbackUrl")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return _callback_url(value)


def _callback_url(value: str | None) -> str | None:
    if value is None:
        return None
    from urllib.parse import urlsplit

    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http(s) URL with a host")
    return value


MAX_BATCH_ITEMS = 1000


class BatchItem(BaseModel):
    """One run of a batch: its inputs, and its own idempotency key."""

    model_config = ConfigDict(extra="forbid")
    inputs: dict[str, Any] = Field(default_factory=dict, description="Input values by name (see the input schema)")
    idempotencyKey: str | None = Field(
        default=None, min_length=1, max_length=200, json_schema_extra=_not_null,
        description="Repeat this item safely: a key the account used before gives that run back",
    )


class SubmitBatchRequest(BaseModel):
    """Many runs of one tool or job: exactly one of ``toolId`` and ``jobId``, and the items."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"oneOf": [{"required": ["toolId"]}, {"required": ["jobId"]}]},
    )
    toolId: str | None = Field(default=None, min_length=1, max_length=200, json_schema_extra=_not_null)
    jobId: str | None = Field(default=None, min_length=1, max_length=200, json_schema_extra=_not_null)
    version: str | None = Field(
        default=None, min_length=1, max_length=64, json_schema_extra=_not_null,
        description="The definition version every item runs (default: the latest)",
    )
    callbackUrl: str | None = Field(default=None, max_length=2000, description="Where each run's callback goes")
    priority: int = Field(default=0, ge=-100, le=100)
    costCeiling: Decimal | None = Field(
        default=None, gt=0, le=1_000_000_000, decimal_places=8,
        description="The most each run may cost (see SubmitRunRequest.costCeiling)",
    )
    items: list[BatchItem] = Field(min_length=1, max_length=MAX_BATCH_ITEMS)

    @field_validator("callbackUrl")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return _callback_url(value)


class ItemProblem(BaseModel):
    """Why one item of a batch was refused (RFC 9457 fields, as every error of the API)."""

    status: int
    title: str
    detail: str
    errors: list[dict[str, str]] = Field(default_factory=list, description="Every bad field: `field` and `message`")


class BatchItemResult(BaseModel):
    index: int = Field(description="The item's place in the request, from 0")
    jobRunId: str | None = Field(default=None, description="Its run (absent when the item was refused)")
    created: bool | None = Field(default=None, description="False when its idempotency key named an earlier run")
    error: ItemProblem | None = Field(default=None, description="Why the item was refused (the others were not)")


class BatchResult(BaseModel):
    items: list[BatchItemResult]
    created: int = Field(description="Items that made a new run")
    existing: int = Field(description="Items whose idempotency key named an earlier run")
    refused: int = Field(description="Items refused (each with its error)")


class RetryRunRequest(BaseModel):
    """Run a run again. Empty: in place, from its failed steps. With ``fromStep`` and/or ``inputs``: as
    a new run (a fork) of the same version that reuses every step upstream of both."""

    model_config = ConfigDict(extra="forbid")
    fromStep: str | None = Field(
        default=None, min_length=1, max_length=200, json_schema_extra=_not_null,
        description="Run again from this step: it and every step downstream of it run again",
    )
    inputs: dict[str, Any] = Field(
        default_factory=dict, description="Inputs to change (the others keep the run's values)"
    )


class RunSummary(_Open):
    jobRunId: str
    jobDefinitionId: str
    version: str
    masterAccountId: str
    status: str
    costUsd: str
    createdAt: str | None
    startedAt: str | None
    finishedAt: str | None
    durationMs: int | None
    error: Any = None
    parentRunId: str | None = None
    forkedFromRunId: str | None = Field(default=None, description="The run this one was forked from")
    forkedFromStep: str | None = None


class ItemCounts(BaseModel):
    total: int
    succeeded: int
    failed: int
    running: int
    waitingRetry: int
    pending: int
    cancelled: int


class QuestionInfo(_Open):
    """What a step that asks a person asked, and the answer (``null`` while it waits)."""

    questionId: str
    runId: str
    stepId: str
    kind: str = Field(description="approve, edit or choose")
    text: str | None
    status: str = Field(description="waiting, answered, expired (the timeout answered) or closed")
    candidates: list[Any] | None = Field(default=None, description="choose: the candidates, by index from 0")
    minChoices: int | None = None
    maxChoices: int | None = None
    fields: list[dict[str, Any]] | None = Field(default=None, description="edit: the fields (as an inputSchema)")
    values: dict[str, Any] | None = Field(default=None, description="edit: the prefilled values")
    shown: dict[str, Any] | None = Field(default=None, description="What else the step shows the person")
    askedAt: str | None
    expiresAt: str | None
    answer: dict[str, Any] | None = None
    answeredBy: str | None = None
    answeredAt: str | None = None


class StepStatusInfo(_Open):
    stepId: str
    status: str
    attempt: int
    toolId: str | None
    outputs: Any = None
    error: Any = None
    progress: float | None = None
    startedAt: str | None = None
    finishedAt: str | None = None
    durationMs: int | None = None
    items: ItemCounts | None = Field(default=None, description="A map step's items by status")
    question: QuestionInfo | None = Field(default=None, description="A step that asks a person: its question")
    reusedFromRunId: str | None = Field(default=None, description="A forked run's step taken over from this run")
    reusedFromPruned: bool | None = Field(default=None, description="Whether that run has been pruned since")


class ItemInfo(_Open):
    index: int
    status: str
    item: Any = None
    attempt: int
    outputs: Any = None
    error: Any = None
    costUsd: str
    startedAt: str | None = None
    finishedAt: str | None = None
    durationMs: int | None = None


class ItemPage(BaseModel):
    runId: str
    stepId: str
    counts: ItemCounts | None = Field(description="The step's items by status (null: not a map step, or its list is not known yet)")
    reusedFromRunId: str | None = Field(
        default=None, description="A fork's step taken over from this run: the items are that run's")
    reusedFromPruned: bool | None = Field(
        default=None, description="Whether that run has been pruned since (its items are gone)")
    items: list[ItemInfo]
    nextAfter: int | None = Field(description="Pass as `after` for the next page; null on the last page")


class NotificationInfo(_Open):
    notificationId: str
    channel: str
    eventType: str
    status: str
    attempts: int
    lastError: str | None = None
    deliveredAt: str | None = None


class RunDetail(RunSummary):
    statusDetail: str | None = Field(
        default=None,
        description="Why a queued run waits, e.g. `no worker is running`; which steps of a running run wait for "
                    "a free slot of their service's concurrency limit; or what a waiting_input run needs; null otherwise")
    waitingFor: list[QuestionInfo] = Field(default_factory=list, description="The questions the run waits on")
    jobInputs: dict[str, Any]
    finalOutputs: Any = None
    forkedFromPruned: bool | None = Field(
        default=None, description="Whether the run this one was forked from has been pruned since (`toolweave prune`)")
    stepStatuses: list[StepStatusInfo]
    generations: list[dict[str, Any]]
    notifications: list[NotificationInfo]


class RunPage(BaseModel):
    items: list[RunSummary]
    nextCursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page")


class RunEvent(BaseModel):
    id: int
    runId: str
    type: str
    stepId: str | None
    data: Any = None
    at: float


class WebhookResult(BaseModel):
    applied: bool = Field(description="false for a duplicate or late update (nothing changed)")


class Health(BaseModel):
    status: str


def _outputs(defn: ToolDefinition | JobDefinition) -> list[OutputInfo]:
    return [OutputInfo(name=o.name, type=o.type.value, description=o.description) for o in defn.output_schema]


def version_info(defn: ToolDefinition | JobDefinition, latest: str) -> dict[str, Any]:
    return {
        "version": defn.version,
        "displayName": defn.display_name,
        "description": defn.description,
        "latest": defn.version == latest,
        "steps": len(defn.steps) if isinstance(defn, JobDefinition) else None,
    }


def tool_summary(tool: ToolDefinition) -> dict[str, Any]:
    return {
        "toolId": tool.tool_id,
        "displayName": tool.display_name or tool.tool_id,
        "description": tool.description,
        "service": tool.service,
        "version": tool.version,
        "commandName": tool.command_name,
        "category": tool.platform_hints.category,
        "inputSchema": json_schema(tool.input_schema),
        "outputs": [o.model_dump() for o in _outputs(tool)],
    }


def job_summary(job: JobDefinition) -> dict[str, Any]:
    return {
        "jobId": job.job_id,
        "displayName": job.display_name or job.job_id,
        "description": job.description,
        "version": job.version,
        "commandName": job.command_name,
        "inputSchema": json_schema(job.input_schema),
        "outputs": [o.model_dump() for o in _outputs(job)],
        "steps": [
            {
                "stepId": s.step_id,
                "toolId": s.tool_id,
                "jobId": s.job_id,
                "dependencies": s.all_dependencies,
                "condition": s.condition,
            }
            for s in job.steps
        ],
    }


class WorkerInfo(_Open):
    workerId: str
    kind: str = Field(description="`worker`, or the process it runs in: `serve`, `telegram`, `cli`")
    host: str
    pid: int
    slots: int
    inFlight: int | None = Field(default=None, description="Tasks it was handling at its last heartbeat")
    tasksHeld: int = Field(description="Tasks it holds a lease on now")
    startedAt: str | None = None
    heartbeatAt: str | None = Field(default=None, description="When it last said it is alive")


class ServiceQueue(BaseModel):
    service: str
    waiting: int = Field(description="Steps due now that no worker has taken yet")
    scheduled: int = Field(description="Steps due later (a retry's backoff, a backend at its concurrency limit)")
    sending: int = Field(description="Steps a worker is sending to the backend now")
    atBackend: int = Field(description="Steps the backend is working on (polled or told by webhook)")
    oldestWaitingSeconds: float | None


class OtherQueue(BaseModel):
    kind: str
    waiting: int
    scheduled: int
    running: int


class OldestWaiting(BaseModel):
    kind: str
    runId: str | None = Field(description="Only when the run is yours")
    service: str | None
    waitingSeconds: float


class QueueStatus(BaseModel):
    checkedAt: str
    workers: list[WorkerInfo]
    slots: int = Field(description="Slots of all live workers together")
    queuedRuns: int = Field(description="Runs no worker has picked up yet")
    waitingReason: str | None = Field(description="Why queued work waits, e.g. `no worker is running`")
    services: list[ServiceQueue]
    other: list[OtherQueue]
    oldestWaiting: OldestWaiting | None


# --- credits, estimates, limits ---------------------------------------------------------------------


class StepEstimate(BaseModel):
    stepId: str = Field(description="The step (``outer/inner`` for a step of a nested job)")
    toolId: str | None
    cost: str = Field(description="Its estimate: each call × calls")
    each: str = Field(description="One call's estimate")
    calls: int = Field(description="How many times it calls its tool (the items of a map step)")
    basis: str = Field(description="How the estimate was made, in words")
    known: bool = Field(description="False when (part of) the cost is only known after the run")


class EstimateResult(BaseModel):
    total: str = Field(description="The run's estimate (decimal text, the unit of the tools' costs)")
    known: bool = Field(description="False when part of the cost is only known after the run")
    steps: list[StepEstimate]
    available: str | None = Field(description="What the account can spend now (null: it does not pay from a balance)")
    covered: bool = Field(description="Whether a submit now would be accepted as far as credits go")
    confirmAbove: str | None = Field(description="The estimate above which the Telegram bot asks first (null: never)")


class AccountLimits(BaseModel):
    maxRunsInFlight: int = Field(description="Runs queued or running at once (0: no limit)")
    submitsPerMinute: int = Field(description="Runs submitted per minute (0: no limit)")
    confirmAbove: str | None


class CreditBalance(BaseModel):
    accountId: str
    credits: bool = Field(description="Whether the account pays for its runs from this balance")
    balance: str = Field(description="Σ of the ledger's amounts")
    held: str = Field(description="Set aside for runs under way (their estimates less what they were charged)")
    available: str = Field(description="balance − held: what a new run's estimate must fit in")
    maxRunsInFlight: int | None = Field(description="The account's own limit (null: the setting's)")
    submitsPerMinute: int | None = Field(description="The account's own limit (null: the setting's)")
    confirmAbove: str | None = Field(description="The account's own threshold (null: the setting's)")
    limits: AccountLimits = Field(description="The limits that apply")


class LedgerEntry(BaseModel):
    entryId: int
    kind: str = Field(description="grant, hold, charge, release or refund")
    amount: str = Field(description="Change to the balance")
    held: str = Field(description="Change to what is held")
    runId: str | None
    generationId: str | None
    toolId: str | None
    note: str | None
    createdAt: str


class LedgerPage(BaseModel):
    items: list[LedgerEntry]
    nextBefore: int | None = Field(description="Pass as `before` for older entries (null: no more)")


class SpendRow(BaseModel):
    accountId: str
    toolId: str
    day: str
    amount: str
    charges: int


class SpendReport(BaseModel):
    since: str
    until: str
    total: str
    byAccount: dict[str, str]
    byTool: dict[str, str]
    byDay: dict[str, str]
    rows: list[SpendRow]


class GrantRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: Decimal = Field(gt=0, le=1_000_000_000, decimal_places=8, description="Credits to add")
    note: StoredText | None = Field(default=None, max_length=500)
    runId: StoredText | None = Field(default=None, max_length=40, description="The run a refund is for")


class PolicyRequest(BaseModel):
    """An account's own values; a field given as null puts the setting's default back, a field left
    out stays as it is."""

    model_config = ConfigDict(extra="forbid")
    credits: bool | None = Field(default=None, description="true: pays from its balance; false: never; null: the setting")
    maxRunsInFlight: int | None = Field(default=None, ge=0, le=1_000_000)
    submitsPerMinute: int | None = Field(default=None, ge=0, le=1_000_000)
    confirmAbove: Decimal | None = Field(default=None, gt=0, le=1_000_000_000, decimal_places=8)
