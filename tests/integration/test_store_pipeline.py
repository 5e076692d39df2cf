"""Pipelined transactions (PostgreSQL writers): queued writes, compare-and-sets taken as done and
checked by the server in the commit's round trip, and the unpipelined run again when one did not
apply. The same tests
run on SQLite, where every statement runs at once."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from tests.helpers.databases import PostgresDatabase, admin_url

from toolweave.model.status import TaskKind
from toolweave.store import tasks as tasks_q
from toolweave.store.db import Store, Tx

NOW = 1_000_000.0


def _put(tx: Tx, key: str, value: str) -> None:
    tx.q(
        "INSERT INTO kv (namespace, key, value, updated_at) VALUES ('t', :k, :v, :now)",
        {"k": key, "v": {"v": value}, "now": NOW},
    )


def _value(store: Store, key: str) -> Any:
    row = store.read_sync(lambda tx: tx.one("SELECT value FROM kv WHERE namespace = 't' AND key = :k", {"k": key}))
    return None if row is None else row.value["v"]


_SET = "UPDATE kv SET value = :v WHERE namespace = 't' AND key = :k"


def test_a_compare_and_set_that_did_not_apply_is_seen_by_the_transaction(store: Store) -> None:
    """Taken as done when pipelined, it is checked before the commit: the transaction is rolled
    back and runs again with every compare-and-set waited for, so what it decides and writes is
    what it would have decided without pipelining."""
    store.run_sync(_put, "here", "before")
    attempts: list[bool] = []

    def change(tx: Tx) -> bool:
        applied = tx.expect(_SET, {"k": "missing", "v": {"v": "x"}}, key="missing")
        attempts.append(applied)
        tx.expect(_SET, {"k": "here", "v": {"v": "applied" if applied else "not applied"}}, key="here")
        return applied

    assert store.run_sync(change) is False
    assert _value(store, "here") == "not applied"
    if store.pipelined:
        assert attempts == [True, False]  # taken as done, then checked
        assert store.careful_reruns == 1
    else:
        assert attempts == [False]


def test_queued_writes_are_sent_before_the_transaction_reads(store: Store) -> None:
    store.run_sync(_put, "k", "0")

    def change(tx: Tx) -> Any:
        tx.expect(_SET, {"k": "k", "v": {"v": "1"}}, key="k")
        tx.put("UPDATE kv SET expires_at = :at WHERE namespace = 't' AND key = :k", {"k": "k", "at": 5.0}, key="k")
        return tx.one("SELECT value, expires_at FROM kv WHERE namespace = 't' AND key = :k", {"k": "k"})

    row = store.run_sync(change)
    assert row.value == {"v": "1"} and row.expires_at == 5.0


def test_writes_to_one_row_keep_their_order(store: Store) -> None:
    """Queued writes of the same statement go together; a second write of a row sends the first."""
    store.run_sync(_put, "k", "0")
    store.run_sync(_put, "other", "0")

    def change(tx: Tx) -> None:
        for value in ("1", "2", "3"):
            tx.expect(_SET, {"k": "k", "v": {"v": value}}, key="k")
            tx.expect(_SET, {"k": "other", "v": {"v": value}}, key="other")
        tx.put("UPDATE kv SET value = :v WHERE namespace = 't' AND key = :k AND value IS NOT NULL",
               {"k": "k", "v": {"v": "last"}}, key="k")

    store.run_sync(change)
    assert _value(store, "k") == "last"
    assert _value(store, "other") == "3"
    assert store.careful_reruns == 0


def test_a_queued_insert_tells_its_generated_id(store: Store) -> None:
    made: list[tasks_q.Task] = []

    def enqueue(tx: Tx) -> list[tasks_q.Task]:
        for ref in ("a", "b", "c"):
            tasks_q.enqueue_leased(
                tx, TaskKind.DISPATCH, run_id="run", ref_id=ref, now=NOW, priority=0, owner="me",
                lease_seconds=30.0, then=made.append,
            )
        return made

    tasks = store.run_sync(enqueue)
    assert [t.ref_id for t in tasks] == ["a", "b", "c"]
    stored = store.read_sync(lambda tx: tx.all("SELECT task_id, ref_id, claim_token FROM tasks ORDER BY task_id"))
    assert [(r.task_id, r.ref_id, r.claim_token) for r in stored] == [(t.task_id, t.ref_id, t.token) for t in tasks]
    assert store.run_sync(tasks_q.finish, tasks[1].claim) is True


def test_a_compare_and_set_that_missed_among_many_commits_nothing_of_its_attempt(store: Store) -> None:
    """Compare-and-sets of one statement go together (one many-row statement on PostgreSQL, checked
    by the server with the commit); when one of them did not apply, nothing the pipelined attempt
    wrote is committed, the writes sent before it and the insert sent after it included, and the
    transaction runs again unpipelined."""
    for key in ("a", "b"):
        store.run_sync(_put, key, "0")
    attempts: list[list[bool]] = []

    def change(tx: Tx) -> list[bool]:
        _put(tx, "written", str(len(attempts)))  # a second attempt would fail on it if the first had committed
        applied = [tx.expect(_SET, {"k": k, "v": {"v": "1"}}, key=k) for k in ("a", "missing", "b")]
        attempts.append(applied)
        tx.put("INSERT INTO kv (namespace, key, value, updated_at) VALUES ('t', 'after', :v, :now)",
               {"v": {"v": str(applied)}, "now": NOW})
        return applied

    assert store.run_sync(change) == [True, False, True]
    if store.pipelined:
        assert attempts == [[True, True, True], [True, False, True]]
        assert store.careful_reruns == 1
    assert [_value(store, k) for k in ("a", "b", "written", "after")] == ["1", "1", "1" if store.pipelined else "0",
                                                                         str([True, False, True])]


def test_a_compare_and_set_that_missed_is_seen_at_the_next_read(store: Store) -> None:
    """A read after a compare-and-set that did not apply fails in its round trip (the server checked
    it): the transaction runs again unpipelined, and its read sees what that run wrote."""
    store.run_sync(_put, "k", "0")

    def change(tx: Tx) -> Any:
        tx.expect(_SET, {"k": "missing", "v": {"v": "x"}}, key="missing")
        tx.expect(_SET, {"k": "k", "v": {"v": "1"}}, key="k")
        return tx.one("SELECT value FROM kv WHERE namespace = 't' AND key = :k", {"k": "k"})

    assert store.run_sync(change).value == {"v": "1"}
    assert store.careful_reruns == (1 if store.pipelined else 0)


def test_a_compare_and_set_sent_row_by_row_is_checked_too(store: Store) -> None:
    """A statement the many-row form does not take (a parameter inside an expression) goes row by
    row, each row's compare-and-set checked by the server."""
    for key in ("a", "b"):
        store.run_sync(_put, key, "0")
    sql = "UPDATE kv SET expires_at = :at + 1 WHERE namespace = 't' AND key = :k"

    def change(tx: Tx, keys: tuple[str, ...]) -> list[bool]:
        return [tx.expect(sql, {"k": k, "at": 1.0}, key=k) for k in keys]

    assert store.run_sync(change, ("a", "b")) == [True, True]
    assert store.careful_reruns == 0
    assert store.run_sync(change, ("a", "missing", "b")) == [True, False, True]
    assert store.careful_reruns == (1 if store.pipelined else 0)


def test_a_failing_statement_rolls_back_the_queued_writes(store: Store) -> None:
    store.run_sync(_put, "k", "0")

    def change(tx: Tx) -> None:
        tx.expect(_SET, {"k": "k", "v": {"v": "1"}}, key="k")
        _put(tx, "k", "duplicate")  # the primary key refuses it

    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        store.run_sync(change)
    assert _value(store, "k") == "0"
    assert store.run_sync(lambda tx: tx.one("SELECT 1 AS one")).one == 1  # the connection is usable


def test_a_writer_whose_connection_the_server_dropped_runs_on_a_new_one(postgres_db: PostgresDatabase) -> None:
    """PostgreSQL only: a pipelined transaction finds the dead connection at its first round trip,
    before anything ran, and runs on a new connection."""
    postgres_db.truncate()
    store = Store(postgres_db.url)
    try:
        pid = store.run_sync(lambda tx: tx.one("SELECT pg_backend_pid() AS pid")).pid
        with psycopg.connect(admin_url(), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))

        def write(tx: Tx) -> int:
            _put(tx, "k", "v")
            return int(tx.one("SELECT pg_backend_pid() AS pid").pid)

        assert store.run_sync(write) != pid
        assert _value(store, "k") == "v"
    finally:
        store.close()
