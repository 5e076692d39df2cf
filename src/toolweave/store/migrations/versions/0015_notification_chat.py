"""A chat's messages in order, found by an index: ``notifications.chat_id`` holds the chat a row
goes to (its ``target.chatId``; None for a row that goes to no chat, such as a callback), and
``ix_notifications_chat`` (channel, chat_id, status, created_at, notification_id) finds the oldest
pending row of a chat queued before a given one in one seek. The rows already queued get their
chat from their target here, so a backlog queued before the upgrade keeps its order.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

# the same chats ``store/notifications.chat_of`` takes: an integer or a string of at most 64
# characters, as text (42 and "42" are one chat)
_BACKFILL = {
    "sqlite": (
        "UPDATE notifications SET chat_id = CAST(json_extract(target, '$.chatId') AS TEXT) "
        "WHERE json_valid(target) AND json_type(target, '$.chatId') IN ('integer', 'text') "
        "AND length(CAST(json_extract(target, '$.chatId') AS TEXT)) BETWEEN 1 AND 64"
    ),
    "postgresql": (
        "UPDATE notifications SET chat_id = target ->> 'chatId' "
        "WHERE (jsonb_typeof(target -> 'chatId') = 'string' "
        "OR (jsonb_typeof(target -> 'chatId') = 'number' AND (target ->> 'chatId') ~ '^-?[0-9]+$')) "
        "AND length(target ->> 'chatId') BETWEEN 1 AND 64"
    ),
}


def upgrade() -> None:
    op.add_column("notifications", sa.Column("chat_id", sa.String(length=64), nullable=True))
    op.execute(_BACKFILL[op.get_bind().dialect.name])
    op.create_index(
        "ix_notifications_chat", "notifications", ["channel", "chat_id", "status", "created_at", "notification_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_notifications_chat", table_name="notifications")
    with op.batch_alter_table("notifications") as batch:
        batch.drop_column("chat_id")
