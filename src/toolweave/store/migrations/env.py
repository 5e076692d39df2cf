"""Alembic environment: the engine comes from ``config.attributes`` (see ``store/migrate.py``)."""

from __future__ import annotations

from alembic import context

from toolweave.store.schema import metadata

engine = context.config.attributes.get("engine")
if engine is None:
    raise RuntimeError("run migrations through toolweave.store.migrate")

with engine.connect() as connection:
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql("COMMIT") if connection.in_transaction() else None
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
