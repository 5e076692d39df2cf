"""Fork and replay: a run links to the run it was forked from, a step to the run it was reused from

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("forked_from_run_id", sa.String(40), nullable=True))
        batch.add_column(sa.Column("forked_from_step", sa.String(200), nullable=True))
    with op.batch_alter_table("step_runs") as batch:
        batch.add_column(sa.Column("reused_from_run_id", sa.String(40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("step_runs") as batch:
        batch.drop_column("reused_from_run_id")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("forked_from_step")
        batch.drop_column("forked_from_run_id")
