"""A run no worker has picked up is ``queued`` (was ``pending``, a state no one saw: runs went
``running`` at once, with or without a worker)

The runs' status CHECK constraint and the partial index of unfinished runs name ``queued``
instead of ``pending``; queued runs keep their place.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_OTHERS = "'running', 'completed', 'partially_completed', 'failed', 'cancelled'"


def _swap(old: str, new: str) -> None:
    op.drop_index("ix_runs_unfinished", table_name="runs")
    check = f"status IN ('{new}', {_OTHERS})"
    if op.get_bind().dialect.name == "sqlite":
        # the old CHECK forbids the new value and the new one the old: rename the rows with checks
        # off, then rebuild the table with the new CHECK
        op.execute("PRAGMA ignore_check_constraints = ON")
        op.execute(f"UPDATE runs SET status = '{new}' WHERE status = '{old}'")
        op.execute("PRAGMA ignore_check_constraints = OFF")
        with op.batch_alter_table("runs", recreate="always") as batch_op:
            batch_op.drop_constraint(op.f("ck_runs_status_valid"), type_="check")
            batch_op.create_check_constraint(op.f("ck_runs_status_valid"), check)
    else:
        op.drop_constraint(op.f("ck_runs_status_valid"), "runs", type_="check")
        op.execute(f"UPDATE runs SET status = '{new}' WHERE status = '{old}'")
        op.create_check_constraint(op.f("ck_runs_status_valid"), "runs", check)
    unfinished = sa.text(f"status IN ('{new}', 'running')")
    op.create_index("ix_runs_unfinished", "runs", ["created_at"], unique=False,
                    sqlite_where=unfinished, postgresql_where=unfinished)


def upgrade() -> None:
    _swap("pending", "queued")


def downgrade() -> None:
    _swap("queued", "pending")
