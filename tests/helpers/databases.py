"""Real databases for tests: a SQLite file per test, and one fresh PostgreSQL database per session.

A test's SQLite file starts as a copy of one store migrated once per test process
(``migrated_sqlite``): Alembic's nineteen migrations on a new file took 0.15–0.6 s, and the suite
opens a new SQLite store over a thousand times. The migrations themselves are tested on their own
files (``tests/integration/test_store_migrations.py``).

PostgreSQL comes from ``TOOLWEAVE_TEST_POSTGRES`` (default: the local server at 127.0.0.1:5432,
user postgres). Outside CI, tests on PostgreSQL skip with a visible reason when no server answers;
in CI (``CI=true``) a missing server is a failure.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import shutil
import sqlite3
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


@functools.cache
def _sqlite_template() -> Path:
    """A SQLite store at the newest revision, made once per process by the store's own upgrade,
    then written out whole (``VACUUM INTO``: one file, nothing left in a write-ahead log)."""
    from toolweave.store.db import Store

    folder = Path(tempfile.mkdtemp(prefix="toolweave-template-"))
    atexit.register(shutil.rmtree, folder, True)
    store = Store(f"sqlite:///{folder / 'migrating.db'}")
    try:
        store.upgrade()
    finally:
        store.close()
    template = folder / "template.db"
    with contextlib.closing(sqlite3.connect(folder / "migrating.db")) as conn:
        conn.execute("VACUUM INTO ?", (str(template),))
    return template


def migrated_sqlite(path: Path) -> str:
    """``path`` made a new SQLite store at the newest revision (a copy of the template); its URL."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_sqlite_template(), path)
    return f"sqlite:///{path}"


def seed_home_store(home: Path, database_url: str | None) -> None:
    """Where an App on ``home`` would make its default SQLite store (no ``database_url``) and none is
    there yet, the migrated template's copy instead (what the upgrade would make, without Alembic)."""
    path = Path(home) / "toolweave.db"  # Settings.db_url's default
    if not database_url and not path.exists():
        migrated_sqlite(path)


def admin_url() -> str:
    return os.environ.get("TOOLWEAVE_TEST_POSTGRES", DEFAULT_ADMIN_URL)


def postgres_available() -> str | None:
    """None when a server answers, else the reason it does not."""
    try:
        with psycopg.connect(admin_url(), connect_timeout=3):
            return None
    except Exception as exc:
        return f"no PostgreSQL at {admin_url()}: {exc}".strip()


class PostgresDatabase:
    """A database created for this test session and dropped at its end."""

    def __init__(self) -> None:
        self.name = f"toolweave_test_{uuid.uuid4().hex[:10]}"
        base = admin_url().rsplit("/", 1)[0]
        self.url = f"{base}/{self.name}"
        with psycopg.connect(admin_url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')

    def truncate(self) -> None:
        """Empty every table but Alembic's and restart the sequences, found in the catalogue (a new
        migration's tables need no list here). DELETE with foreign-key triggers off, not TRUNCATE: on
        a test's few rows it takes tens of milliseconds, where TRUNCATE, which makes new files for
        every table and index, took 300–600 ms on a loaded machine, minutes over the whole suite."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            tables = [row[0] for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
            )]
            sequences = [row[0] for row in conn.execute(
                "SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'"
            )]
            with conn.transaction():
                conn.execute("SET LOCAL session_replication_role = replica")  # any order: no FK checks
                for table in tables:
                    conn.execute(f'DELETE FROM "{table}"')
                for sequence in sequences:
                    conn.execute("SELECT setval(%s, 1, false)", (sequence,))

    def drop(self) -> None:
        with psycopg.connect(admin_url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def require_postgres() -> None:
    reason = postgres_available()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI needs PostgreSQL: {reason}")
    pytest.skip(reason)
