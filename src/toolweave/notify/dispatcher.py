"""Delivers outbox rows through their channel, with retries, backoff and a record of each attempt.

A notification row is written in the transaction that finishes a run, with a ``notify`` task.
The worker hands that task here: the channel is called outside any transaction; success marks
the row delivered, a retryable failure records the attempt and re-queues the task with backoff
(honouring a ``retry_after`` the receiver asked for), anything else marks it failed.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Mapping
from typing import Any, Protocol

from toolweave.model.status import NotificationStatus
from toolweave.store import notifications as notes_q
from toolweave.store import tasks as tasks_q
from toolweave.store.db import Store, Tx

log = logging.getLogger("toolweave.notify")

MAX_ATTEMPTS = 8
BASE_BACKOFF = 2.0
MAX_BACKOFF = 300.0


class DeliveryError(Exception):
    def __init__(self, message: str, *, retryable: bool = True, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class Channel(Protocol):
    name: str

    async def deliver(self, notification: Mapping[str, Any]) -> None:
        """Deliver one notification (a row of the outbox as a mapping); raise DeliveryError on failure."""


def backoff(attempt: int, retry_after: float | None = None) -> float:
    delay = min(MAX_BACKOFF, BASE_BACKOFF * 2 ** max(0, attempt - 1))
    delay = delay / 2 + random.random() * delay / 2
    return float(max(delay, retry_after or 0.0))


class Notifier:
    def __init__(self, store: Store, channels: Mapping[str, Channel], max_attempts: int = MAX_ATTEMPTS) -> None:
        self.store = store
        self.channels = dict(channels)
        self.max_attempts = max_attempts

    def add_channel(self, channel: Channel) -> None:
        self.channels[channel.name] = channel

    async def deliver(self, task: tasks_q.Task) -> None:
        row = await self.store.tx(_load, task.ref_id or "")
        if row is None or row["status"] != NotificationStatus.PENDING.value:
            await self.store.tx(tasks_q.finish, task.claim)
            return
        channel = self.channels.get(row["channel"])
        if channel is None:
            # another process (the server, the bot) may own this channel: leave it for its lease
            log.debug("no channel %s here; leaving notification %s", row["channel"], row["notification_id"])
            await self.store.tx(tasks_q.reschedule, task.claim, time.time() + 5.0)
            return
        try:
            await channel.deliver(row)
        except DeliveryError as exc:
            attempt = int(row["attempts"]) + 1
            if exc.retryable and attempt < self.max_attempts:
                at = time.time() + backoff(attempt, exc.retry_after)
                await self.store.tx(_failed_attempt, row["notification_id"], str(exc), at, task.claim)
            else:
                await self.store.tx(_failed_attempt, row["notification_id"], str(exc), None, task.claim)
            return
        except Exception as exc:
            log.exception("channel %s failed", row["channel"])
            attempt = int(row["attempts"]) + 1
            retry_at = time.time() + backoff(attempt) if attempt < self.max_attempts else None
            await self.store.tx(
                _failed_attempt, row["notification_id"], f"{type(exc).__name__}: {exc}", retry_at, task.claim
            )
            return
        await self.store.tx(_delivered, row["notification_id"], time.time(), task.claim)


def _load(tx: Tx, notification_id: str) -> dict[str, Any] | None:
    row = notes_q.get(tx, notification_id)
    return dict(row) if row is not None else None


def _failed_attempt(tx: Tx, notification_id: str, error: str, next_at: float | None, claim: tasks_q.Claim) -> None:
    notes_q.mark_attempt_failed(tx, notification_id, error, next_at)
    if next_at is None:
        tasks_q.finish(tx, claim)
    else:
        tasks_q.reschedule(tx, claim, next_at)


def _delivered(tx: Tx, notification_id: str, now: float, claim: tasks_q.Claim) -> None:
    notes_q.mark_delivered(tx, notification_id, now)
    tasks_q.finish(tx, claim)
