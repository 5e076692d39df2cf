"""What a submit decides in its own transaction, account by account (``Gate.open``).

A submit of an account that pays from a balance or has a limit locks its policy row
(``store.credits.lock_policies``) before it counts anything, so concurrent submits of such an
account are decided one after the other on what the earlier ones committed — on PostgreSQL by the
row lock, on SQLite by the write lock every writer takes. (Other accounts take no lock.) For each
new run, in order:

1. **Limits.** Runs in flight (queued or running, not nested) and runs submitted in the last
   minute, against the account's limits (``account_policies``) or the settings' defaults (0: no
   limit). Over a limit → ``OverLimit`` (HTTP 429 with ``Retry-After``).
2. **Credits.** For an account that pays from a balance, the run's estimate is held: available
   (Σ amount − Σ held of its ledger) must cover it, else ``InsufficientCredits`` (HTTP 402) and
   nothing of that run is written. A run whose estimate is partly unknown needs a positive
   balance.
3. **Place.** The run's place in the claiming order (``queue_at``, which its tasks are due at):
   one ``FAIR_STEP`` after the latest place among the account's unfinished runs, but never before
   the earliest run still waiting to be picked up. An account that queued 1,000 runs has them placed one after the
   other; another account's run submitted meanwhile joins at the head of the queue, so it goes
   after a handful of them, not after all of them.

Nothing is written until ``Admission.write``, after the runs themselves (so a run that a
concurrent request's idempotency key took is not held).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from math import ceil
from typing import Any

from toolweave.model.credits import LedgerKind, from_units, money_text, to_units
from toolweave.store import credits as credits_q
from toolweave.store.db import Row, Tx

FAIR_STEP = 10e-6
"""Seconds between the places of two runs of one account (far below a run's duration, above the
resolution of a float timestamp)."""
UNDER_WAY_AHEAD = FAIR_STEP / 2
"""A step of a run under way is due this much before its run's place: ahead of every run not yet
started, which are placed after it."""
IN_FLIGHT_RETRY_SECONDS = 5
"""``Retry-After`` when the runs in flight are at the limit (when one ends is not known)."""


@dataclass(frozen=True)
class Defaults:
    """The settings' defaults for accounts without their own values."""

    credits_by_default: bool = False
    max_runs_in_flight: int = 0
    submits_per_minute: int = 0


class Refused(Exception):
    """A submit the account may not make now; nothing of the run is written."""

    def __init__(self, account_id: str, message: str) -> None:
        super().__init__(message)
        self.account_id = account_id
        self.message = message


class InsufficientCredits(Refused):
    def __init__(self, account_id: str, needed: Decimal, available: Decimal, unknown: bool = False) -> None:
        if unknown and needed == 0:
            message = (f"this run's cost is not known in advance and account {account_id} has "
                       f"{money_text(available)} credits available; ask for a grant of credits")
        else:
            message = (f"this run is estimated at {money_text(needed)} credits and account {account_id} has "
                       f"{money_text(available)} available; ask for a grant of credits")
        super().__init__(account_id, message)
        self.needed = needed
        self.available = available


class OverLimit(Refused):
    def __init__(self, account_id: str, limit: str, allowed: int, retry_after: int) -> None:
        what = {"runs_in_flight": f"{allowed} runs in flight", "submits_per_minute": f"{allowed} runs per minute"}[limit]
        super().__init__(account_id, f"account {account_id} may have at most {what}; try again in {retry_after} s")
        self.limit = limit
        self.allowed = allowed
        self.retry_after = retry_after


@dataclass(frozen=True)
class Place:
    """What the gate decided for one new run."""

    queue_at: float
    hold: int = 0
    """Units held for it."""
    credits: bool = False
    """Its account pays from a balance: the run holds credits and its generations are charged."""


@dataclass
class _Account:
    credits: bool
    in_flight_limit: int
    per_minute_limit: int
    queue_at: float | None
    in_flight: int = 0
    recent: list[float] = field(default_factory=list)
    available: int = 0


@dataclass(frozen=True)
class Gate:
    defaults: Defaults = Defaults()

    def open(self, tx: Tx, account_ids: list[str], now: float) -> Admission:
        """Read what the accounts' limits, holds and places need: one round trip for their
        policies, the head of the queue and their latest places; a second one, only for accounts
        with limits or credits, that locks their policy rows and then reads their runs in flight,
        recent submits and ledger sums. Accounts with neither take no lock: their submits never
        wait for each other."""
        policies = credits_q.policies_of(tx, account_ids)
        front = credits_q.queue_front(tx)
        places = credits_q.last_places(tx, account_ids)
        rows = policies()
        guarded = sorted(a for a in set(account_ids) if self._guarded(rows.get(a)))
        if guarded:
            rows.update(credits_q.lock_policies(tx, guarded, now)())
        accounts: dict[str, _Account] = {}
        for account_id in set(account_ids):
            row = rows.get(account_id)
            accounts[account_id] = _Account(
                credits=self.defaults.credits_by_default if row is None or row.credits is None else bool(row.credits),
                in_flight_limit=_limit(None if row is None else row.max_runs_in_flight, self.defaults.max_runs_in_flight),
                per_minute_limit=_limit(None if row is None else row.submits_per_minute, self.defaults.submits_per_minute),
                queue_at=None,
            )
        paying = [a for a in guarded if accounts[a].credits]
        counted = [a for a in guarded if accounts[a].in_flight_limit]
        sums = credits_q.sums(tx, paying)
        counts = credits_q.in_flight(tx, counted)
        recent = {a: credits_q.submitted_since(tx, a, now - 60.0, accounts[a].per_minute_limit)
                  for a in guarded if accounts[a].per_minute_limit}
        for account_id, (amount, held) in sums().items():
            accounts[account_id].available = amount - held
        for account_id, n in counts().items():
            accounts[account_id].in_flight = n
        for account_id, read in recent.items():
            accounts[account_id].recent = read()
        for account_id, place in places().items():
            accounts[account_id].queue_at = place
        head = front()
        return Admission(accounts, now, now if head is None else min(head, now))

    def _guarded(self, row: Row | None) -> bool:
        """Whether an account's submits must be decided one at a time: it pays from a balance or
        has a limit."""
        credits = self.defaults.credits_by_default if row is None or row.credits is None else bool(row.credits)
        in_flight = _limit(None if row is None else row.max_runs_in_flight, self.defaults.max_runs_in_flight)
        per_minute = _limit(None if row is None else row.submits_per_minute, self.defaults.submits_per_minute)
        return credits or bool(in_flight) or bool(per_minute)


def _limit(own: int | None, default: int) -> int:
    return max(0, default if own is None else int(own))


@dataclass
class Admission:
    """One submit transaction's decisions (``Gate.open``)."""

    accounts: dict[str, _Account]
    now: float
    front: float
    held: list[tuple[str, str, int]] = field(default_factory=list)
    """(account, run, units) of the holds to write."""

    def admit(self, account_id: str, estimate: Decimal | None, unknown: bool = False) -> Place:
        """Decide one new run of ``account_id`` estimated at ``estimate`` (``unknown``: a part of
        its cost is not known in advance); raises ``Refused``. The caller writes the run with its
        place and then calls ``held_by``."""
        account = self.accounts[account_id]
        if account.in_flight_limit and account.in_flight >= account.in_flight_limit:
            raise OverLimit(account_id, "runs_in_flight", account.in_flight_limit, IN_FLIGHT_RETRY_SECONDS)
        if account.per_minute_limit and len(account.recent) >= account.per_minute_limit:
            oldest = account.recent[len(account.recent) - account.per_minute_limit]
            raise OverLimit(account_id, "submits_per_minute", account.per_minute_limit,
                            max(1, ceil(oldest + 60.0 - self.now)))
        hold = 0
        if account.credits:
            hold = max(0, to_units(estimate or Decimal(0)))  # a hold below 0 would add to what is available
            if hold > account.available or (unknown and account.available <= 0):
                raise InsufficientCredits(account_id, from_units(hold), from_units(account.available), unknown)
            account.available -= hold
        account.in_flight += 1
        account.recent.append(self.now)
        at = self.front if account.queue_at is None else max(self.front, account.queue_at + FAIR_STEP)
        account.queue_at = at
        return Place(queue_at=at, hold=hold, credits=account.credits)

    def held_by(self, account_id: str, run_id: str, place: Place) -> None:
        """The run ``place`` was given to is written: its hold goes in with ``write``."""
        if place.credits:
            self.held.append((account_id, run_id, place.hold))

    def write(self, tx: Tx, lost: set[str] | frozenset[str] = frozenset()) -> None:
        """The holds of the runs written (not those in ``lost``: a concurrent request's
        idempotency key took them)."""
        entries: list[dict[str, Any]] = [
            credits_q.entry(account_id, LedgerKind.HOLD, self.now, held=units, run_id=run_id)
            for account_id, run_id, units in self.held if run_id not in lost
        ]
        credits_q.append(tx, entries)
