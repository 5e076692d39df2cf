"""Alembic environment: the engine comes from ``config.attributes`` (see ``store/migrate.py``).

On SQLite the migrations run with foreign key enforcement off (a table rebuild drops a table other
rows reference), and each is checked with ``PRAGMA foreign_key_check`` before it commits
(``migrate.sqlite_foreign_keys_off``, ``migrate.refuse_dangling_references``).
"""

from __future__ import annotations

import contextlib

from alembic import context

from toolweave.store.migrate import refuse_dangling_references, sqlite_foreign_keys_off
from toolweave.store.schema import metadata

engine = context.config.attributes.get("engine")
if engine is None:
    raise RuntimeError("run migrations through toolweave.store.migrate")

with engine.connect() as connection:
    sqlite = connection.dialect.name == "sqlite"
    with sqlite_foreign_keys_off(connection) if sqlite else contextlib.nullcontext():
        context.configure(
            connection=connection, target_metadata=metadata, render_as_batch=True,
            on_version_apply=refuse_dangling_references if sqlite else None,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
