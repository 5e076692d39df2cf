"""Cached steps: reusable results per account, the cache key of a generation, the random inputs of a run

- ``step_cache``: (account, key) → the outputs of the generation that made them, until ``expires_at``
  (``ix_step_cache_expires`` for pruning).
- ``generations.cache_key|cache_seconds``: where a generation's result goes when it completes;
  ``generations.cached_from``: the generation a cache hit reused.
- ``runs.random_inputs``: the seed inputs drawn at random at submission.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "step_cache",
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("cache_key", sa.String(length=64), nullable=False),
        sa.Column("tool_id", sa.String(length=200), nullable=False),
        sa.Column("outputs", JSON, nullable=False),
        sa.Column("generation_id", sa.String(length=40), nullable=False),
        sa.Column("run_id", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "cache_key", name=op.f("pk_step_cache")),
    )
    op.create_index("ix_step_cache_expires", "step_cache", ["expires_at"], unique=False)
    with op.batch_alter_table("generations") as batch:
        batch.add_column(sa.Column("cache_key", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("cache_seconds", sa.Float(), nullable=True))
        batch.add_column(sa.Column("cached_from", sa.String(length=40), nullable=True))
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("random_inputs", JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("random_inputs")
    with op.batch_alter_table("generations") as batch:
        batch.drop_column("cached_from")
        batch.drop_column("cache_seconds")
        batch.drop_column("cache_key")
    op.drop_index("ix_step_cache_expires", table_name="step_cache")
    op.drop_table("step_cache")
