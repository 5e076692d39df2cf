"""Fixtures shared by every test folder: real stores on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.databases import PostgresDatabase, migrated_sqlite, require_postgres
from toolweave.store.db import Store

pytest_plugins = ["tests.helpers.fixtures"]


@pytest.fixture(scope="session")
def postgres_db() -> Iterator[PostgresDatabase]:
    require_postgres()
    db = PostgresDatabase()
    try:
        yield db
    finally:
        db.drop()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL for each store kind, at the newest revision: a new SQLite file (a copy of a
    migrated one), or PostgreSQL emptied before each test."""
    if request.param == "sqlite":
        yield migrated_sqlite(tmp_path / "toolweave.db")
        return
    db: PostgresDatabase = request.getfixturevalue("postgres_db")
    db.truncate()
    yield db.url


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """A migrated store on ``db_url``, closed after the test."""
    s = Store(db_url)
    s.upgrade()
    try:
        yield s
    finally:
        s.close()
