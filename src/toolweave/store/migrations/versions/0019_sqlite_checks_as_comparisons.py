"""SQLite: CHECK constraints and the unfinished runs' index conditions as comparisons, not ``IN`` lists

SQLite builds a temporary table for the list of a CHECK constraint ``status IN ('a', 'b', …)``
each time it checks a row it writes: about 37,000 instructions for a nine-value list, against about
1,000 for the same test written ``status = 'a' OR status = 'b' OR …``. Every step row, generation,
task and run written on the step path was checked that way (about a tenth of the worker's instructions
per chain job; docs/benchmarks.md, "2026-12-04, 22:40–23:50"). The constraints allow the same values
as before; only their text changes.

No table is rebuilt and no row is touched: the new text is written into the schema with SQLite's
documented procedure for changes that leave the stored content as it is (``writable_schema``, then
the schema version bumped so every connection reads the schema again). Task ids (``AUTOINCREMENT``
and its counter) and rowids stay as they are. Each new table text is first made once as a
temporary table, so a text SQLite cannot read never reaches the schema; a SQLite that refuses
schema writes (built "defensive") keeps the lists, which are correct, only slower.

The two partial indexes of unfinished runs (``ix_runs_unfinished``, ``ix_runs_account_unfinished``)
had the same kind of list in their condition, ``status IN ('queued', 'running', 'waiting_input')``,
tested for the old and the new row at every change of a run's status (251,600 instructions for a
run's end, 129,600 with comparisons): on SQLite they are made again with the condition as
comparisons, which the queries that read them state word for word (``runs.unfinished``).

PostgreSQL keeps its constraints and indexes (it tests a list as cheaply as comparisons).

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-04
"""

from __future__ import annotations

import re
from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

_LIST = re.compile(r"(CONSTRAINT ck_\w+_valid CHECK \()(\w+) IN \(('[a-z_]+'(?:, '[a-z_]+')*)\)\)")
"""A CHECK constraint of ours as a list: ``CONSTRAINT ck_<table>_<column>_valid CHECK (<column> IN ('a', 'b'))``."""
_COMPARED = re.compile(r"(CONSTRAINT ck_\w+_valid CHECK \()((\w+) = '[a-z_]+'(?: OR \3 = '[a-z_]+')*)\)")
"""The same constraint as comparisons: ``CHECK (<column> = 'a' OR <column> = 'b')``."""
_TABLE_NAME = re.compile(r"^CREATE TABLE (?:IF NOT EXISTS )?(?:\"\w+\"|\w+)")


def _as_comparisons(match: re.Match[str]) -> str:
    column, values = match.group(2), re.findall(r"'[a-z_]+'", match.group(3))
    return match.group(1) + " OR ".join(f"{column} = {v}" for v in values) + ")"


def _as_list(match: re.Match[str]) -> str:
    column, values = match.group(3), re.findall(r"'[a-z_]+'", match.group(2))
    return f"{match.group(1)}{column} IN ({', '.join(values)}))"


def _rewrite(pattern: re.Pattern[str], replace: Callable[[re.Match[str]], str]) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    changed: dict[str, str] = {}
    for name, sql in bind.exec_driver_sql("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall():
        text, count = pattern.subn(replace, sql or "")
        if count:
            changed[name] = text
    if not changed:
        return
    for text in changed.values():  # each new text must be one SQLite reads: made once, as a temporary table
        bind.exec_driver_sql(_TABLE_NAME.sub("CREATE TEMPORARY TABLE _toolweave_check", text, count=1))
        bind.exec_driver_sql("DROP TABLE temp._toolweave_check")
    version = int(bind.exec_driver_sql("PRAGMA schema_version").scalar() or 0)
    written = 0
    bind.exec_driver_sql("PRAGMA writable_schema = ON")
    try:
        for name, text in changed.items():
            bind.exec_driver_sql("UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = ?", (text, name))
            written += 1
    except Exception as exc:  # a SQLite that refuses schema writes (the first one): the lists stay, correct
        if written or "may not be modified" not in str(exc):
            raise
    finally:
        if written:  # every connection reads the schema again before its next statement
            bind.exec_driver_sql(f"PRAGMA schema_version = {version + 1}")
        bind.exec_driver_sql("PRAGMA writable_schema = OFF")
    bind.exec_driver_sql("SELECT COUNT(*) FROM sqlite_master").scalar()  # this one too, at once


_UNFINISHED = ("queued", "running", "waiting_input")
_RUN_INDEXES = {"ix_runs_unfinished": ["created_at"], "ix_runs_account_unfinished": ["master_account_id", "queue_at"]}


def _run_indexes(condition: str) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for name, columns in _RUN_INDEXES.items():
        op.drop_index(name, table_name="runs")
        op.create_index(name, "runs", columns, unique=False, sqlite_where=sa.text(condition))


def upgrade() -> None:
    _rewrite(_LIST, _as_comparisons)
    _run_indexes(" OR ".join(f"status = '{s}'" for s in _UNFINISHED))


def downgrade() -> None:
    _run_indexes(f"status IN ({', '.join(repr(s) for s in _UNFINISHED)})")
    _rewrite(_COMPARED, _as_list)
