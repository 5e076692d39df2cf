"""Retention: the indexes ``toolweave prune`` reads through

- ``ix_runs_finished``: finished runs by the time they ended (the oldest first).
- ``ix_artifacts_created``: accounts' artifact records by the time they were made.
- ``ix_step_cache_run``: the cache entries a run made (they go with it).
- ``ix_webhook_receipts_generation``: the webhook receipts of a run's generations (they go too).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_runs_finished", "runs", ["finished_at"], unique=False)
    op.create_index("ix_artifacts_created", "artifacts", ["created_at"], unique=False)
    op.create_index("ix_step_cache_run", "step_cache", ["run_id"], unique=False)
    op.create_index("ix_webhook_receipts_generation", "webhook_receipts", ["generation_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_webhook_receipts_generation", table_name="webhook_receipts")
    op.drop_index("ix_step_cache_run", table_name="step_cache")
    op.drop_index("ix_artifacts_created", table_name="artifacts")
    op.drop_index("ix_runs_finished", table_name="runs")
