"""The admin side of credits: grants and refunds, balances, history, spend, and account policies
(credits on or off, limits, the confirmation threshold). Transaction functions
(``await store.tx(fn, ...)``)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from toolweave.model.credits import LedgerKind, from_units, money_text, to_units
from toolweave.run_views import iso
from toolweave.store import accounts as accounts_q
from toolweave.store import credits as credits_q
from toolweave.store.db import Row, Tx

MAX_BALANCE = Decimal("10000000000")
"""The largest balance a grant or refund may make (the ledger's sums stay far inside 64 bits)."""
POLICY_FIELDS = ("credits", "max_runs_in_flight", "submits_per_minute", "confirm_above")


def grant(
    tx: Tx, account_id: str, amount: Decimal, now: float, *, kind: LedgerKind = LedgerKind.GRANT,
    note: str | None = None, run_id: str | None = None,
) -> dict[str, Any]:
    """Give ``amount`` credits to the account (a grant turns its balance policy on unless an
    administrator turned it off); returns its balance after. ``ValueError`` when the balance would
    pass ``MAX_BALANCE``."""
    accounts_q.ensure(tx, account_id, account_id, now)
    policy = credits_q.lock_policies(tx, [account_id], now)()[account_id]
    before, _held = credits_q.sums(tx, [account_id])().get(account_id, (0, 0))
    if before + to_units(amount) > to_units(MAX_BALANCE):
        raise ValueError(f"the balance of an account may be at most {MAX_BALANCE} (it is {money_text(from_units(before))})")
    if policy.credits is None:
        credits_q.set_policy(tx, account_id, now, credits=True)
    credits_q.append(tx, [credits_q.entry(account_id, kind, now, amount=to_units(amount), run_id=run_id, note=note)])
    return balance(tx, account_id, credits_default=True)


def balance(tx: Tx, account_id: str, *, credits_default: bool) -> dict[str, Any]:
    """The account's balance, what its runs hold, what it can spend, and its policy."""
    amount, held = credits_q.sums(tx, [account_id])().get(account_id, (0, 0))
    policy = credits_q.policy(tx, account_id)
    return {
        "accountId": account_id,
        "balance": money_text(from_units(amount)),
        "held": money_text(from_units(held)),
        "available": money_text(from_units(amount - held)),
        "credits": _credits_on(policy, credits_default),
        **policy_view(policy),
    }


def _credits_on(policy: Row | None, default: bool) -> bool:
    return default if policy is None or policy.credits is None else bool(policy.credits)


def policy_view(policy: Row | None) -> dict[str, Any]:
    """An account's own values (None: the setting's default)."""
    return {
        "maxRunsInFlight": None if policy is None else policy.max_runs_in_flight,
        "submitsPerMinute": None if policy is None else policy.submits_per_minute,
        "confirmAbove": None if policy is None or policy.confirm_above is None else money_text(Decimal(policy.confirm_above)),
    }


def set_policy(tx: Tx, account_id: str, now: float, **values: Any) -> None:
    """Set some of ``POLICY_FIELDS`` (None puts the setting's default back)."""
    unknown = set(values) - set(POLICY_FIELDS)
    if unknown:
        raise ValueError(f"unknown policy fields: {', '.join(sorted(unknown))}")
    accounts_q.ensure(tx, account_id, account_id, now)
    if values:
        credits_q.set_policy(tx, account_id, now, **values)


def policy_of(tx: Tx, account_id: str) -> Row | None:
    return credits_q.policy(tx, account_id)


def history(tx: Tx, account_id: str, limit: int = 50, before: int | None = None) -> list[dict[str, Any]]:
    """The account's ledger, newest first."""
    return [entry_view(r) for r in credits_q.history(tx, account_id, limit, before)]


def entry_view(row: Row) -> dict[str, Any]:
    return {
        "entryId": int(row.entry_id),
        "kind": row.kind,
        "amount": money_text(from_units(row.amount)),
        "held": money_text(from_units(row.held)),
        "runId": row.run_id,
        "generationId": row.generation_id,
        "toolId": row.tool_id,
        "note": row.note,
        "createdAt": iso(row.created_at),
    }


def spend(tx: Tx, since: float, until: float, account_id: str | None = None) -> dict[str, Any]:
    """What was charged between ``since`` and ``until``: per account, per tool, per UTC day, and
    each (account, tool, day) row."""
    rows = credits_q.spend(tx, since, until, account_id)
    by_account: dict[str, int] = {}
    by_tool: dict[str, int] = {}
    by_day: dict[str, int] = {}
    detail = []
    total = 0
    for r in rows:
        units, day = int(r.units), _day(int(r.day))
        tool = r.tool_id or "(none)"
        by_account[r.account_id] = by_account.get(r.account_id, 0) + units
        by_tool[tool] = by_tool.get(tool, 0) + units
        by_day[day] = by_day.get(day, 0) + units
        total += units
        detail.append({"accountId": r.account_id, "toolId": tool, "day": day,
                       "amount": money_text(from_units(units)), "charges": int(r.charges)})

    def shown(table: dict[str, int]) -> dict[str, str]:
        return {k: money_text(from_units(v)) for k, v in sorted(table.items())}

    return {"since": iso(since), "until": iso(until), "total": money_text(from_units(total)),
            "byAccount": shown(by_account), "byTool": shown(by_tool), "byDay": shown(by_day), "rows": detail}


def _day(days: int) -> str:
    return (dt.date(1970, 1, 1) + dt.timedelta(days=days)).isoformat()
