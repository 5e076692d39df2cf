"""Alembic migrations, run programmatically (``toolweave db upgrade``; embedded stores upgrade
themselves when the CLI or server opens them).

A process opening a store that is at the newest revision already (the usual case) does not load
Alembic at all: ``head_revision`` reads the revision ids from the migration files, and the store
compares them with its ``alembic_version`` row.
"""

from __future__ import annotations

import functools
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import sqlalchemy as sa
    from alembic.config import Config

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

