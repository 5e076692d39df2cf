"""SQLite writers in different processes waiting for each other: another process holds the store's
write lock; a transaction waits for it (on the event loop, which goes on meanwhile, or on its
thread) and then commits, or gives up at its deadline with ``WriteLockTimeout`` having written
nothing. SQLite only: PostgreSQL has no store-wide write lock."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from toolweave.app import App
from toolweave.settings import Settings
from toolweave.store import kv
from toolweave.store.db import Store, Tx, WriteLockTimeout

NOW = 1_000_000.0
PATIENCE = 20.0
"""Seconds a test waits for something that must happen (a bound against hanging, not a measurement)."""

HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("BEGIN IMMEDIATE")
conn.execute("INSERT INTO kv (namespace, key, value, expires_at, updated_at) VALUES ('t', 'holder', '1', NULL, 0)")
print("held", flush=True)
sys.stdin.readline()
conn.execute(sys.argv[2])
print("released", flush=True)
"""


class Holder:
    """Another process holding the SQLite store's write lock (a transaction that wrote a row) until
    ``release`` commits it (or, with ``rollback``, rolls it back)."""

    def __init__(self, path: Path, *, rollback: bool = False) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(path), "ROLLBACK" if rollback else "COMMIT"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "held"

    def release(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "released"
        assert self.proc.wait(PATIENCE) == 0

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(PATIENCE)


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[tuple[Store, Path]]:
    path = tmp_path / "toolweave.db"
    store = Store(f"sqlite:///{path}")
    store.upgrade()
    try:
        yield store, path
    finally:
        store.close()


def _put(tx: Tx, key: str, calls: list[str]) -> list[str]:
    """Store ``key``; returns the keys this transaction sees."""
    calls.append(key)
    kv.put(tx, "t", key, {"v": key}, NOW)
    return [k for k, _ in kv.items(tx, "t", NOW)]


def _keys(store: Store) -> list[str]:
    return [k for k, _ in store.read_sync(kv.items, "t", NOW)]


async def _until(check: Any) -> None:
    for _ in range(int(PATIENCE / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("never happened")


async def test_a_transaction_waits_on_the_loop_for_another_process_and_then_commits(
    sqlite_store: tuple[Store, Path],
) -> None:
    store, path = sqlite_store
    holder = Holder(path)
    try:
        calls: list[str] = []
        waiting = asyncio.ensure_future(store.tx(_put, "mine", calls))
        # this coroutine runs while the transaction waits: the wait does not block the loop (the
        # lock is released only by what this coroutine does next)
        await _until(lambda: store.lock_waits == 1)
        assert not waiting.done()
        assert calls == []  # nothing of the transaction ran while the lock was held
        holder.release()
        seen = await asyncio.wait_for(waiting, PATIENCE)
    finally:
        holder.kill()
    assert calls == ["mine"]  # the function ran once, after the other process committed
    assert seen == ["holder", "mine"]
    assert _keys(store) == ["holder", "mine"]


async def test_transactions_waiting_together_on_one_loop_each_commit_once(sqlite_store: tuple[Store, Path]) -> None:
    """Several coroutines of one process waiting for the lock at once: each transaction runs whole
    on the process's one connection, none interleaves with another."""
    store, path = sqlite_store
    holder = Holder(path, rollback=True)
    try:
        calls: list[str] = []
        keys = [f"k{i}" for i in range(8)]
        waiting = [asyncio.ensure_future(store.tx(_put, key, calls)) for key in keys]
        await _until(lambda: store.lock_waits >= 1)
        holder.release()
        seen = await asyncio.wait_for(asyncio.gather(*waiting), PATIENCE)
    finally:
        holder.kill()
    assert sorted(calls) == keys
    assert sorted(len(s) for s in seen) == list(range(1, 9))  # one after the other
    assert _keys(store) == keys  # the holder's row was rolled back


def test_a_transaction_on_a_thread_waits_for_another_process_and_then_commits(sqlite_store: tuple[Store, Path]) -> None:
    store, path = sqlite_store
    holder = Holder(path)
    results: list[Any] = []
    calls: list[str] = []

    def write() -> None:
        try:
            results.append(store.run_sync(_put, "mine", calls))
        except BaseException as exc:  # reported below
            results.append(exc)

    thread = threading.Thread(target=write)
    try:
        thread.start()
        for _ in range(int(PATIENCE / 0.01)):
            if store.lock_waits:
                break
            thread.join(0.01)
        assert store.lock_waits == 1 and thread.is_alive() and calls == []
        holder.release()
        thread.join(PATIENCE)
    finally:
        holder.kill()
    assert results == [["holder", "mine"]]
    assert calls == ["mine"]


async def test_past_the_deadline_a_transaction_fails_clearly_and_writes_nothing(sqlite_store: tuple[Store, Path]) -> None:
    store, path = sqlite_store
    store.write_lock_timeout = 0.3
    holder = Holder(path, rollback=True)
    calls: list[str] = []
    try:
        with pytest.raises(WriteLockTimeout, match=r"stayed locked by another writer .* wrote nothing"):
            await store.tx(_put, "mine", calls)
        with pytest.raises(WriteLockTimeout, match=r"for 0\.3 s"):
            store.run_sync(_put, "mine", calls)
        assert calls == []
        holder.release()
    finally:
        holder.kill()
    assert _keys(store) == []
    assert await store.tx(_put, "after", calls) == ["after"]  # the store works on once the lock is free


async def test_a_reader_is_not_kept_waiting_by_another_process_writing(sqlite_store: tuple[Store, Path]) -> None:
    """WAL: a reader takes no write lock, and sees what was committed before the writer began."""
    store, path = sqlite_store
    await store.tx(_put, "before", [])
    holder = Holder(path)
    try:
        assert await store.read(lambda tx: [k for k, _ in kv.items(tx, "t", NOW)]) == ["before"]
        assert store.lock_waits == 0
        holder.release()
    finally:
        holder.kill()
    assert _keys(store) == ["before", "holder"]


@pytest.fixture
async def sqlite_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[App, Path]]:
    monkeypatch.setenv("TOOLWEAVE_TEST_STATE", str(tmp_path / "state"))
    path = tmp_path / "toolweave.db"
    app = App(Settings(home=tmp_path / "home", database_url=f"sqlite:///{path}", test_tools=True))
    yield app, path
    await app.aclose()


def _runs(app: App) -> list[tuple[str, str | None]]:
    rows = app.store.read_sync(lambda tx: tx.all("SELECT run_id, idempotency_key FROM runs ORDER BY created_at, run_id"))
    return [(str(r.run_id), r.idempotency_key) for r in rows]


async def test_a_bulk_submit_waits_for_another_process_and_stores_every_run(sqlite_app: tuple[App, Path]) -> None:
    app, path = sqlite_app
    await app.submit("test.instant", {"value": 0}, account_id="acme")  # definitions stored, schema current
    holder = Holder(path, rollback=True)
    try:
        rows = [{"value": v} for v in range(1, 8)]
        submitting = asyncio.ensure_future(app.submit_many(
            "test.instant", rows, account_id="acme", idempotency_keys=["a", "b", "a", None, "c", None, "d"], chunk=3))
        await _until(lambda: app.store.lock_waits >= 1)
        assert not submitting.done()
        holder.release()
        made = await asyncio.wait_for(submitting, PATIENCE)
    finally:
        holder.kill()
    assert [m.created for m in made] == [True, True, False, True, True, True, True]
    assert made[2].run_id == made[0].run_id
    assert len(_runs(app)) == 1 + 6


async def test_a_bulk_submit_past_the_deadline_stores_nothing_and_its_keys_stay_free(
    sqlite_app: tuple[App, Path],
) -> None:
    app, path = sqlite_app
    await app.submit("test.instant", {"value": 0}, account_id="acme")
    before = _runs(app)
    app.store.write_lock_timeout = 0.3
    holder = Holder(path, rollback=True)
    try:
        with pytest.raises(WriteLockTimeout):
            await app.submit_many("test.instant", [{"value": 1}, {"value": 2}], account_id="acme",
                                  idempotency_keys=["a", "b"])
        holder.release()
    finally:
        holder.kill()
    assert _runs(app) == before  # nothing half-written
    made = await app.submit_many("test.instant", [{"value": 1}, {"value": 2}], account_id="acme",
                                 idempotency_keys=["a", "b"])
    assert [m.created for m in made] == [True, True]
