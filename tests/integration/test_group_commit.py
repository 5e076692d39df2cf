"""Group commit for requests (``store.batching.GroupCommit``): concurrent callers share one
transaction, each gets its own result, and one bad item fails alone. On both stores."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from toolweave.store import kv
from toolweave.store.batching import GroupCommit
from toolweave.store.db import Store, Tx

NOW = 1_000_000.0


def _put_all(tx: Tx, items: Sequence[str]) -> list[int]:
    """Store each key (a key starting with ``bad`` raises); returns how many keys the table holds
    after each, as this transaction sees it."""
    counts = []
    for key in items:
        if key.startswith("bad"):
            raise ValueError(f"refused {key}")
        kv.put(tx, "t", key, {"v": key}, NOW)
        row = tx.one("SELECT COUNT(*) AS n FROM kv WHERE namespace = 't'")
        assert row is not None
        counts.append(int(row.n))
    return counts


def _keys(store: Store) -> list[str]:
    return [k for k, _ in store.read_sync(kv.items, "t", NOW)]


async def test_concurrent_callers_share_one_transaction_and_get_their_own_results(store: Store) -> None:
    group: GroupCommit[str, int] = GroupCommit(store, _put_all)
    keys = [f"k{i:02d}" for i in range(20)]
    results = await asyncio.gather(*(group(k) for k in keys))
    assert results == list(range(1, 21))  # one transaction saw them one after the other
    assert group.transactions == 1
    assert _keys(store) == keys


async def test_one_bad_item_fails_alone_and_the_others_are_stored(store: Store) -> None:
    group: GroupCommit[str, int] = GroupCommit(store, _put_all)
    keys = ["a", "b", "bad", "c"]
    results = await asyncio.gather(*(group(k) for k in keys), return_exceptions=True)
    assert [type(r).__name__ for r in results] == ["int", "int", "ValueError", "int"]
    assert str(results[2]) == "refused bad"
    assert _keys(store) == ["a", "b", "c"]  # nothing of the failed batch stayed, each good item once
    assert group.transactions == 1 + len(keys)


async def test_items_queued_while_a_transaction_runs_go_in_the_next_and_none_is_lost(store: Store) -> None:
    group: GroupCommit[str, int] = GroupCommit(store, _put_all, concurrency=1, max_items=7)

    async def caller(i: int) -> int:
        await asyncio.sleep(0.001 * (i % 5))
        return await group(f"k{i:03d}")

    results = await asyncio.gather(*(caller(i) for i in range(60)))
    assert sorted(results) == list(range(1, 61))
    assert _keys(store) == [f"k{i:03d}" for i in range(60)]
    assert 60 // 7 <= group.transactions < 60


async def test_a_function_returning_too_few_results_is_an_error_not_a_wrong_answer(store: Store) -> None:
    group: GroupCommit[str, int] = GroupCommit(store, lambda tx, items: [])
    results = await asyncio.gather(group("x"), group("y"), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)


async def test_an_item_answered_with_an_error_fails_alone_in_a_transaction_that_commits(store: Store) -> None:
    """An exception returned as an item's result (found wrong without spoiling the transaction) is
    raised to that caller alone: the batch commits once, nothing runs again."""

    def put_or_refuse(tx: Tx, items: Sequence[str]) -> list[int | Exception]:
        results: list[int | Exception] = []
        for key in items:
            if key.startswith("no"):
                results.append(LookupError(f"no such {key}"))
                continue
            kv.put(tx, "t", key, {"v": key}, NOW)
            results.append(len(key))
        return results

    group: GroupCommit[str, int] = GroupCommit(store, put_or_refuse)
    results = await asyncio.gather(group("a"), group("no-b"), group("cc"), return_exceptions=True)
    assert results[0] == 1 and results[2] == 2
    assert isinstance(results[1], LookupError) and str(results[1]) == "no such no-b"
    assert group.transactions == 1
    assert _keys(store) == ["a", "cc"]


async def test_prepare_runs_before_each_transaction_outside_it_and_its_result_goes_in(store: Store) -> None:
    """``prepare(items)`` runs before the batch's transaction and again before each item's own when
    the batch fails; it runs outside the transaction (it can run one of its own)."""
    prepared_for: list[list[str]] = []

    def prepare(items: Sequence[str]) -> dict[str, str]:
        prepared_for.append(list(items))
        assert store.read_sync(lambda tx: tx.one("SELECT COUNT(*) AS n FROM kv")) is not None
        return {key: key.upper() for key in items}

    def put(tx: Tx, items: Sequence[str], made: dict[str, str]) -> list[str]:
        if any(key.startswith("bad") for key in items):
            raise ValueError("refused")
        for key in items:
            kv.put(tx, "t", key, {"v": made[key]}, NOW)
        return [made[key] for key in items]

    group: GroupCommit[str, str] = GroupCommit(store, put, prepare=prepare)
    results = await asyncio.gather(group("a"), group("bad"), group("c"), return_exceptions=True)
    assert results[0] == "A" and results[2] == "C" and isinstance(results[1], ValueError)
    assert prepared_for == [["a", "bad", "c"], ["a"], ["bad"], ["c"]]
    assert _keys(store) == ["a", "c"]
