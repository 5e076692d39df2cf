"""No run stranded: never-reused task ids, claim tokens, an index of unfinished runs

- ``tasks.task_id`` is never reused. SQLite gave a new row the id of a row just deleted: the
  advance task created in the transaction that deleted a poll task took the poll task's id, and the
  worker's later ``finish(<poll id>)`` deleted the advance task, leaving a run with nothing to move
  it. SQLite's table is rebuilt with ``AUTOINCREMENT``; PostgreSQL's id becomes 64 bits.
- ``tasks.claim_token``: written by every claim; only the claim that holds a task may finish,
  reschedule or hand it back.
- ``ix_runs_unfinished``: a partial index over unfinished runs, for the worker's sweep that finds
  runs nothing will move (``runs.stranded``).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


_UNFINISHED = sa.text("status IN ('pending', 'running')")


def upgrade() -> None:
    op.create_index(
        "ix_runs_unfinished", "runs", ["created_at"], unique=False, sqlite_where=_UNFINISHED, postgresql_where=_UNFINISHED
    )
    if op.get_bind().dialect.name == "sqlite":
        # the copy keeps the rows and their ids (sqlite_sequence starts at the largest); the
        # descending index is made again by hand, the reflection loses its order
        with op.batch_alter_table("tasks", recreate="always", table_kwargs={"sqlite_autoincrement": True}) as batch_op:
            batch_op.add_column(sa.Column("claim_token", sa.String(length=32), nullable=True))
            batch_op.drop_index("ix_tasks_due")
        op.create_index("ix_tasks_due", "tasks", [sa.text("priority DESC"), "available_at"], unique=False)
        return
    op.add_column("tasks", sa.Column("claim_token", sa.String(length=32), nullable=True))
    op.alter_column("tasks", "task_id", type_=sa.BigInteger(), existing_type=sa.Integer(), existing_nullable=False)
    op.execute("ALTER SEQUENCE tasks_task_id_seq AS BIGINT")


def downgrade() -> None:
    op.drop_index("ix_runs_unfinished", table_name="runs")
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("tasks", recreate="always") as batch_op:
            batch_op.drop_column("claim_token")
            batch_op.drop_index("ix_tasks_due")
        op.create_index("ix_tasks_due", "tasks", [sa.text("priority DESC"), "available_at"], unique=False)
        return
    op.execute("ALTER SEQUENCE tasks_task_id_seq AS INTEGER")
    op.alter_column("tasks", "task_id", type_=sa.Integer(), existing_type=sa.BigInteger(), existing_nullable=False)
    op.drop_column("tasks", "claim_token")
