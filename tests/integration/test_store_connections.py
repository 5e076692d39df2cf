"""The store's own connections: one per thread, kept open, and a lost PostgreSQL connection
replaced without the caller noticing when nothing had run on it yet."""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg
from tests.helpers.databases import PostgresDatabase, admin_url

from toolweave.store.db import Store


def _backend_pid(store: Store) -> int:
    row = store.read_sync(lambda tx: tx.one("SELECT pg_backend_pid() AS pid"))
    assert row is not None
    return int(row.pid)


def test_a_connection_the_server_dropped_is_replaced(postgres_db: PostgresDatabase) -> None:
    """PostgreSQL only: a SQLite file has no server to go away."""
    store = Store(postgres_db.url)
    try:
        first = _backend_pid(store)
        with psycopg.connect(admin_url(), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (first,))
        # the transaction finds its connection dead at the first statement and runs on a new one
        second = _backend_pid(store)
        assert second != first
        assert _backend_pid(store) == second  # and keeps it
    finally:
        store.close()


def test_each_thread_runs_its_transactions_on_a_connection_of_its_own(db_url: str, tmp_path: Path) -> None:
    store = Store(db_url)
    try:
        store.upgrade()
        used: list[object] = []
        errors: list[BaseException] = []
        go = threading.Barrier(4)

        def work() -> None:
            try:
                mine = store._connections.get()
                used.append(mine)
                go.wait(10)  # all four threads hold their connection at once
                for _ in range(20):
                    store.run_sync(lambda tx: tx.one("SELECT COUNT(*) AS n FROM runs"))
                    assert store._connections.get() is mine
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert len({id(conn) for conn in used}) == 4
    finally:
        store.close()
