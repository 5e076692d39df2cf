"""Fewer index entries per run write, and room for step rows' updates

Every change of a run's status writes a new row version and an entry in each of its indexes
(``status`` is in the predicates of three partial indexes, so no such update is HOT). Three of those
indexes held an entry for every run although their queries only ever look for non-null values:

- ``ix_runs_parent`` (``parent_run_id``): only nested runs have a parent; now partial,
  ``WHERE parent_run_id IS NOT NULL`` (its queries look runs up by a parent's id).
- ``ix_runs_finished`` (``finished_at``): retention reads finished runs older than a time; now
  partial, ``WHERE finished_at IS NOT NULL`` (a run's start no longer writes an entry in it).
- The unique constraint ``uq_runs_master_account_id_idempotency_key`` becomes the partial unique
  index ``ux_runs_idempotency`` (same columns, ``WHERE idempotency_key IS NOT NULL``): runs without a
  key never conflicted (NULLs are distinct) and now have no entry; inserts that yield to a key name
  the index's predicate in their ``ON CONFLICT``.

A run's insert, start and end wrote 20 index entries; they write 12.

``step_runs`` (PostgreSQL): ``fillfactor = 80``, so that a step's updates (none changes an indexed
column) find room on their page and stay HOT (no entry in the primary key); about a third of them
were not HOT when the rows filled their pages at submission.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_PARENT = sa.text("parent_run_id IS NOT NULL")
_FINISHED = sa.text("finished_at IS NOT NULL")
_KEYED = sa.text("idempotency_key IS NOT NULL")
_UQ = "uq_runs_master_account_id_idempotency_key"
FILLFACTOR = {"runs": 70, "step_runs": 70, "generations": 70, "tasks": 80}


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def upgrade() -> None:
    op.drop_index("ix_runs_parent", table_name="runs")
    op.create_index("ix_runs_parent", "runs", ["parent_run_id"], unique=False,
                    sqlite_where=_PARENT, postgresql_where=_PARENT)
    op.drop_index("ix_runs_finished", table_name="runs")
    op.create_index("ix_runs_finished", "runs", ["finished_at"], unique=False,
                    sqlite_where=_FINISHED, postgresql_where=_FINISHED)
    # the unique index first: the keys stay unique throughout
    op.create_index("ux_runs_idempotency", "runs", ["master_account_id", "idempotency_key"], unique=True,
                    sqlite_where=_KEYED, postgresql_where=_KEYED)
    if _sqlite():  # a table constraint: SQLite drops it by rebuilding the table
        with op.batch_alter_table("runs", recreate="always") as batch_op:
            batch_op.drop_constraint(_UQ, type_="unique")
    else:
        op.drop_constraint(_UQ, "runs", type_="unique")
        for table, fill in FILLFACTOR.items():
            op.execute(f"ALTER TABLE {table} SET (fillfactor = {fill})")


def downgrade() -> None:
    if _sqlite():
        with op.batch_alter_table("runs", recreate="always") as batch_op:
            batch_op.create_unique_constraint(_UQ, ["master_account_id", "idempotency_key"])
    else:
        for table in FILLFACTOR:
            op.execute(f"ALTER TABLE {table} RESET (fillfactor)")
        op.create_unique_constraint(_UQ, "runs", ["master_account_id", "idempotency_key"])
    op.drop_index("ux_runs_idempotency", table_name="runs")
    op.drop_index("ix_runs_finished", table_name="runs")
    op.create_index("ix_runs_finished", "runs", ["finished_at"], unique=False)
    op.drop_index("ix_runs_parent", table_name="runs")
    op.create_index("ix_runs_parent", "runs", ["parent_run_id"], unique=False)
