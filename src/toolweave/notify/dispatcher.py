"""Delivers outbox rows through their channel, with retries, backoff and a record of each attempt.

A notification row is written with a ``notify`` task: in the transaction that finishes a run (its
outcome), or on its own (a chat message: ``notify.outbox``). A worker hands that task here: the
channel is called outside any transaction; success marks the row delivered, a retryable failure
records the attempt and re-queues the task with backoff — doubling from ``first_backoff`` up to
``max_backoff``, with jitter, never before a ``retry_after`` the receiver asked for — for as long
as the row is younger than ``horizon`` seconds (24 h by default). A failure that retrying cannot
cure, or a row past its horizon, is given up: marked ``failed``, logged at ERROR, listed by
``toolweave notifications undelivered`` and sent again by ``toolweave notifications resend``.

A channel may deliver each chat's rows in order (``Channel.in_chat_order``: the ``telegram``
channel does): a row is not sent while an older row of its channel to the same chat (the row's
``chat_id``, its ``target.chatId``) is still pending (waiting for a retry, or being sent) — it is
put back, without counting an attempt, until that row is delivered or given up. Rows to other
chats go on meanwhile, so one slow chat holds up no other. The older row is found by one seek of
an index (``store/notifications.earlier_pending``): the check costs the same however long the
backlog.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from toolweave.model.status import NotificationStatus
from toolweave.store import notifications as notes_q
from toolweave.store import tasks as tasks_q
from toolweave.store.db import Store, Tx

log = logging.getLogger("toolweave.notify")
_JITTER = random.Random()
"""Jitter of sleeps and backoffs: a source of its own, so the program's ``random`` (seeded by a host
program or a test framework) neither steers it nor is moved by it."""

FIRST_BACKOFF = 2.0
MAX_BACKOFF = 300.0
HORIZON = 86400.0
BLOCKED_POLL = 0.5
"""How soon a row waiting for an older row of its chat looks again (at the latest when that row's
next attempt is due)."""


class DeliveryError(Exception):
    def __init__(self, message: str, *, retryable: bool = True, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class Channel(Protocol):
    name: str
    # optional: ``in_chat_order = True`` delivers each chat's rows in the order they were queued

    async def deliver(self, notification: Mapping[str, Any]) -> None:
        """Deliver one notification (a row of the outbox as a mapping); raise DeliveryError on failure."""


def sequence_of(channel: Any, row: Mapping[str, Any]) -> str | None:
    """The chat whose rows ``row`` is delivered in order with (its ``chat_id``), or None: a channel
    without ``in_chat_order``, or a row to no chat, is delivered in any order."""
    if not getattr(channel, "in_chat_order", False):
        return None
    chat = row.get("chat_id")
    return str(chat) if chat is not None else None


def backoff(attempt: int, retry_after: float | None = None, *, first: float = FIRST_BACKOFF,
            ceiling: float = MAX_BACKOFF) -> float:
    """Seconds before attempt ``attempt + 1``: ``first`` doubling per attempt up to ``ceiling``,
    the upper half of it at random, and never less than ``retry_after``."""
    delay = min(ceiling, first * 2 ** min(max(0, attempt - 1), 60))
    delay = delay / 2 + _JITTER.random() * delay / 2
    return float(max(delay, retry_after or 0.0))


class Notifier:
    def __init__(
        self,
        store: Store,
        channels: Mapping[str, Channel],
        *,
        horizon: float = HORIZON,
        first_backoff: float = FIRST_BACKOFF,
        max_backoff: float = MAX_BACKOFF,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.channels = dict(channels)
        self.horizon = horizon
        self.first_backoff = first_backoff
        self.max_backoff = max_backoff
        self.clock = clock

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
        key = sequence_of(channel, row)
        if key is not None:
            blocker = await self.store.read(_earlier_pending, row, key)
            if blocker is not None:
                # not an attempt: back in the queue until the older row is delivered or given up
                at = max(time.time() + BLOCKED_POLL, float(blocker.get("next_attempt_at") or 0.0))
                log.debug("notification %s waits for %s (%s %s)", row["notification_id"],
                          blocker["notification_id"], row["channel"], key)
                await self.store.tx(tasks_q.put_back, task.claim, at)
                return
        try:
            await channel.deliver(row)
        except DeliveryError as exc:
            await self._failed(task, row, str(exc), exc.retryable, exc.retry_after)
            return
        except Exception as exc:
            log.exception("channel %s failed", row["channel"])
            await self._failed(task, row, f"{type(exc).__name__}: {exc}", True, None)
            return
        await self.store.tx(_delivered, row["notification_id"], time.time(), task.claim)

    async def _failed(self, task: tasks_q.Task, row: Mapping[str, Any], error: str, retryable: bool,
                      retry_after: float | None) -> None:
        attempt = int(row["attempts"]) + 1
        now = self.clock()
        wait = backoff(attempt, retry_after, first=self.first_backoff, ceiling=self.max_backoff)
        give_up_at = float(row["created_at"]) + self.horizon
        if retryable and now + wait <= give_up_at:
            log.info("notification %s (%s): attempt %d failed, again in %.1f s: %s",
                     row["notification_id"], row["channel"], attempt, wait, error)
            # the queue runs on the wall clock: the wait is added to it, not to ``clock``
            await self.store.tx(_failed_attempt, row["notification_id"], error, time.time() + wait, task.claim)
            return
        why = "it cannot succeed" if not retryable else f"it is older than {self.horizon:.0f} s"
        log.error(
            "giving up notification %s (%s, run %s, %s) after %d attempt%s, as %s: %s; "
            "`toolweave notifications resend %s` sends it again",
            row["notification_id"], row["channel"], row.get("run_id") or "none", row.get("event_type"), attempt,
            "" if attempt == 1 else "s", why, error, row["notification_id"],
        )
        await self.store.tx(_failed_attempt, row["notification_id"], error, None, task.claim)


def _earlier_pending(tx: Tx, row: Mapping[str, Any], chat_id: str) -> dict[str, Any] | None:
    """The oldest row of ``row``'s channel to ``chat_id`` queued before it and still pending."""
    found = notes_q.earlier_pending(tx, row["channel"], chat_id, float(row["created_at"]), row["notification_id"])
    return dict(found) if found is not None else None


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
