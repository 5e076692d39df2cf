"""The store's own connections: one per thread, kept open, and a lost PostgreSQL connection
replaced without the caller noticing when nothing had run on it yet."""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg
from tests.helpers.databases import PostgresDatabase, admin_url

from toolweave.store.db import Store, Tx


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


def test_a_transaction_postgresql_rolls_back_to_break_a_deadlock_runs_again(postgres_db: PostgresDatabase) -> None:
    """Two transactions lock two rows in opposite orders: PostgreSQL aborts one of them
    (deadlock_detected); the store runs that one again instead of failing its caller (a 500 on
    the API). PostgreSQL only: SQLite writers take the write lock up front."""
    store = Store(postgres_db.url)
    with psycopg.connect(postgres_db.url, autocommit=True) as setup:
        setup.execute("CREATE TABLE IF NOT EXISTS deadlock_probe (id int PRIMARY KEY, n int NOT NULL)")
        setup.execute("TRUNCATE deadlock_probe")
        setup.execute("INSERT INTO deadlock_probe VALUES (1, 0), (2, 0)")
    both_hold_one = threading.Barrier(2)
    attempts = {1: 0, 2: 0}
    errors: list[BaseException] = []

    def lock_then_other(tx: Tx, first: int, second: int) -> None:
        attempts[first] += 1
        tx.one("SELECT n FROM deadlock_probe WHERE id = :id FOR UPDATE", {"id": first})
        if attempts[first] == 1:
            both_hold_one.wait(10)  # each holds its first row: the second lock closes the cycle
        tx.q("UPDATE deadlock_probe SET n = n + 1 WHERE id = :id", {"id": second})
        tx.one("SELECT n FROM deadlock_probe WHERE id = :id", {"id": second})

    def work(first: int, second: int) -> None:
        try:
            store.run_sync(lock_then_other, first, second)
        except BaseException as exc:  # reported below
            errors.append(exc)

    try:
        threads = [threading.Thread(target=work, args=pair) for pair in ((1, 2), (2, 1))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []
        # at least one of them lost (on a loaded machine PostgreSQL has been seen to pick both, one
        # after the other), and every attempt past the first of each was a rerun the store made
        assert store.conflict_reruns >= 1 and sum(attempts.values()) == 2 + store.conflict_reruns
        rows = store.read_sync(lambda tx: tx.all("SELECT id, n FROM deadlock_probe ORDER BY id"))
        assert [(r.id, r.n) for r in rows] == [(1, 1), (2, 1)]  # each update applied once
    finally:
        store.close()
        with psycopg.connect(postgres_db.url, autocommit=True) as setup:
            setup.execute("DROP TABLE IF EXISTS deadlock_probe")
