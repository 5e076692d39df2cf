"""Tables of the store (SQLAlchemy Core). One metadata; Alembic migrations are written from it.

Times are epoch seconds (float): cheap to compare on both SQLite and PostgreSQL, converted to
ISO 8601 at the edges. Money is kept as decimal text (``DecimalText``) so SQLite loses nothing.
Status columns carry CHECK constraints built from the enums in ``toolweave.model.status``; a
test keeps them in sync.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator

from toolweave.model.credits import LedgerKind
from toolweave.model.status import (
    GenerationStatus,
    NotificationStatus,
    QuestionStatus,
    RunStatus,
    StepStatus,
    TaskKind,
)
from toolweave.store.items import IN_FLIGHT

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class DecimalText(TypeDecorator[Decimal]):
    """A Decimal stored as text, exact on every backend."""

    impl = sa.String(40)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> str | None:
        return None if value is None else str(Decimal(value))

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> Decimal | None:
        return None if value is None else Decimal(value)


JSON = sa.JSON().with_variant(JSONB(), "postgresql")
SERIAL_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
"""A never-reused 64-bit id (SQLite's AUTOINCREMENT needs the column to be exactly ``INTEGER``, the rowid)."""


UNFINISHED = ["queued", "running", "waiting_input"]
"""The run statuses of unfinished runs (``model.status.RUN_UNFINISHED``)."""


def _check(column: str, enum: type[StrEnum] | tuple[str, ...]) -> tuple[sa.CheckConstraint, sa.CheckConstraint]:
    """The column holds one of the enum's values: ``column IN (…)`` on PostgreSQL; on SQLite the same
    test as comparisons (``column = 'a' OR column = 'b' …``, migration 0019), because SQLite builds
    a temporary table for an ``IN`` list each time it checks a written row (about 37,000
    instructions for a nine-value list, against about 1,000: docs/benchmarks.md)."""
    allowed = [str(v) for v in enum]
    values = ", ".join(f"'{v}'" for v in allowed)
    compared = " OR ".join(f"{column} = '{v}'" for v in allowed)
    return (
        sa.CheckConstraint(f"{column} IN ({values})", name=f"{column}_valid").ddl_if(dialect="postgresql"),
        sa.CheckConstraint(compared, name=f"{column}_valid").ddl_if(dialect="sqlite"),
    )


accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("account_id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

account_links = sa.Table(
    "account_links",
    metadata,
    sa.Column("platform", sa.String(32), primary_key=True),
    sa.Column("external_id", sa.String(128), primary_key=True),
    sa.Column("account_id", sa.String(64), sa.ForeignKey("accounts.account_id"), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("key_id", sa.String(32), primary_key=True),
    sa.Column("account_id", sa.String(64), sa.ForeignKey("accounts.account_id"), nullable=False),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("name", sa.String(200), nullable=False, server_default=""),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("last_used_at", sa.Float),
    sa.Column("revoked_at", sa.Float),
)

snapshots = sa.Table(
    "snapshots",
    metadata,
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("definition_id", sa.String(200), nullable=False),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("body", JSON, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    *_check("kind", ("tool", "job")),
)
"""Each distinct definition a run used, stored once by content hash."""

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("run_id", sa.String(40), primary_key=True),
    sa.Column("job_definition_id", sa.String(200), nullable=False),
    sa.Column("definition_version", sa.String(64), nullable=False),
    sa.Column("definition_sha", sa.String(64), sa.ForeignKey("snapshots.sha256"), nullable=False),
    sa.Column("tool_shas", JSON, nullable=False),
    sa.Column("master_account_id", sa.String(64), nullable=False),
    sa.Column("session_id", sa.String(128)),
    sa.Column("initiating_event_id", sa.String(128)),
    sa.Column("origin", JSON, nullable=False),
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("job_inputs", JSON, nullable=False),
    sa.Column("final_outputs", JSON),
    sa.Column("cost_usd", DecimalText, nullable=False, server_default="0"),
    sa.Column("error", JSON),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("callback_url", sa.String(2000)),
    sa.Column("idempotency_key", sa.String(200)),
    sa.Column("parent_run_id", sa.String(40)),
    sa.Column("parent_step_id", sa.String(200)),
    sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
    sa.Column("deadline_at", sa.Float),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("forked_from_run_id", sa.String(40)),
    sa.Column("forked_from_step", sa.String(200)),
    sa.Column("random_inputs", JSON),
    sa.Column("credit_run_id", sa.String(40)),
    sa.Column("budget", JSON),
    sa.Column("queue_at", sa.Float),
    *_check("status", RunStatus),
    sa.UniqueConstraint("master_account_id", "idempotency_key").ddl_if(dialect="sqlite"),
    postgresql_with={"fillfactor": 70},
)
"""``random_inputs``: the names of the seed inputs drawn at random when the run was submitted (the
steps that read them are never taken from the cache).

``forked_from_run_id``: the run this one was forked from (``runs retry --from``), reusing its
steps that the fork did not have to run again; ``forked_from_step`` the step it ran again from.

``credit_run_id``: the run whose credit hold pays for this run's generations (itself, for a run of
an account with a balance; its root run, for a nested run); None when nothing is held.
``budget``: the run's cost ceiling and the estimate of each tool it may call
(``{"ceiling": "2.5", "tools": {"<toolId>": "0.1"}}``), None without a ceiling.
``queue_at``: the run's place in the fair claiming order (``accounting.fair``); its tasks are due
then (None: its creation time) (migration 0012)."""
sa.Index("ix_runs_account_created", runs.c.master_account_id, runs.c.created_at)
_NESTED = runs.c.parent_run_id.isnot(None)
sa.Index("ix_runs_parent", runs.c.parent_run_id, sqlite_where=_NESTED, postgresql_where=_NESTED)
"""Partial: only nested runs have a parent (0016)."""
_KEYED = runs.c.idempotency_key.isnot(None)
sa.Index(
    "ux_runs_idempotency", runs.c.master_account_id, runs.c.idempotency_key, unique=True,
    postgresql_where=_KEYED,
).ddl_if(dialect="postgresql")
"""Partial, on PostgreSQL: an account's idempotency keys, each naming one run; runs without a key
have no entry (an insert that yields to a key says ``ON CONFLICT (master_account_id,
idempotency_key) WHERE idempotency_key IS NOT NULL``) (0016; a unique constraint on every run
before). SQLite keeps that constraint (the table's ``UniqueConstraint``, for SQLite only): dropping
it there means rebuilding ``runs``, which the rows referencing runs forbid in a migration."""
_UNFINISHED_COMPARED = sa.text(" OR ".join(f"status = '{s}'" for s in UNFINISHED))
"""On SQLite as comparisons: an ``IN`` list in a partial index's condition is built as a temporary
table each time a run's status is written (0019); its queries state it word for word
(``runs.unfinished``)."""
sa.Index(
    "ix_runs_account_unfinished", runs.c.master_account_id, runs.c.queue_at,
    sqlite_where=_UNFINISHED_COMPARED, postgresql_where=runs.c.status.in_(UNFINISHED),
)
"""Partial: an account's runs in flight (counted against its limit) and the latest place among them
(where its next run goes in the fair claiming order) (0012); and every unfinished run, which the
sweep for stranded runs reads, however many have finished (``ix_runs_unfinished``, on
``created_at``, held the same runs for the sweep alone until 0020)."""
sa.Index(
    "ix_runs_queued", runs.c.queue_at,
    sqlite_where=runs.c.status == "queued", postgresql_where=runs.c.status == "queued",
)
"""Partial: the fair place of the earliest run no worker has picked up yet, where new runs join (0012)."""
_FINISHED = runs.c.finished_at.isnot(None)
sa.Index("ix_runs_finished", runs.c.finished_at, sqlite_where=_FINISHED, postgresql_where=_FINISHED)
"""Retention reads the oldest finished runs first (0013); partial: a run has an entry once it has
ended, so its start writes none (0016).

Every update of a run's status writes an entry in each index whose predicate the new version meets
(``status`` is in three predicates, so none is HOT): an index here costs every run's insert, start
and end, and holds no entry it does not need. ``fillfactor = 70`` (PostgreSQL, like ``generations``,
``step_runs`` and ``tasks``, which are also updated soon after they are inserted): the new version
goes on the row's own page, not on another one after the old one is locked (a ``Heap/LOCK`` record
more, and a second page written) (0016)."""

step_runs = sa.Table(
    "step_runs",
    metadata,
    sa.Column("run_id", sa.String(40), sa.ForeignKey("runs.run_id"), primary_key=True),
    sa.Column("step_id", sa.String(200), primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
    sa.Column("tool_id", sa.String(200)),
    sa.Column("using_fallback", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("generation_id", sa.String(40)),
    sa.Column("generation_ids", JSON, nullable=False),
    sa.Column("child_run_id", sa.String(40)),
    sa.Column("outputs", JSON),
    sa.Column("reason", sa.Text),
    sa.Column("error", JSON),
    sa.Column("skipped_by_error", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("progress", sa.Float),
    sa.Column("next_attempt_at", sa.Float),
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    sa.Column("reused_from_run_id", sa.String(40)),
    sa.Column("items_total", sa.Integer),
    sa.Column("items_succeeded", sa.Integer),
    sa.Column("items_failed", sa.Integer),
    sa.Column("question_id", sa.String(40)),
    *_check("status", StepStatus),
    postgresql_with={"fillfactor": 70},
)
"""``reused_from_run_id``: a forked run's step whose outcome was taken over from that run (where it
actually ran) instead of running again. ``items_*``: a map step's item counts (null for other
steps and before its list is known), kept with every item that ends, so that deciding a map step
never counts its items. ``question_id``: an ask step's current question (``questions``).

``fillfactor`` (PostgreSQL): a step's updates change no indexed column, and with room left on
their page they are HOT (no new primary-key entry); rows inserted together at submission filled
their pages, and a third of the updates were not (0016; ``runs``, ``generations`` and ``tasks``
likewise leave room for their updates)."""

step_items = sa.Table(
    "step_items",
    metadata,
    sa.Column("run_id", sa.String(40), sa.ForeignKey("runs.run_id"), primary_key=True),
    sa.Column("step_id", sa.String(200), primary_key=True),
    sa.Column("item_index", sa.Integer, primary_key=True),
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("item", JSON),
    sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
    sa.Column("tool_id", sa.String(200)),
    sa.Column("using_fallback", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("generation_id", sa.String(40)),
    sa.Column("child_run_id", sa.String(40)),
    sa.Column("outputs", JSON),
    sa.Column("error", JSON),
    sa.Column("cost_usd", DecimalText, nullable=False, server_default="0"),
    sa.Column("progress", sa.Float),
    sa.Column("next_attempt_at", sa.Float),
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    *_check("status", StepStatus),
)
"""The items of map steps: one row per item, like a step run of its own (status, attempts, current
generation or child run, outputs, error, cost). ``item`` is the item's value from the list."""
_PENDING = sa.text("status = 'pending'")
sa.Index(
    "ix_step_items_in_flight", step_items.c.run_id, step_items.c.step_id, step_items.c.item_index,
    sqlite_where=sa.text(IN_FLIGHT["sqlite"][1:-1]), postgresql_where=sa.text(IN_FLIGHT["postgresql"]),
)
sa.Index(
    "ix_step_items_pending", step_items.c.run_id, step_items.c.step_id, step_items.c.item_index,
    sqlite_where=_PENDING, postgresql_where=_PENDING,
)
"""A decision reads a map step's items in flight and its next pending ones through these partial
indexes, which hold only such items: its cost does not grow with the items already done. (One index
on (run, step, status, index) was not enough: without statistics on a freshly filled table,
PostgreSQL used it to find an item by its index, reading every item of the step.)"""

questions = sa.Table(
    "questions",
    metadata,
    sa.Column("question_id", sa.String(40), primary_key=True),
    sa.Column("run_id", sa.String(40), sa.ForeignKey("runs.run_id"), nullable=False),
    sa.Column("step_id", sa.String(200), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("account_id", sa.String(64), nullable=False),
    sa.Column("approvers", JSON, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("body", JSON, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("answer", JSON),
    sa.Column("answered_by", sa.String(64)),
    sa.Column("asked_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("answered_at", sa.Float),
    *_check("status", QuestionStatus),
)
"""What an ask step asked a person (``body``: ``engine.asking``) and their answer. ``account_id`` is
the run's account; ``approvers`` the other accounts the step lets answer. The step run names its
current question (``step_runs.question_id``); a retried step asks a new one (migration 0012)."""
sa.Index("ix_questions_run", questions.c.run_id)
sa.Index(
    "ix_questions_waiting", questions.c.account_id, questions.c.asked_at,
    sqlite_where=sa.text("status = 'waiting'"), postgresql_where=sa.text("status = 'waiting'"),
)
"""Partial: the questions waiting for an answer, by account (``toolweave runs waiting``)."""

generations = sa.Table(
    "generations",
    metadata,
    sa.Column("generation_id", sa.String(40), primary_key=True),
    sa.Column("run_id", sa.String(40), sa.ForeignKey("runs.run_id"), nullable=False),
    sa.Column("step_id", sa.String(200), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("master_account_id", sa.String(64), nullable=False),
    sa.Column("session_id", sa.String(128)),
    sa.Column("initiating_event_id", sa.String(128)),
    sa.Column("service_name", sa.String(64), nullable=False),
    sa.Column("tool_id", sa.String(200), nullable=False),
    sa.Column("platform_specific_run_id", sa.String(200)),
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("request_payload", JSON),
    sa.Column("response_payload", JSON),
    sa.Column("outputs", JSON),
    sa.Column("error", JSON),
    sa.Column("progress", sa.Float),
    sa.Column("live_status", sa.String(500)),
    sa.Column("cost_usd", DecimalText),
    sa.Column("notification_platform", sa.String(32)),
    sa.Column("delivery_status", sa.String(32)),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("request_timestamp", sa.Float),
    sa.Column("response_timestamp", sa.Float),
    sa.Column("duration_ms", sa.Integer),
    sa.Column("deadline_at", sa.Float),
    sa.Column("capacity_key", sa.String(200)),
    sa.Column("item_index", sa.Integer),
    sa.Column("cache_key", sa.String(64)),
    sa.Column("cache_seconds", sa.Float),
    sa.Column("cached_from", sa.String(40)),
    sa.Column("sent_at", sa.Float),
    *_check("status", GenerationStatus),
    postgresql_with={"fillfactor": 70},
)
"""``capacity_key``: the concurrency slot (e.g. ``comfyui:<server>``) a generation took before it was
submitted; pending and processing generations with a key are what a service's ``capacity`` limit counts.
``sent_at``: when a service that marks before sending (``marks_sending``) was about to put the
generation's request on the network (migration 0018); NULL: it was never sent, so a dispatch that
comes back after a crash is sent normally rather than treated as recovering."""
sa.Index("ix_generations_run", generations.c.run_id)
# partial: in-process tools have no capacity key (migration 0003)
sa.Index(
    "ix_generations_capacity", generations.c.capacity_key, generations.c.status,
    sqlite_where=generations.c.capacity_key.isnot(None), postgresql_where=generations.c.capacity_key.isnot(None),
)
sa.Index(
    "ix_generations_tool_completed", generations.c.tool_id, generations.c.created_at,
    sqlite_where=generations.c.status == "completed", postgresql_where=generations.c.status == "completed",
)
"""Partial: a tool's recent completed generations, whose durations and costs estimates read (0012)."""

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("task_id", SERIAL_ID, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("run_id", sa.String(40)),
    sa.Column("ref_id", sa.String(40)),
    sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
    sa.Column("available_at", sa.Float, nullable=False),
    sa.Column("lease_owner", sa.String(64)),
    sa.Column("claim_token", sa.String(32)),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", sa.Float, nullable=False),
    *_check("kind", TaskKind),
    sqlite_autoincrement=True,
    postgresql_with={"fillfactor": 80},
)
"""The queue. A task is claimable when ``available_at <= now``: for a queued task that is when it
is due; for a leased one it is when its lease expires (heartbeats push it forward), so an expired
lease is simply claimable again, with the attempt counted. Finished tasks are deleted.

``claim_token`` is written by each claim; only that claim may finish or hand back the task. Task
ids are never reused: a worker holding a finished task's id must never reach a newer task
(``AUTOINCREMENT`` on SQLite, whose plain rowids are reused after a delete; 64 bits on PostgreSQL,
whose sequence would otherwise run out within weeks at full speed) (migration 0004)."""
sa.Index("ix_tasks_due", tasks.c.priority.desc(), tasks.c.available_at)
"""The order claims take tasks in: a claim stops at its limit however long the queue is. The
earliest ``available_at`` (the next task due, the oldest waiting) is read from it once per distinct
priority (``tasks.PRIORITIES``); ``ix_tasks_available`` (the same columns in the other order) was
written by every task's insert, claim and delete for those reads alone (gone in 0020)."""
sa.Index("ix_tasks_ref", tasks.c.kind, tasks.c.ref_id)

events = sa.Table(
    "events",
    metadata,
    sa.Column("event_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(40), nullable=False),
    sa.Column("type", sa.String(40), nullable=False),
    sa.Column("step_id", sa.String(200)),
    sa.Column("data", JSON, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)
"""Append-only; a run's feed is its events in ``event_id`` order.

On PostgreSQL the primary key is ``(run_id, event_id)`` (migration 0017): no query reads an event
by its id alone, and one index serves a run's feed and retention, one entry per event instead of
two. On SQLite ``event_id`` is the rowid (``AUTOINCREMENT``, no index of its own), and
``ix_events_run`` is the events' only index; it exists on SQLite alone (``ddl_if``: the test that
compares this metadata with the migrations skips it on PostgreSQL)."""
sa.Index("ix_events_run", events.c.run_id, events.c.event_id).ddl_if(dialect="sqlite")

artifacts = sa.Table(
    "artifacts",
    metadata,
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("account_id", sa.String(64), primary_key=True),
    sa.Column("mime_type", sa.String(120), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("width", sa.Integer),
    sa.Column("height", sa.Integer),
    sa.Column("filename", sa.String(500)),
    sa.Column("run_id", sa.String(40)),
    sa.Column("created_at", sa.Float, nullable=False),
)
"""Who may read an artifact: one row per (content hash, owning account)."""
sa.Index("ix_artifacts_created", artifacts.c.created_at)
"""Retention reads the oldest records first (0013)."""

notifications = sa.Table(
    "notifications",
    metadata,
    sa.Column("notification_id", sa.String(40), primary_key=True),
    sa.Column("run_id", sa.String(40)),  # None: a chat message of no run's outcome (an answer, a status message)
    sa.Column("account_id", sa.String(64), nullable=False),
    sa.Column("channel", sa.String(32), nullable=False),
    sa.Column("event_type", sa.String(40), nullable=False),
    sa.Column("target", JSON, nullable=False),
    sa.Column("payload", JSON, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_error", sa.Text),
    sa.Column("next_attempt_at", sa.Float),
    sa.Column("delivered_at", sa.Float),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("dedupe_key", sa.String(200)),  # queueing a key already queued is a no-op (migration 0014)
    sa.Column("chat_id", sa.String(64)),  # the target's chat (``target.chatId``), None for no chat (0015)
    *_check("status", NotificationStatus),
)
sa.Index("ix_notifications_run", notifications.c.run_id)
sa.Index("ux_notifications_dedupe", notifications.c.dedupe_key, unique=True)
sa.Index("ix_notifications_status", notifications.c.status, notifications.c.created_at)
sa.Index(
    "ix_notifications_chat", notifications.c.channel, notifications.c.chat_id, notifications.c.status,
    notifications.c.created_at, notifications.c.notification_id,
)
"""A chat's messages go out in the order they were queued: the oldest pending row queued before a
given one is found by one seek of this index (``store/notifications.earlier_pending``) (0015)."""

webhook_receipts = sa.Table(
    "webhook_receipts",
    metadata,
    sa.Column("service", sa.String(64), primary_key=True),
    sa.Column("event_key", sa.String(128), primary_key=True),
    sa.Column("generation_id", sa.String(40), nullable=False),
    sa.Column("received_at", sa.Float, nullable=False),
)
"""Webhook deliveries already applied (deduplication)."""
sa.Index("ix_webhook_receipts_generation", webhook_receipts.c.generation_id)
"""A pruned run's receipts go with its generations (0013)."""

registered_jobs = sa.Table(
    "registered_jobs",
    metadata,
    sa.Column("seq", SERIAL_ID, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(200), nullable=False),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("body", JSON, nullable=False),
    sa.Column("registered_at", sa.Float, nullable=False),
    sa.UniqueConstraint("job_id", "version"),
    sqlite_autoincrement=True,
)
"""Jobs registered through the API, in the order they came (``seq``): every process reads what it
has not seen yet before it answers with definitions, so a job registered through one server is
known to all of them at once (migration 0006)."""

kv = sa.Table(
    "kv",
    metadata,
    sa.Column("namespace", sa.String(64), primary_key=True),
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("value", JSON, nullable=False),
    sa.Column("expires_at", sa.Float),
    sa.Column("updated_at", sa.Float, nullable=False),
)
"""Small durable state of front ends (e.g. a chat waiting for a missing input)."""

step_cache = sa.Table(
    "step_cache",
    metadata,
    sa.Column("account_id", sa.String(64), primary_key=True),
    sa.Column("cache_key", sa.String(64), primary_key=True),
    sa.Column("tool_id", sa.String(200), nullable=False),
    sa.Column("outputs", JSON, nullable=False),
    sa.Column("generation_id", sa.String(40), nullable=False),
    sa.Column("run_id", sa.String(40), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)
"""Results of cached steps, per account: the outputs of the generation that made them, reused by a
later attempt with the same key (the tool's definition hash and its inputs) until ``expires_at``.
A generation's ``cache_key``/``cache_seconds`` say that its result goes into the cache when it
completes; ``cached_from`` marks a generation that was a cache hit (the generation it reused)."""
sa.Index("ix_step_cache_expires", step_cache.c.expires_at)

account_policies = sa.Table(
    "account_policies",
    metadata,
    sa.Column("account_id", sa.String(64), primary_key=True),
    sa.Column("credits", sa.Boolean),
    sa.Column("max_runs_in_flight", sa.Integer),
    sa.Column("submits_per_minute", sa.Integer),
    sa.Column("confirm_above", DecimalText),
    sa.Column("updated_at", sa.Float, nullable=False),
)
"""What an account may do (``accounting``): whether it pays from a balance (``credits``; None: the
setting ``credits_by_default`` decides), its limits (None: the settings' defaults) and the estimate
above which Telegram asks before it runs. A submit of an account that pays or has a limit locks its
row: its limits and hold are decided one submit at a time (migration 0012)."""

credit_ledger = sa.Table(
    "credit_ledger",
    metadata,
    sa.Column("entry_id", SERIAL_ID, primary_key=True, autoincrement=True),
    sa.Column("account_id", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("held", sa.BigInteger, nullable=False),
    sa.Column("run_id", sa.String(40)),
    sa.Column("generation_id", sa.String(40)),
    sa.Column("tool_id", sa.String(200)),
    sa.Column("note", sa.String(500)),
    sa.Column("created_at", sa.Float, nullable=False),
    *_check("kind", LedgerKind),
    sqlite_autoincrement=True,
)
"""Append-only: every change to an account's credits. ``amount`` changes its balance, ``held`` the
part of it set aside for runs, both in whole units of 10⁻⁸ (``model.credits.UNIT``) so that SQL
sums them exactly on both stores. Balance = Σ amount; available = Σ amount − Σ held (migration 0012)."""
sa.Index("ix_credit_ledger_account", credit_ledger.c.account_id, credit_ledger.c.entry_id)
sa.Index(
    "ix_credit_ledger_run", credit_ledger.c.run_id,
    sqlite_where=credit_ledger.c.run_id.isnot(None), postgresql_where=credit_ledger.c.run_id.isnot(None),
)
sa.Index("ix_step_cache_run", step_cache.c.run_id)
"""A pruned run's cache entries go with it (0013)."""
