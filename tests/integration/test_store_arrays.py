"""Lists of values as one parameter (``db.among``, ``tasks.finish_many``): on PostgreSQL one
array, so a statement's text does not change with the list's length; on SQLite an ``IN`` list.
Each test runs on both stores."""

from __future__ import annotations

import pytest

from toolweave.model.status import TaskKind
from toolweave.store import tasks as tasks_q
from toolweave.store.db import Store, Tx, among

NOW = 1_733_232_323.0
ODD = ['plain', 'with "quotes"', "back\\slash", "comma, inside", "{braces}", "NULL", "", "ünï"]


def test_among_finds_exactly_the_values_given_whatever_they_contain(store: Store) -> None:
    def write(tx: Tx) -> None:
        for key in [*ODD, "other", "NULL2"]:
            tx.q(
                "INSERT INTO kv (namespace, key, value, updated_at) VALUES ('t', :key, CAST('{}' AS JSON), 0)"
                if not tx.is_postgres else
                "INSERT INTO kv (namespace, key, value, updated_at) VALUES ('t', :key, CAST('{}' AS jsonb), 0)",
                {"key": key},
            )

    store.run_sync(write)

    def read(tx: Tx, values: list[str]) -> list[str]:
        where, params = among(tx.dialect, "key", "k", values)
        return [r.key for r in tx.all(f"SELECT key FROM kv WHERE namespace = 't' AND {where} ORDER BY key", params)]

    assert store.read_sync(read, ODD) == sorted(ODD)
    assert store.read_sync(read, ["other"]) == ["other"]
    assert store.read_sync(read, ["absent"]) == []
    # in a pipelined writer too (PostgreSQL)
    assert store.run_sync(read, ODD[:3]) == sorted(ODD[:3])


def test_finish_many_deletes_only_the_tasks_its_claims_still_hold(store: Store) -> None:
    def setup(tx: Tx) -> list[tasks_q.Task]:
        for i in range(4):
            tasks_q.enqueue(tx, TaskKind.ADVANCE, run_id=None, ref_id=f"r{i}", now=NOW, at=NOW)
        return tasks_q.claim(tx, "w1", 4, NOW, 30.0)

    first = store.run_sync(setup)
    assert len(first) == 4
    # the first task's lease ran out and another claim took it over
    store.run_sync(lambda tx: tx.q(
        "UPDATE tasks SET claim_token = 'taken-over', lease_owner = 'w2' WHERE task_id = :id", {"id": first[0].task_id}
    ))
    # a stale claim, a claim whose token names another task, and two good ones
    crossed = tasks_q.Claim(first[1].task_id, "taken-over")
    store.run_sync(tasks_q.finish_many, [first[0].claim, crossed, first[2].claim, first[3].claim])

    left = store.read_sync(lambda tx: tx.all("SELECT task_id, claim_token FROM tasks ORDER BY task_id"))
    assert [(r.task_id, r.claim_token) for r in left] == [
        (first[0].task_id, "taken-over"),
        (first[1].task_id, first[1].token),
    ]


@pytest.mark.parametrize("count", [1, 2, 7])
def test_finish_many_of_any_length(store: Store, count: int) -> None:
    def setup(tx: Tx) -> list[tasks_q.Task]:
        for i in range(count + 1):
            tasks_q.enqueue(tx, TaskKind.ADVANCE, run_id=None, ref_id=f"r{i}", now=NOW, at=NOW)
        return tasks_q.claim(tx, "w1", count + 1, NOW, 30.0)

    claimed = store.run_sync(setup)
    store.run_sync(tasks_q.finish_many, [t.claim for t in claimed[:count]])
    left = store.read_sync(lambda tx: tx.all("SELECT task_id FROM tasks"))
    assert [r.task_id for r in left] == [claimed[count].task_id]
