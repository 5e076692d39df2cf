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
TABLES = (
    "tasks", "events", "notifications", "webhook_receipts", "generations", "questions", "step_items", "step_runs", "runs",
    "step_cache",
    "snapshots", "artifacts", "api_keys", "account_links", "accounts", "kv", "registered_jobs", "account_policies",
    "credit_ledger",
)


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
        with psycopg.connect(self.url, autocommit=True) as conn:
            exists = conn.execute("SELECT to_regclass('public.runs')").fetchone()
            if exists and exists[0]:
                conn.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")

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
