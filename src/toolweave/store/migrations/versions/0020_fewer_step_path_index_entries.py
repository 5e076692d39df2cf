"""Fewer index entries written on the step path: two indexes gone, one condition as comparisons

- ``ix_tasks_available`` (``available_at``, ``priority``) had the columns of ``ix_tasks_due``
  (``priority DESC``, ``available_at``) in the other order. Every task's insert, claim and delete
  wrote an entry in both (an in-process step's dispatch task is inserted leased and deleted by the
  next transaction). Its readers — when the next task falls due, the oldest task waiting, the
  queue's oldest waiting task — now read ``ix_tasks_due`` once per distinct priority (a loose index
  scan, ``store/tasks.PRIORITIES``): a handful of seeks, however long the queue.
- ``ix_runs_unfinished`` (``created_at`` of unfinished runs) held the same runs as
  ``ix_runs_account_unfinished``; its one reader, the sweep for stranded runs, reads every
  unfinished run anyway (none of them is normally stranded) and now reads the other index. Every
  run's submission, start and end wrote an entry in it (its start two: a change of ``status``, which
  its condition names, deletes the entry and inserts it again).
- ``ix_step_items_in_flight``'s condition, ``status IN ('running', 'waiting_retry')``, becomes
  comparisons on SQLite (``status = 'running' OR status = 'waiting_retry'``), which SQLite tests
  without building a temporary table at each write of an item's status (0019 did the same for the
  runs' indexes); the items' query states it word for word (``store/items.active_sql``).
  PostgreSQL keeps the list.

Both stores lose the two indexes; nothing else changes and no row is touched.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

_UNFINISHED_COMPARED = "status = 'queued' OR status = 'running' OR status = 'waiting_input'"
_UNFINISHED_LISTED = "status IN ('queued', 'running', 'waiting_input')"
_IN_FLIGHT_COMPARED = "status = 'running' OR status = 'waiting_retry'"
_IN_FLIGHT_LISTED = "status IN ('running', 'waiting_retry')"
_ITEM_COLUMNS = ["run_id", "step_id", "item_index"]


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def _in_flight(condition: str) -> None:
    op.drop_index("ix_step_items_in_flight", table_name="step_items")
    op.create_index("ix_step_items_in_flight", "step_items", _ITEM_COLUMNS, unique=False,
                    sqlite_where=sa.text(condition))


def upgrade() -> None:
    op.drop_index("ix_tasks_available", table_name="tasks")
    op.drop_index("ix_runs_unfinished", table_name="runs")
    if _sqlite():
        _in_flight(_IN_FLIGHT_COMPARED)


def downgrade() -> None:
    if _sqlite():
        _in_flight(_IN_FLIGHT_LISTED)
    condition = sa.text(_UNFINISHED_COMPARED if _sqlite() else _UNFINISHED_LISTED)
    op.create_index("ix_runs_unfinished", "runs", ["created_at"], unique=False,
                    sqlite_where=condition, postgresql_where=condition)
    op.create_index("ix_tasks_available", "tasks", ["available_at", "priority"], unique=False)
