"""Many rows' writes as one statement on PostgreSQL (``store/multirow.py``): the same rows and the
same answers as one statement per row, which is what SQLite (and every value JSON would not carry
exactly) still does. Each test runs on both stores and counts, on PostgreSQL, the statements sent."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from toolweave.model.status import GenerationStatus
from toolweave.store import generations as gens_q
from toolweave.store import multirow
from toolweave.store import runs as runs_q
from toolweave.store.db import Store, Tx

NOW = 1_733_232_323.123456


class _Counting:
    """The transaction's cursor with a count of ``execute`` and ``executemany`` calls."""

    def __init__(self, cursor: Any, seen: list[str]) -> None:
        self._cursor, self._seen = cursor, seen

    def execute(self, sql: str, params: Any = None) -> Any:
        self._seen.append(sql)
        return self._cursor.execute(sql, params)

    def executemany(self, sql: str, rows: Any, **options: Any) -> Any:
        self._seen.append("(many) " + sql)
        return self._cursor.executemany(sql, rows, **options)

    @property
    def connection(self) -> Any:
        """The connection, whose further cursors (a pipelined read's) count too."""
        seen, connection = self._seen, self._cursor.connection

        class Connection:
            def cursor(self) -> _Counting:
                return _Counting(connection.cursor(), seen)

            def __getattr__(self, name: str) -> Any:
                return getattr(connection, name)

        return Connection()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


def _counted(fn: Any, seen: list[str]) -> Any:
    def run(tx: Tx, *args: Any) -> Any:
        tx.cursor = _Counting(tx.cursor, seen)
        return fn(tx, *args)

    return run


def _put_rows(tx: Tx, rows: list[tuple[str, Any, float | None]]) -> None:
    tx.many(
        "INSERT INTO kv (namespace, key, value, expires_at, updated_at) VALUES ('t', :k, :v, :at, :now)",
        [{"k": k, "v": v, "at": at, "now": NOW} for k, v, at in rows],
    )


def _kv(store: Store) -> dict[str, tuple[Any, float | None]]:
    rows = store.read_sync(lambda tx: tx.all("SELECT key, value, expires_at FROM kv WHERE namespace = 't'"))
    return {r.key: (r.value, r.expires_at) for r in rows}


_SET = "UPDATE kv SET value = :v, expires_at = :at WHERE namespace = 't' AND key = :k"


def test_many_inserts_and_updates_go_as_one_statement_each(store: Store) -> None:
    seen: list[str] = []
    rows = [(f"k{i}", {"i": i, "nested": [1.5, None, "x"]}, NOW + i / 7) for i in range(5)]
    store.run_sync(_counted(_put_rows, seen), rows)
    assert _kv(store) == {k: (v, at) for k, v, at in rows}  # floats come back exactly

    def change(tx: Tx) -> None:
        for i in range(5):
            tx.expect(_SET, {"k": f"k{i}", "v": {"new": i}, "at": None}, key=f"k{i}")

    store.run_sync(_counted(change, seen))
    assert _kv(store) == {f"k{i}": ({"new": i}, None) for i in range(5)}
    if store.dialect == "postgresql":
        assert [s for s in seen if "kv" in s and "jsonb_to_recordset" in s and not s.startswith("(many)")], seen
        assert not [s for s in seen if s.startswith("(many)")]
    assert store.careful_reruns == 0


def test_a_compare_and_set_among_many_that_did_not_apply_is_seen(store: Store) -> None:
    """One statement for five rows changes four: the count is checked before the commit, and the
    transaction runs again with each compare-and-set waited for."""
    store.run_sync(_put_rows, [(f"k{i}", {"i": i}, None) for i in range(5)])
    attempts: list[list[bool]] = []

    def change(tx: Tx) -> list[bool]:
        applied = [
            tx.expect(_SET + " AND expires_at IS NULL", {"k": k, "v": {"changed": True}, "at": 1.0}, key=k)
            for k in ("k0", "k1", "missing", "k3", "k4")
        ]
        attempts.append(applied)
        return applied

    assert store.run_sync(change) == [True, True, False, True, True]
    if store.pipelined:
        assert attempts[0] == [True] * 5 and store.careful_reruns == 1
    assert _kv(store)["k1"] == ({"changed": True}, 1.0)
    assert _kv(store)["k2"] == ({"i": 2}, None)


def test_an_update_naming_one_row_twice_applies_both_in_order(store: Store) -> None:
    """One UPDATE … FROM would change the row once: such rows go one statement each."""
    store.run_sync(_put_rows, [("k", {"v": 0}, None)])
    store.run_sync(lambda tx: tx.many(
        "UPDATE kv SET value = :v WHERE namespace = 't' AND key = :k",
        [{"k": "k", "v": {"v": 1}}, {"k": "k", "v": {"v": 2}}],
    ))
    assert _kv(store)["k"] == ({"v": 2}, None)


def test_values_json_would_not_carry_exactly_keep_one_statement_per_row(store: Store) -> None:
    """An integer beyond 64 bits inside a JSON value: orjson refuses it, the row-by-row way
    writes it."""
    store.run_sync(_put_rows, [("a", {"ok": 1}, None), ("b", {"ok": 2}, None)])
    seen: list[str] = []
    store.run_sync(_counted(lambda tx: tx.many(
        "UPDATE kv SET value = :v WHERE namespace = 't' AND key = :k",
        [{"k": "a", "v": {"big": 2**70}}, {"k": "b", "v": {"ok": 3}}],
    ), seen))
    assert _kv(store) == {"a": ({"big": 2**70}, None), "b": ({"ok": 3}, None)}
    if store.dialect == "postgresql":
        assert any(s.startswith("(many)") for s in seen), seen


def test_a_float_that_is_not_finite_is_not_written_as_null(store: Store) -> None:
    store.run_sync(_put_rows, [("a", {"ok": 1}, None), ("b", {"ok": 2}, None)])
    store.run_sync(lambda tx: tx.many(
        "UPDATE kv SET expires_at = :at WHERE namespace = 't' AND key = :k",
        [{"k": "a", "at": float("inf")}, {"k": "b", "at": 2.5}],
    ))
    assert _kv(store)["a"][1] == float("inf")
    assert _kv(store)["b"][1] == 2.5


def _run(tx: Tx) -> None:
    runs_q.put_snapshot(tx, "0" * 64, "job", "job", "1", {}, NOW)
    runs_q.insert_run(
        tx, run_id="run", job_definition_id="job", definition_version="1", definition_sha="0" * 64, tool_shas={},
        master_account_id="acct", origin={}, status="running", job_inputs={}, created_at=NOW, updated_at=NOW,
    )


def _generation(tx: Tx, gid: str, status: str) -> None:
    gens_q.insert(
        tx, generation_id=gid, run_id="run", step_id="s", attempt=1, master_account_id="acct", tool_id="tool",
        service_name="test", status=status, created_at=NOW,
    )


def test_compare_and_sets_returning_rows_answer_each_in_its_place(store: Store) -> None:
    """``generations.finish_each`` of five generations, one of them finished already: one
    statement on PostgreSQL, each answer where its request was."""
    def setup(tx: Tx) -> None:
        _run(tx)
        for i in range(5):
            _generation(tx, f"g{i}", "completed" if i == 2 else "processing")

    store.run_sync(setup)

    def finish(tx: Tx) -> list[Any]:
        read = gens_q.finish_each(tx, [
            {"generation_id": f"g{i}", "status": GenerationStatus.COMPLETED, "now": NOW + 1,
             "outputs": {"i": i}, "requested_at": NOW, "answered_at": NOW + 0.25}
            for i in (4, 3, 2, 1, 0)
        ])
        return read()

    seen: list[str] = []
    rows = store.run_sync(_counted(finish, seen))
    if store.dialect == "postgresql":
        assert [s for s in seen if s.startswith("UPDATE generations") and "jsonb_to_recordset" in s], seen
    assert [None if r is None else r.generation_id for r in rows] == ["g4", "g3", None, "g1", "g0"]
    assert all(multirow.ORDINAL not in r for r in rows if r is not None)
    assert [r.duration_ms for r in rows if r is not None] == [250] * 4
    stored = store.read_sync(lambda tx: tx.all("SELECT generation_id, outputs FROM generations ORDER BY generation_id"))
    assert [r.outputs for r in stored] == [{"i": 0}, {"i": 1}, None, {"i": 3}, {"i": 4}]


def test_a_decimal_is_written_exactly(store: Store) -> None:
    def setup(tx: Tx) -> None:
        _run(tx)
        for gid in ("a", "b"):
            _generation(tx, gid, "processing")

    store.run_sync(setup)
    store.run_sync(lambda tx: tx.many(
        "UPDATE generations SET cost_usd = :cost_usd WHERE generation_id = :id",
        [{"id": "a", "cost_usd": Decimal("0.12345678")}, {"id": "b", "cost_usd": Decimal("3")}],
    ))
    costs = store.read_sync(lambda tx: tx.all("SELECT generation_id, cost_usd FROM generations ORDER BY generation_id"))
    assert [Decimal(r.cost_usd) for r in costs] == [Decimal("0.12345678"), Decimal("3")]


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM kv WHERE namespace = :ns AND key = :k",
        "INSERT INTO kv (namespace, key, value, updated_at) VALUES (:ns, :k, :v, :now) ON CONFLICT DO NOTHING",
        "UPDATE kv SET value = :v WHERE key IN (SELECT key FROM kv WHERE updated_at > :since)",
        "UPDATE kv SET updated_at = :now + 1 WHERE namespace = :ns AND key = :k",
        "INSERT INTO kv (namespace, key, value, updated_at) VALUES (:ns, :k, :v, :now + 1)",
        "INSERT INTO nowhere (a) VALUES (:a)",
    ],
)
def test_statements_it_does_not_understand_keep_one_statement_per_row(sql: str) -> None:
    columns = {"kv": {"namespace": "character varying(64)", "key": "character varying(200)", "value": "jsonb",
                      "expires_at": "double precision", "updated_at": "double precision"}}
    assert multirow.plan(sql, columns) is None


def test_an_update_plan_joins_by_the_row_it_names() -> None:
    columns = {"kv": {"namespace": "text", "key": "text", "value": "jsonb", "updated_at": "double precision"}}
    found = multirow.plan(_SET.replace(", expires_at = :at", ""), columns)
    assert found is not None and found.keys == ("k",) and found.update
    assert "LIMIT :count" in found.sql and "v._p_k" in found.sql


def test_many_events_keep_the_order_they_were_appended_in(store: Store) -> None:
    """A run's events are read in the order of their ids (``watching.EventHub``)."""
    from toolweave.store import events as events_q

    def append(tx: Tx) -> None:
        _run(tx)
        for i in range(40):
            events_q.append(tx, "run", "step.progress", NOW + (40 - i), step_id="s", i=i, cost=Decimal("0.5"))

    store.run_sync(append)
    found = store.read_sync(lambda tx: events_q.since(tx, "run"))
    assert [e.data for e in found] == [{"i": i, "cost": "0.5"} for i in range(40)]
