"""Fewer index entries per run write, and room on the pages for updates

Every change of a run's status writes a new row version and an entry in each of its indexes
(``status`` is in the predicates of three partial indexes, so no such update is HOT). Three of those
indexes held an entry for every run although their queries only ever look for non-null values:

- ``ix_runs_parent`` (``parent_run_id``): only nested runs have a parent; now partial,
  ``WHERE parent_run_id IS NOT NULL`` (its queries look runs up by a parent's id).
- ``ix_runs_finished`` (``finished_at``): retention reads finished runs older than a time; now
  partial, ``WHERE finished_at IS NOT NULL`` (a run's start no longer writes an entry in it).
- On PostgreSQL the unique constraint ``uq_runs_master_account_id_idempotency_key`` becomes the
  partial unique index ``ux_runs_idempotency`` (same columns, ``WHERE idempotency_key IS NOT NULL``):
  runs without a key never conflicted (NULLs are distinct) and now have no entry; inserts that yield
  to a key name the predicate in their ``ON CONFLICT`` (which SQLite's constraint accepts as well).
  SQLite keeps the constraint: dropping it there means rebuilding ``runs``, and the rows that
  reference runs make the rebuilt table's DROP fail inside the migration's transaction.

A run's insert, start and end wrote 20 index entries; they write 12.

Room on the pages for updates (PostgreSQL, ``fillfactor``): ``runs``, ``step_runs`` and
``generations`` 70, ``tasks`` 80. Their rows are updated soon after they are inserted (a run twice,
a step up to twice, a generation once, a claimed task once), and rows inserted together filled their
pages: an update whose new version does not fit on the row's page locks the old one first (a
``Heap/LOCK`` WAL record) and writes a second page. A step's updates change no indexed column, so
with room they are HOT (no primary-key entry): 75–80 % of them instead of 60 %. (50 for
``step_runs`` made 87 % HOT, but leaves half of every page of the largest table empty for good once
its runs have ended.) The setting applies to pages written from now on.

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
    if _sqlite():
        # SQLite keeps the constraint: dropping it means rebuilding runs, which the rows that
        # reference runs forbid inside the migration's transaction (foreign keys are on)
        return
    # the unique index first: the keys stay unique throughout
    op.create_index("ux_runs_idempotency", "runs", ["master_account_id", "idempotency_key"], unique=True,
                    postgresql_where=_KEYED)
    op.drop_constraint(_UQ, "runs", type_="unique")
    for table, fill in FILLFACTOR.items():
        op.execute(f"ALTER TABLE {table} SET (fillfactor = {fill})")


def downgrade() -> None:
    if not _sqlite():
        for table in FILLFACTOR:
            op.execute(f"ALTER TABLE {table} RESET (fillfactor)")
        op.create_unique_constraint(_UQ, "runs", ["master_account_id", "idempotency_key"])
        op.drop_index("ux_runs_idempotency", table_name="runs")
    op.drop_index("ix_runs_finished", table_name="runs")
    op.create_index("ix_runs_finished", "runs", ["finished_at"], unique=False)
    op.drop_index("ix_runs_parent", table_name="runs")
    op.create_index("ix_runs_parent", "runs", ["parent_run_id"], unique=False)
