"""Tasks of kind ``evaluate``: a run's ready steps, whose conditions and templates are evaluated
outside every transaction (``engine.evaluate``)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_BEFORE = "kind IN ('advance', 'dispatch', 'poll', 'cancel', 'notify')"
_AFTER = "kind IN ('advance', 'dispatch', 'poll', 'cancel', 'notify', 'evaluate')"


def _kinds(check: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        # SQLite changes a CHECK by copying the table: keep AUTOINCREMENT (0004) and the ids it
        # handed out (the copy would start again after the highest id left), and make the
        # descending index again (the reflection loses its order)
        last = bind.execute(sa.text("SELECT seq FROM sqlite_sequence WHERE name = 'tasks'")).scalar() or 0
        with op.batch_alter_table("tasks", recreate="always", table_kwargs={"sqlite_autoincrement": True}) as batch:
            batch.drop_constraint(op.f("ck_tasks_kind_valid"), type_="check")
            batch.create_check_constraint(op.f("ck_tasks_kind_valid"), sa.text(check))
            batch.drop_index("ix_tasks_due")
        op.create_index("ix_tasks_due", "tasks", [sa.text("priority DESC"), "available_at"], unique=False)
        bind.execute(sa.text("DELETE FROM sqlite_sequence WHERE name = 'tasks' AND seq < :last"), {"last": last})
        bind.execute(
            sa.text("INSERT INTO sqlite_sequence (name, seq) SELECT 'tasks', :last "
                    "WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'tasks')"),
            {"last": last},
        )
        return
    op.drop_constraint(op.f("ck_tasks_kind_valid"), "tasks", type_="check")
    op.create_check_constraint(op.f("ck_tasks_kind_valid"), "tasks", sa.text(check))


def upgrade() -> None:
    _kinds(_AFTER)


def downgrade() -> None:
    op.execute("DELETE FROM tasks WHERE kind = 'evaluate'")
    _kinds(_BEFORE)
