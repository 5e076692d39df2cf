"""Transactions on libpq (``store/wire.py``): statements buffered until the transaction reads,
prepared once per connection, and what a failed transaction leaves behind. The same tests run on
SQLite, where every statement runs at once."""

from __future__ import annotations

import pytest

from toolweave.store import wire
from toolweave.store.db import Store, Tx

_PUT = "INSERT INTO kv (namespace, key, value, updated_at) VALUES ('w', :k, :v, 1.0)"
_GET = "SELECT key, value FROM kv WHERE namespace = 'w' AND key = :k"


def _keys(store: Store) -> list[str]:
    rows = store.read_sync(lambda tx: tx.all("SELECT key FROM kv WHERE namespace = 'w' ORDER BY key"))
    return [r.key for r in rows]


def test_a_cursor_run_again_before_a_read_gives_its_last_statement(store: Store) -> None:
    """``Tx.q`` sends every statement on the transaction's one cursor: a write and the read after
    it come back in one round trip, and the read's rows are the cursor's."""

    def write_then_read(tx: Tx) -> object:
        tx.q(_PUT, {"k": "a", "v": {"n": 1}})
        row = tx.one(_GET, {"k": "a"})
        return None if row is None else row.value

    assert store.run_sync(write_then_read) == {"n": 1}


def test_one_statement_many_times_before_a_read(store: Store) -> None:
    """The statement's first use prepares it; the uses sent after it, before anything came back,
    run the same prepared statement."""

    def many(tx: Tx) -> list[object]:
        reads = [tx.fetch(_GET, {"k": k}) for k in ("x", "y")]
        for k in ("x", "y", "z"):
            tx.put(_PUT, {"k": k, "v": {"k": k}})
        reads += [tx.fetch(_GET, {"k": k}) for k in ("x", "y", "z")]
        return [[r.value for r in read()] for read in reads]

    assert store.run_sync(many) == [[], [], [{"k": "x"}], [{"k": "y"}], [{"k": "z"}]]
    assert _keys(store) == ["x", "y", "z"]


def test_a_failed_transaction_leaves_its_statements_usable(store: Store) -> None:
    """A statement first prepared in a transaction that failed (here: the primary key refuses the
    second row) runs in the next transaction; the failed one wrote nothing."""
    fresh = "INSERT INTO kv (namespace, key, value, updated_at) VALUES ('w', :k, :v, 2.0)"

    def twice(tx: Tx, keys: tuple[str, ...]) -> None:
        for k in keys:
            tx.q(fresh, {"k": k, "v": {}})

    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        store.run_sync(twice, ("d", "d"))
    assert _keys(store) == []
    store.run_sync(twice, ("d", "e"))
    assert _keys(store) == ["d", "e"]


def test_a_statement_that_does_not_parse_fails_each_time(store: Store) -> None:
    """A statement the server refuses to prepare fails its transaction, and again the next time
    (it is not taken as prepared)."""
    bad = "SELECT no_such_column FROM kv WHERE key = :k"
    for _ in range(2):
        with pytest.raises(Exception, match=r"no_such_column"):
            store.run_sync(lambda tx: tx.all(bad, {"k": "a"}))
    assert store.run_sync(lambda tx: tx.one("SELECT 1 AS one")).one == 1


def test_statements_past_the_limit_are_deallocated(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection keeps at most ``MAX_PREPARED`` prepared statements: the least recently used
    go, and a statement that went is prepared again when it comes back."""
    monkeypatch.setattr(wire, "MAX_PREPARED", 3)

    def each(tx: Tx, n: int) -> list[int]:
        return [tx.one(f"SELECT {i} + :x AS v", {"x": 1}).v for i in range(n)]

    assert store.run_sync(each, 6) == [1, 2, 3, 4, 5, 6]
    assert store.run_sync(each, 6) == [1, 2, 3, 4, 5, 6]
    if store.dialect == "postgresql":
        count = store.read_sync(lambda tx: tx.one("SELECT count(*) AS n FROM pg_prepared_statements WHERE name LIKE 'tw%'"))
        assert count.n <= 3
