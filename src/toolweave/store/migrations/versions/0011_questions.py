"""Steps that ask a person: the ``questions`` table, ``step_runs.question_id``, and the status
``waiting_input`` of runs and step runs

- ``questions``: what an ask step asked, of which account (and its approvers), and the answer;
  ``ix_questions_waiting`` (partial) holds only the questions waiting for an answer;
- ``runs.status`` and ``step_runs.status`` (and ``step_items.status``, which shares the step
  statuses) may be ``waiting_input``; the partial index of unfinished runs counts such runs.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_RUNS = "'queued', 'running', {}'completed', 'partially_completed', 'failed', 'cancelled'"
_STEPS = "'pending', 'ready', 'running', 'waiting_retry', {}'succeeded', 'failed', 'skipped', 'cancelled'"
_ITEM_INDEXES = {"ix_step_items_in_flight": "status IN ('running', 'waiting_retry')", "ix_step_items_pending": "status = 'pending'"}


def _checks(waiting: bool) -> None:
    extra = "'waiting_input', " if waiting else ""
    unfinished = sa.text("status IN ('queued', 'running'" + (", 'waiting_input')" if waiting else ")"))
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.drop_index("ix_runs_unfinished", table_name="runs")
    for table, statuses in (("runs", _RUNS), ("step_runs", _STEPS), ("step_items", _STEPS)):
        name = op.f(f"ck_{table}_status_valid")
        check = f"status IN ({statuses.format(extra)})"
        if not sqlite:
            op.drop_constraint(name, table, type_="check")
            op.create_check_constraint(name, table, check)
            continue
        # SQLite changes a CHECK by copying the table: the partial indexes are made again after
        if table == "step_items":
            for index in _ITEM_INDEXES:
                op.drop_index(index, table_name="step_items")
        with op.batch_alter_table(table, recreate="always") as batch:
            batch.drop_constraint(name, type_="check")
            batch.create_check_constraint(name, check)
        if table == "step_items":
            for index, where in _ITEM_INDEXES.items():
                op.create_index(index, "step_items", ["run_id", "step_id", "item_index"], unique=False,
                                sqlite_where=sa.text(where))
    op.create_index("ix_runs_unfinished", "runs", ["created_at"], unique=False,
                    sqlite_where=unfinished, postgresql_where=unfinished)


def upgrade() -> None:
    op.create_table(
        "questions",
        sa.Column("question_id", sa.String(length=40), nullable=False),
        sa.Column("run_id", sa.String(length=40), nullable=False),
        sa.Column("step_id", sa.String(length=200), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("approvers", JSON, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("body", JSON, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("answer", JSON, nullable=True),
        sa.Column("answered_by", sa.String(length=64), nullable=True),
        sa.Column("asked_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("answered_at", sa.Float(), nullable=True),
        sa.CheckConstraint("status IN ('waiting', 'answered', 'expired', 'closed')", name=op.f("ck_questions_status_valid")),
        sa.ForeignKeyConstraint(["run_id"], ["runs.run_id"], name=op.f("fk_questions_run_id")),
        sa.PrimaryKeyConstraint("question_id", name=op.f("pk_questions")),
    )
    op.create_index("ix_questions_run", "questions", ["run_id"], unique=False)
    waiting = sa.text("status = 'waiting'")
    op.create_index("ix_questions_waiting", "questions", ["account_id", "asked_at"], unique=False,
                    sqlite_where=waiting, postgresql_where=waiting)
    with op.batch_alter_table("step_runs") as batch:
        batch.add_column(sa.Column("question_id", sa.String(length=40), nullable=True))
    _checks(waiting=True)


def downgrade() -> None:
    op.execute("UPDATE runs SET status = 'running' WHERE status = 'waiting_input'")
    op.execute("UPDATE step_runs SET status = 'cancelled' WHERE status = 'waiting_input'")
    _checks(waiting=False)
    with op.batch_alter_table("step_runs") as batch:
        batch.drop_column("question_id")
    op.drop_index("ix_questions_waiting", table_name="questions")
    op.drop_index("ix_questions_run", table_name="questions")
    op.drop_table("questions")
