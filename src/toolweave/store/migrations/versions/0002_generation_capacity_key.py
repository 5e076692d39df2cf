"""generations.capacity_key: the per-server concurrency slot a generation holds

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("generations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("capacity_key", sa.String(length=200), nullable=True))
        batch_op.create_index("ix_generations_capacity", ["capacity_key", "status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("generations", schema=None) as batch_op:
        batch_op.drop_index("ix_generations_capacity")
        batch_op.drop_column("capacity_key")
