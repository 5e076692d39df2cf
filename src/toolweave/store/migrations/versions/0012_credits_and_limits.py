"""Credits, estimates and per-account limits

- ``account_policies``: per account, whether it pays from a balance, its limits and the estimate
  above which Telegram asks first; locked by the submits of an account that pays or has a limit.
- ``credit_ledger``: the append-only ledger (grants, holds, charges, releases, refunds) in whole
  units of 10⁻⁸.
- ``runs.credit_run_id|budget|queue_at``: the run whose hold pays, the cost ceiling with the tools'
  estimates, the fair claiming place.
- ``ix_runs_account_unfinished``: an account's runs in flight and its latest place; ``ix_runs_queued``: where new runs
  join the fair claiming order; ``ix_generations_tool_completed``: a
  tool's recent completed generations (estimates).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
SERIAL_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_UNFINISHED = "status IN ('queued', 'running', 'waiting_input')"
_COMPLETED = "status = 'completed'"


def upgrade() -> None:
    op.create_table(
        "account_policies",
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("credits", sa.Boolean(), nullable=True),
        sa.Column("max_runs_in_flight", sa.Integer(), nullable=True),
        sa.Column("submits_per_minute", sa.Integer(), nullable=True),
        sa.Column("confirm_above", sa.String(length=40), nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_account_policies")),
    )
    op.create_table(
        "credit_ledger",
        sa.Column("entry_id", SERIAL_ID, autoincrement=True, nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("held", sa.BigInteger(), nullable=False),
        sa.Column("run_id", sa.String(length=40), nullable=True),
        sa.Column("generation_id", sa.String(length=40), nullable=True),
        sa.Column("tool_id", sa.String(length=200), nullable=True),
        sa.Column("note", sa.String(length=500), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.CheckConstraint(
            "kind IN ('grant', 'hold', 'charge', 'release', 'refund')", name=op.f("ck_credit_ledger_kind_valid")
        ),
        sa.PrimaryKeyConstraint("entry_id", name=op.f("pk_credit_ledger")),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_credit_ledger_account", "credit_ledger", ["account_id", "entry_id"], unique=False)
    op.create_index(
        "ix_credit_ledger_run", "credit_ledger", ["run_id"], unique=False,
        sqlite_where=sa.text("run_id IS NOT NULL"), postgresql_where=sa.text("run_id IS NOT NULL"),
    )
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("credit_run_id", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("budget", JSON, nullable=True))
        batch.add_column(sa.Column("queue_at", sa.Float(), nullable=True))
    op.create_index(
        "ix_runs_account_unfinished", "runs", ["master_account_id", "queue_at"], unique=False,
        sqlite_where=sa.text(_UNFINISHED), postgresql_where=sa.text(_UNFINISHED),
    )
    op.create_index(
        "ix_runs_queued", "runs", ["queue_at"], unique=False,
        sqlite_where=sa.text("status = 'queued'"), postgresql_where=sa.text("status = 'queued'"),
    )
    op.create_index(
        "ix_generations_tool_completed", "generations", ["tool_id", "created_at"], unique=False,
        sqlite_where=sa.text(_COMPLETED), postgresql_where=sa.text(_COMPLETED),
    )


def downgrade() -> None:
    op.drop_index("ix_generations_tool_completed", table_name="generations")
    op.drop_index("ix_runs_queued", table_name="runs")
    op.drop_index("ix_runs_account_unfinished", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("queue_at")
        batch.drop_column("budget")
        batch.drop_column("credit_run_id")
    op.drop_index("ix_credit_ledger_run", table_name="credit_ledger")
    op.drop_index("ix_credit_ledger_account", table_name="credit_ledger")
    op.drop_table("credit_ledger")
    op.drop_table("account_policies")
