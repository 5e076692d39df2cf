"""Events on PostgreSQL: one index, the primary key ``(run_id, event_id)``

Every event (nine per chain job, fifteen per fan-out job) wrote a heap row and two index entries:
the primary key on ``event_id`` and ``ix_events_run`` (``run_id``, ``event_id``). No query reads
events by ``event_id`` alone — a run's feed reads ``run_id = … AND event_id > …`` in ``event_id``
order, retention deletes by run — so on PostgreSQL the primary key becomes ``(run_id, event_id)``
and serves both; ``ix_events_run`` goes. ``event_id`` still comes from the table's sequence (never
reused), so the order within a run and across runs is as before.

SQLite keeps its layout: there ``event_id`` is the rowid (``AUTOINCREMENT``), which has no index of
its own, and ``ix_events_run`` is the only index already.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE UNIQUE INDEX pk_events_by_run ON events (run_id, event_id)")
    op.execute("ALTER TABLE events DROP CONSTRAINT pk_events")
    op.execute("ALTER TABLE events ADD CONSTRAINT pk_events PRIMARY KEY USING INDEX pk_events_by_run")
    op.drop_index("ix_events_run", table_name="events")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.create_index("ix_events_run", "events", ["run_id", "event_id"], unique=False)
    op.execute("ALTER TABLE events DROP CONSTRAINT pk_events")
    op.execute("ALTER TABLE events ADD CONSTRAINT pk_events PRIMARY KEY (event_id)")
