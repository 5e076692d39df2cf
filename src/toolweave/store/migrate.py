"""Alembic migrations, run programmatically (``toolweave db upgrade``; embedded stores upgrade
themselves when the CLI or server opens them).

A process opening a store that is at the newest revision already (the usual case) does not load
Alembic at all: ``head_revision`` reads the revision ids from the migration files, and the store
compares them with its ``alembic_version`` row.

On SQLite the migrations run with foreign key enforcement off (``sqlite_foreign_keys_off``, in
``migrations/env.py``): SQLite changes a table by rebuilding it (Alembic's batch mode copies it to a
new table, drops the old one and renames the new one), and with enforcement on, dropping a table
that other rows reference (``runs``, referenced by step rows, map items, questions and generations)
fails with "FOREIGN KEY constraint failed". ``PRAGMA foreign_keys`` is a no-op inside a transaction,
so it is set on the connection before the migrations' transactions begin. Each migration is checked
before it commits instead (``refuse_dangling_references``: ``PRAGMA foreign_key_check``): a row left
without its parent rolls the migration back and the upgrade fails, naming the rows. The store's own
connections keep enforcement on (``connections._sqlite_connect``); the migrations' connection is
closed after them, enforcement set back on first.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlalchemy as sa
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext, MigrationInfo

MIGRATIONS = Path(__file__).parent / "migrations"
_REVISION = re.compile(r'^(down_revision|revision)\s*=\s*(?:"([^"]*)"|None)', re.M)


@functools.cache
def head_revision() -> str | None:
    """The newest revision of the migration files (the one no other revises), read as text."""
    revisions: set[str] = set()
    revised: set[str] = set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        for name, value in _REVISION.findall(path.read_text(encoding="utf-8")):
            if value:
                (revisions if name == "revision" else revised).add(value)
    heads = revisions - revised
    return heads.pop() if len(heads) == 1 else None  # several heads: let Alembic decide


def config(engine: sa.Engine | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


class DanglingReferences(RuntimeError):
    """A migration left rows whose foreign keys name no row: it was rolled back."""


@contextlib.contextmanager
def sqlite_foreign_keys_off(connection: sa.Connection) -> Iterator[None]:
    """Foreign key enforcement off on this SQLite connection while the block runs (its migrations),
    on again after. Set on the DB-API connection, outside any transaction (where the pragma would
    do nothing): SQLAlchemy's ``Connection.connection`` does not begin one."""
    if connection.in_transaction():
        connection.commit()
    dbapi = connection.connection.driver_connection
    assert dbapi is not None
    dbapi.execute("PRAGMA foreign_keys=OFF")
    if dbapi.execute("PRAGMA foreign_keys").fetchone()[0] != 0:
        raise RuntimeError("could not turn SQLite's foreign key enforcement off for the migrations")
    try:
        yield
    finally:
        if connection.in_transaction():  # a migration failed mid-way: its transaction is rolled back
            connection.rollback()
        dbapi.execute("PRAGMA foreign_keys=ON")


def refuse_dangling_references(
    ctx: MigrationContext, step: MigrationInfo, heads: Collection[Any], run_args: Mapping[str, Any]
) -> None:
    """Alembic's ``on_version_apply`` on SQLite: after each migration, inside its transaction (before
    it commits), ``PRAGMA foreign_key_check`` must find nothing; a dangling row rolls it back."""
    assert ctx.connection is not None
    rows = ctx.connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if rows:
        found = ", ".join(f"{r[0]} rowid {r[1]} -> {r[2]}" for r in rows[:10])
        raise DanglingReferences(
            f"after migration {step.up_revision_id} ({'upgrade' if step.is_upgrade else 'downgrade'}), {len(rows)} "
            f"row(s) name no row in the table their foreign key references ({found}): the migration was rolled "
            "back and the store stays at its revision"
        )


MIGRATION_LOCK = 7_466_011_870  # a PostgreSQL advisory lock key: one migration at a time


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its INFO lines would fill every worker log
    import sqlalchemy as sa
    from alembic import command

    if engine.dialect.name != "postgresql":
        command.upgrade(config(engine), revision)
        return
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
        try:
            command.upgrade(config(engine), revision)
        finally:
            conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})
            conn.commit()


def current(engine: sa.Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()

