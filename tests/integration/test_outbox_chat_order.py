"""A chat's messages go out in the order they were queued, found through ``notifications.chat_id``
and its index (migration 0015), on both stores: a backlog queued before the upgrade keeps its
order, the chat written when a row is queued is the one the migration gives an older row, and the
older pending row is found by a seek of the index, not by reading the backlog."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.helpers.databases import PostgresDatabase, require_postgres

from toolweave.model.status import TaskKind
from toolweave.notify import dispatcher
from toolweave.notify.dispatcher import Notifier
from toolweave.store import notifications as notes_q
from toolweave.store import tasks as tasks_q
from toolweave.store.db import Store, Tx
from toolweave.store.migrate import upgrade


class Recorder:
    """Stands in for the Telegram network: takes every row, in the order it is handed over."""

    name = "telegram"
    in_chat_order = True

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def deliver(self, notification: Any) -> None:
        self.sent.append(notification["notification_id"])


class Callbacks(Recorder):
    name = "callback"
    in_chat_order = False


@pytest.fixture(params=["sqlite", "postgres"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database (no revision yet) of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    require_postgres()
    db = PostgresDatabase()
    try:
        yield db.url
    finally:
        db.drop()


# what targets were queued with before 0015, and the chat each belongs to
TARGETS: list[tuple[dict[str, Any], str | None]] = [
    ({"chatId": 42, "replyTo": 7}, "42"),
    ({"chatId": "42"}, "42"),  # the same chat, written as text
    ({"chatId": -1001234567890}, "-1001234567890"),  # a group
    ({"chatId": "@news"}, "@news"),  # a channel by its name
    ({"chatId": True}, None),
    ({"chatId": 4.5}, None),
    ({"chatId": "x" * 65}, None),
    ({"chatId": None}, None),
    ({"url": "https://example.org/hook"}, None),  # a callback: no chat
    ({}, None),
]


def _insert_old(tx: Tx, rows: list[tuple[str, str, dict[str, Any], float]], available: dict[str, float]) -> None:
    """Rows and their notify tasks as 0014 wrote them (no ``chat_id``)."""
    for nid, channel, target, created in rows:
        tx.q(
            "INSERT INTO notifications (notification_id, run_id, account_id, channel, event_type, target, payload, "
            "status, attempts, created_at) VALUES (:id, NULL, 'acme', :channel, 'message', :target, :payload, "
            "'pending', 1, :created)",
            {"id": nid, "channel": channel, "target": target, "payload": {"text": nid}, "created": created},
        )
        tasks_q.enqueue(tx, TaskKind.NOTIFY, run_id=None, ref_id=nid, now=created, at=available[nid])


async def _drain(store: Store, notifier: Notifier) -> None:
    """A worker's loop over the notify tasks, one at a time in the order they fall due, until none
    is left."""
    for _ in range(2000):
        tasks = await store.tx(tasks_q.claim, "test-worker", 1, time.time(), 30.0)
        if not tasks:
            if not await store.read(lambda tx: tx.all("SELECT task_id FROM tasks")):
                return
            await asyncio.sleep(0.005)
            continue
        for task in tasks:
            await notifier.deliver(task)
    raise AssertionError("the outbox did not drain")


async def test_a_backlog_queued_before_0015_keeps_its_order_after_the_upgrade(
    fresh_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dispatcher, "BLOCKED_POLL", 0.01)  # a held-back row looks again soon
    store = Store(fresh_url)
    try:
        upgrade(store.engine, "0014")
        chats = {"a": 42, "b": "42", "c": -1001234567890}
        rows: list[tuple[str, str, dict[str, Any], float]] = []
        chat_of: dict[str, str] = {}
        for i in range(12):
            chat = "abc"[i % 3]
            rows.append((f"ntf_{i:02d}{chat}", "telegram", {"chatId": chats[chat]}, 1000.0 + i))
            chat_of[rows[-1][0]] = str(chats[chat])
        rows.append(("ntf_99cb", "callback", {"url": "https://example.org/hook"}, 999.0))
        # after an outage the retries fall due in another order than the rows were queued: newest first
        available = {nid: 5000.0 - created for nid, _, _, created in rows}
        await store.tx(_insert_old, rows, available)
        store.upgrade()

        by_id = {r["notification_id"]: r["chat_id"] for r in await store.read(
            lambda tx: [dict(r) for r in tx.all("SELECT notification_id, chat_id FROM notifications")])}
        assert by_id["ntf_00a"] == by_id["ntf_01b"] == "42"  # 42 and "42": one chat
        assert by_id["ntf_02c"] == "-1001234567890"
        assert by_id["ntf_99cb"] is None

        telegram, callbacks = Recorder(), Callbacks()
        await _drain(store, Notifier(store, {"telegram": telegram, "callback": callbacks}))
        queued = [nid for nid, channel, _, _ in sorted(rows, key=lambda r: r[3]) if channel == "telegram"]
        # chats a and b are one chat (42): its rows interleave in the order they were queued
        for chat in ("42", "-1001234567890"):
            mine = [nid for nid in queued if chat_of[nid] == chat]
            assert [nid for nid in telegram.sent if chat_of[nid] == chat] == mine
        assert sorted(telegram.sent) == sorted(queued) and callbacks.sent == ["ntf_99cb"]
        statuses = await store.read(lambda tx: {r.status for r in tx.all("SELECT status FROM notifications")})
        assert statuses == {"delivered"}
        # a held-back row was put back, not counted: one attempt before the outage, one now
        attempts = await store.read(lambda tx: {r.attempts for r in tx.all("SELECT attempts FROM notifications")})
        assert attempts == {2}
    finally:
        store.close()


async def test_the_chat_of_a_row_queued_now_is_the_one_the_migration_gives_an_old_row(fresh_url: str) -> None:
    store = Store(fresh_url)
    try:
        upgrade(store.engine, "0014")
        old = [(f"ntf_old{i}", "telegram", target, float(i)) for i, (target, _) in enumerate(TARGETS)]
        await store.tx(_insert_old, old, {nid: 0.0 for nid, *_ in old})
        store.upgrade()

        def queue_new(tx: Tx) -> None:
            for i, (target, _) in enumerate(TARGETS):
                notes_q.insert(tx, notification_id=f"ntf_new{i}", run_id=None, account_id="acme", channel="telegram",
                               event_type="message", target=target, payload={}, created_at=100.0 + i)

        await store.tx(queue_new)
        found = {r.notification_id: r.chat_id for r in await store.read(
            lambda tx: tx.all("SELECT notification_id, chat_id FROM notifications"))}
        for i, (target, chat) in enumerate(TARGETS):
            assert (found[f"ntf_old{i}"], found[f"ntf_new{i}"]) == (chat, chat), target
    finally:
        store.close()


def test_the_older_pending_row_of_a_chat_is_one_seek_of_its_index(tmp_path: Path) -> None:
    """However many rows are pending, the check reads ``ix_notifications_chat`` from the chat's
    oldest pending row and stops at the first: no scan of the channel, no sort."""
    store = Store(f"sqlite:///{tmp_path / 'plan.db'}")
    store.upgrade()
    try:
        def plan(tx: Any) -> str:
            rows = tx.q("EXPLAIN QUERY PLAN " + notes_q.EARLIER_PENDING,
                        {"channel": "telegram", "chat": "42", "created": 1.0, "id": "ntf_x"}).fetchall()
            return " | ".join(str(r[3]) for r in rows)

        found = store.run_sync(plan)
        assert "USING INDEX ix_notifications_chat (channel=? AND chat_id=? AND status=? AND created_at<?)" in found, found
        assert "TEMP B-TREE" not in found, found
    finally:
        store.close()


async def test_postgres_finds_the_older_pending_row_through_the_chat_index(postgres_db: PostgresDatabase) -> None:
    postgres_db.truncate()
    store = Store(postgres_db.url)
    store.upgrade()
    try:
        def plan(tx: Any) -> str:
            tx.q("SET LOCAL enable_seqscan = off")  # a near-empty table: ask which index serves it
            sql = notes_q.EARLIER_PENDING.replace(":channel", "'telegram'").replace(":chat", "'42'")
            sql = sql.replace(":created", "1.0").replace(":id", "'ntf_x'")
            return "\n".join(str(r[0]) for r in tx.q("EXPLAIN " + sql, {}).fetchall())

        found = await store.tx(plan)
        assert "ix_notifications_chat" in found and "Sort" not in found, found
    finally:
        store.close()
