"""Map steps: one row per item, item counts on the step run, the item a generation works on

- ``step_items``: each item of a map step, like a step run of its own; the partial indexes
  ``ix_step_items_in_flight`` and ``ix_step_items_pending`` are how a decision finds the items in
  flight and the next pending ones without reading the items already done.
- ``step_runs.items_total|items_succeeded|items_failed``: the counts the planner reads.
- ``generations.item_index``: which item of its step a generation works on.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
IN_FLIGHT = "status IN ('running', 'waiting_retry')"
PENDING = "status = 'pending'"


def upgrade() -> None:
    # the step statuses of this revision (0011 adds waiting_input)
    statuses = "'pending', 'ready', 'running', 'waiting_retry', 'succeeded', 'failed', 'skipped', 'cancelled'"
    op.create_table(
        "step_items",
        sa.Column("run_id", sa.String(length=40), nullable=False),
        sa.Column("step_id", sa.String(length=200), nullable=False),
        sa.Column("item_index", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("item", JSON, nullable=True),
        sa.Column("attempt", sa.Integer(), server_default="0", nullable=False),
        sa.Column("tool_id", sa.String(length=200), nullable=True),
        sa.Column("using_fallback", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("generation_id", sa.String(length=40), nullable=True),
        sa.Column("child_run_id", sa.String(length=40), nullable=True),
        sa.Column("outputs", JSON, nullable=True),
        sa.Column("error", JSON, nullable=True),
        sa.Column("cost_usd", sa.String(length=40), server_default="0", nullable=False),
        sa.Column("progress", sa.Float(), nullable=True),
        sa.Column("next_attempt_at", sa.Float(), nullable=True),
        sa.Column("started_at", sa.Float(), nullable=True),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.CheckConstraint(f"status IN ({statuses})", name=op.f("ck_step_items_status_valid")),
        sa.ForeignKeyConstraint(["run_id"], ["runs.run_id"], name=op.f("fk_step_items_run_id")),
        sa.PrimaryKeyConstraint("run_id", "step_id", "item_index", name=op.f("pk_step_items")),
    )
    for name, where in (("ix_step_items_in_flight", IN_FLIGHT), ("ix_step_items_pending", PENDING)):
        op.create_index(
            name, "step_items", ["run_id", "step_id", "item_index"], unique=False,
            sqlite_where=sa.text(where), postgresql_where=sa.text(where),
        )
    with op.batch_alter_table("step_runs") as batch:
        batch.add_column(sa.Column("items_total", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("items_succeeded", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("items_failed", sa.Integer(), nullable=True))
    with op.batch_alter_table("generations") as batch:
        batch.add_column(sa.Column("item_index", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("generations") as batch:
        batch.drop_column("item_index")
    with op.batch_alter_table("step_runs") as batch:
        batch.drop_column("items_failed")
        batch.drop_column("items_succeeded")
        batch.drop_column("items_total")
    op.drop_index("ix_step_items_pending", table_name="step_items")
    op.drop_index("ix_step_items_in_flight", table_name="step_items")
    op.drop_table("step_items")
