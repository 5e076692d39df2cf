"""Every message to a chat goes through the outbox: a notification may belong to no run (an answer
to a command, a question, a status message), and ``dedupe_key`` makes queueing the same message
twice (an update handled again) a no-op; ``ix_notifications_status`` lists undelivered ones.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.alter_column("run_id", existing_type=sa.String(length=40), nullable=True)
        batch.add_column(sa.Column("dedupe_key", sa.String(length=200), nullable=True))
    op.create_index("ux_notifications_dedupe", "notifications", ["dedupe_key"], unique=True)
    op.create_index("ix_notifications_status", "notifications", ["status", "created_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_notifications_status", table_name="notifications")
    op.drop_index("ux_notifications_dedupe", table_name="notifications")
    op.execute("DELETE FROM notifications WHERE run_id IS NULL")
    with op.batch_alter_table("notifications") as batch:
        batch.drop_column("dedupe_key")
        batch.alter_column("run_id", existing_type=sa.String(length=40), nullable=False)
