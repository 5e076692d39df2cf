"""generations.sent_at: when a remote service was about to send the generation's request

A dispatch task whose lease a worker lost (it died) comes back with ``attempts > 1``, and the
services that cannot safely send twice treat that as "an earlier lease may have reached the
backend" (``recovering``). A worker that died before it sent anything made that true too. A service
that says it marks before sending (``marks_sending``) now records the moment in ``sent_at``, in a
transaction of its own guarded by the dispatch task's claim, right before the request goes on the
network; a recovering dispatch without the mark was never sent and is sent normally.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("generations", sa.Column("sent_at", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("generations", schema=None) as batch_op:
        batch_op.drop_column("sent_at")
