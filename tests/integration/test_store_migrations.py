"""Migrations: a fresh store reaches the newest revision, and processes starting together on one
PostgreSQL database migrate it one at a time."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import psycopg
from tests.helpers.databases import admin_url, require_postgres

from toolweave.store.db import Store
from toolweave.store.migrate import current


def test_sqlite_store_is_created_at_the_newest_revision(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'new.db'}")
    store.upgrade()
    store.upgrade()  # a second time is a no-op
    assert current(store.engine) == "0002"
    store.close()


def test_concurrent_upgrades_of_one_postgres_database_do_not_collide() -> None:
    require_postgres()
    name = f"toolweave_mig_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = admin_url().rsplit("/", 1)[0] + "/" + name
    errors: list[BaseException] = []
    stores: list[Store] = []

    def upgrade() -> None:
        store = Store(url)
        stores.append(store)
        try:
            store.upgrade()
        except BaseException as exc:
            errors.append(exc)

    try:
        threads = [threading.Thread(target=upgrade) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []
        assert current(stores[0].engine) == "0002"
    finally:
        for store in stores:
            store.close()
        with psycopg.connect(admin_url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
