"""Notifications queued on their own (not by a run's end): a chat message, an answer, a question.

``Outbox.queue`` writes the row and its ``notify`` task in one transaction — the row carries a
``dedupe_key``, and queueing a key already queued writes nothing, so a front end that handles the
same request twice (an update handed out again) sends its replies once. With ``again_if_given_up``
a key whose row was given up (``failed``) is queued anew (the given-up row lets go of it in the
same transaction): a request repeated after its delivery failed for good is carried out again. The task is created
leased to this process, which delivers it at once (in order, one at a time, heartbeating the
leases it holds); if the process dies, the lease runs out and any worker delivers it, and a
delivery that fails is rescheduled for any worker (``Notifier``'s retries). ``close`` hands the
leases of what was not delivered back to the queue.

A row may also be queued inside another transaction (``queue_tx``, then ``deliver_soon`` once it
committed): a front end's message about a run it submits (the Telegram status message) goes in
the run's own transaction (``App.submit(notices=…)``), so it is queued before anything the run
does — a run that ends at once cannot have its result queued ahead of it.

Also here: what ``toolweave notifications`` shows and does (``undelivered``, ``resend``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from toolweave.model.status import TaskKind
from toolweave.notify.dispatcher import Notifier
from toolweave.store import notifications as notes_q
from toolweave.store import tasks as tasks_q
from toolweave.store.db import Store, Tx
from toolweave.store.ids import new_id

log = logging.getLogger("toolweave.notify")


@dataclass(frozen=True)
class Notice:
    """A notification to queue (``Outbox.queue_tx``): to ``target`` of ``channel``."""

    channel: str
    target: Mapping[str, Any]
    payload: Mapping[str, Any]
    event_type: str
    account_id: str
    run_id: str | None = None
    dedupe_key: str | None = None
    """Queueing a key queued before writes nothing."""
    again_if_given_up: bool = False
    """Queue ``dedupe_key`` anew when its row was given up (``failed``: that row lets go of the key,
    ``notifications.release_given_up``)."""
    created_at: float | None = field(default=None, compare=False)
    """When it counts as queued (its place in its chat's order, and where its horizon starts):
    the transaction's time when None."""


class Outbox:
    def __init__(self, store: Store, notifier: Notifier, *, lease_seconds: float = 30.0) -> None:
        self.store = store
        self.notifier = notifier
        self.lease_seconds = max(1.0, lease_seconds)
        self.owner = f"outbox-{os.getpid()}-{new_id()[-8:]}"
        self._queue: asyncio.Queue[tasks_q.Task] | None = None
        self._pump: asyncio.Task[None] | None = None

    async def queue(
        self,
        channel: str,
        target: Mapping[str, Any],
        payload: Mapping[str, Any],
        *,
        event_type: str,
        account_id: str,
        run_id: str | None = None,
        dedupe_key: str | None = None,
        again_if_given_up: bool = False,
        deliver_now: bool = True,
    ) -> str | None:
        """Queue one notification; returns its id, or None when ``dedupe_key`` was queued before
        (and, with ``again_if_given_up``, its row was not given up)."""
        notice = Notice(channel, target, payload, event_type, account_id, run_id, dedupe_key, again_if_given_up)
        task = await self.store.tx(lambda tx: self.queue_tx(tx, notice, time.time(), deliver_now=deliver_now))
        if task is None:
            return None
        if deliver_now:
            self.deliver_soon([task])
        return task.ref_id

    def queue_tx(self, tx: Tx, notice: Notice, now: float, *, deliver_now: bool = True) -> tasks_q.Task | None:
        """Write ``notice`` and its ``notify`` task in ``tx`` (a transaction of the caller's); returns
        the task (None when its ``dedupe_key`` was queued before). With ``deliver_now`` the task is
        leased to this process: hand it to ``deliver_soon`` once ``tx`` committed (if that never
        happens — the process died — the lease runs out and any worker delivers it)."""
        owner = self.owner if deliver_now else None
        created = notice.created_at if notice.created_at is not None else now
        return _queue_tx(tx, new_id("ntf_"), notice.channel, dict(notice.target), dict(notice.payload),
                         notice.event_type, notice.account_id, notice.run_id, notice.dedupe_key, created, now, owner,
                         self.lease_seconds, again_if_given_up=notice.again_if_given_up)

    def deliver_soon(self, tasks: Iterable[tasks_q.Task]) -> None:
        """Deliver tasks ``queue_tx`` leased to this process, in order, once their transaction has
        committed (on the event loop's thread)."""
        for task in tasks:
            self._start()
            assert self._queue is not None
            self._queue.put_nowait(task)

    def _start(self) -> None:
        if self._pump is None or self._pump.done():
            self._queue = asyncio.Queue()
            self._pump = asyncio.create_task(self._deliver_all(), name="toolweave-outbox")

    async def _deliver_all(self) -> None:
        assert self._queue is not None
        beat = asyncio.create_task(self._heartbeat(), name="toolweave-outbox-heartbeat")
        try:
            while True:
                task = await self._queue.get()
                try:
                    await self.notifier.deliver(task)
                except Exception:
                    log.exception("delivering notification %s failed; a worker takes it over", task.ref_id)
        finally:
            beat.cancel()
            with contextlib.suppress(BaseException):
                await beat

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                await self.store.tx(tasks_q.heartbeat, self.owner, time.time(), self.lease_seconds)
            except Exception as exc:
                log.warning("extending the outbox's leases failed: %s", exc)

    async def close(self) -> None:
        """Stop delivering; what was not delivered goes back to the queue for the workers."""
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(BaseException):
                await self._pump
            self._pump = None
        with contextlib.suppress(Exception):
            await self.store.tx(tasks_q.release_all, self.owner, time.time())

    # --- looking and sending again ----------------------------------------------------------------

    async def get(self, notification_id: str) -> dict[str, Any] | None:
        row = await self.store.read(notes_q.get, notification_id)
        return dict(row) if row is not None else None

    async def undelivered(self, *, channel: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Notifications given up (``failed``), oldest first."""
        rows = await self.store.read(lambda tx: notes_q.with_status(tx, "failed", channel=channel, limit=limit))
        return [dict(r) for r in rows]

    async def resend(self, notification_ids: list[str]) -> list[str]:
        """Make given-up notifications pending again (due now, with a new horizon); returns the ids
        that were given up (others are left as they are)."""
        reopened: list[str] = await self.store.tx(_reopen_tx, notification_ids, time.time())
        return reopened


def _queue_tx(
    tx: Tx, notification_id: str, channel: str, target: dict[str, Any], payload: dict[str, Any], event_type: str,
    account_id: str, run_id: str | None, dedupe_key: str | None, created: float, now: float, owner: str | None,
    lease: float, *, again_if_given_up: bool = False,
) -> tasks_q.Task | None:
    values = {
        "notification_id": notification_id, "run_id": run_id, "account_id": account_id, "channel": channel,
        "event_type": event_type, "target": target, "payload": payload, "created_at": created,
        "dedupe_key": dedupe_key,
    }
    if dedupe_key is not None:
        if again_if_given_up:
            notes_q.release_given_up(tx, dedupe_key)
        if not notes_q.insert_once(tx, **values):
            return None
    else:
        notes_q.insert(tx, **values)
    return tasks_q.enqueue(tx, TaskKind.NOTIFY, run_id=run_id, ref_id=notification_id, now=now,
                           lease_owner=owner, lease_seconds=lease)


def _reopen_tx(tx: Tx, notification_ids: list[str], now: float) -> list[str]:
    done = []
    for notification_id in notification_ids:
        if notes_q.reopen(tx, notification_id, now):
            tasks_q.enqueue(tx, TaskKind.NOTIFY, run_id=None, ref_id=notification_id, now=now)
            done.append(notification_id)
    return done
