"""Real databases for tests: a SQLite file per test, and one fresh PostgreSQL database per session.

PostgreSQL comes from ``TOOLWEAVE_TEST_POSTGRES`` (default: the local server at 127.0.0.1:5432,
user postgres). Outside CI, tests on PostgreSQL skip with a visible reason when no server answers;
in CI (``CI=true``) a missing server is a failure.
"""

from __future__ import annotations

import os
import uuid

import psycopg
import pytest

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
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
