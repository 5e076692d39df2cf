"""A ``dedupe_key`` queued again after its row was given up (``Outbox.queue(again_if_given_up=True)``,
what a Telegram 📥 press does), on both stores: presses at once from two processes (two stores on
one database, each with its own connections) queue one new row, and while that row is pending or
delivered a press queues nothing."""

from __future__ import annotations

import asyncio

from toolweave.notify.dispatcher import Notifier
from toolweave.notify.outbox import Outbox
from toolweave.store.db import Store

KEY = "tg:resend:ntf_original:2:0"


async def test_presses_at_once_after_a_give_up_queue_one_row(db_url: str, store: Store) -> None:
    other = Store(db_url)
    try:
        outboxes = [Outbox(s, Notifier(s, {})) for s in (store, other)]

        async def press(index: int) -> str | None:
            found: str | None = await outboxes[index % 2].queue(
                "telegram", {"chatId": -7}, {"of": "ntf_original", "part": 2}, event_type="resend",
                account_id="telegram-42", dedupe_key=KEY, again_if_given_up=True, deliver_now=False)
            return found

        async def rows() -> list[dict[str, object]]:
            found: list[dict[str, object]] = await store.read(lambda tx: [dict(r) for r in tx.all(
                "SELECT notification_id, status, dedupe_key FROM notifications ORDER BY created_at, notification_id")])
            return found

        first = await press(0)
        assert first is not None and await press(1) is None  # pending: deduplicated
        for round_ in range(1, 6):
            await store.tx(lambda tx: tx.q("UPDATE notifications SET status = 'failed' WHERE dedupe_key = :k", {"k": KEY}))
            queued = [q for q in await asyncio.gather(*(press(i) for i in range(8))) if q is not None]
            assert len(queued) == 1
            now = await rows()
            assert len(now) == round_ + 1
            assert [r["notification_id"] for r in now if r["dedupe_key"] == KEY] == queued
            assert sorted(str(r["status"]) for r in now) == ["failed"] * round_ + ["pending"]
        # delivered: a press queues nothing (the part is asked for again under the next key)
        await store.tx(lambda tx: tx.q("UPDATE notifications SET status = 'delivered' WHERE dedupe_key = :k", {"k": KEY}))
        assert await press(0) is None
    finally:
        other.close()
