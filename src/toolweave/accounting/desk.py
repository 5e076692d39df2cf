"""``CreditDesk``: what the ``App`` facade offers about money and limits (``app.credits``): estimates
with a short-lived cache of each tool's history, grants and refunds, balances, history, spend,
account policies."""

from __future__ import annotations

import time
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from toolweave.accounting import ledger
from toolweave.accounting.estimate import DEFAULT_FALLBACK_SECONDS, Estimate, History, estimate
from toolweave.accounting.gate import Defaults
from toolweave.model.credits import LedgerKind, money_text
from toolweave.model.definitions import JobDefinition, ToolDefinition
from toolweave.store import credits as credits_q
from toolweave.store.db import Store

HISTORY_SECONDS = 30.0
"""How long a tool's history (median duration and cost) is reused before it is read again."""


class CreditDesk:
    def __init__(
        self, store: Store, defaults: Defaults, rates: Mapping[str, Decimal], *,
        fallback_seconds: float = DEFAULT_FALLBACK_SECONDS, confirm_above: Decimal | None = None,
    ) -> None:
        self.store = store
        self.defaults = defaults
        self.rates = dict(rates)
        self.fallback_seconds = fallback_seconds
        self.confirm_above = confirm_above
        """The default estimate above which a chat front end asks before it runs (None: never)."""
        self._history: dict[str, tuple[float, History]] = {}

    # --- estimates -----------------------------------------------------------------------------

    async def estimate(
        self, job: JobDefinition, tools: Mapping[str, ToolDefinition], nested: Mapping[str, JobDefinition],
        inputs: Mapping[str, Any],
    ) -> Estimate:
        history = await self.histories(list(tools))
        return estimate(job, tools, nested, inputs, history, self.rates, self.fallback_seconds)

    async def histories(self, tool_ids: list[str]) -> dict[str, History]:
        now = time.monotonic()
        stale = [t for t in tool_ids if t not in self._history or now - self._history[t][0] > HISTORY_SECONDS]
        if stale:
            rows = await self.store.read(credits_q.tool_history, stale)
            for tool_id in stale:
                self._history[tool_id] = (now, History.of(rows.get(tool_id, [])))
        return {t: self._history[t][1] for t in tool_ids}

    def forget_history(self) -> None:
        """Read every tool's history again at the next estimate."""
        self._history.clear()

    async def confirm_threshold(self, account_id: str) -> Decimal | None:
        """The estimate above which the account is asked before a run starts (None: never)."""
        policy = await self.store.read(ledger.policy_of, account_id)
        if policy is not None and policy.confirm_above is not None:
            return Decimal(policy.confirm_above)
        return self.confirm_above

    # --- the ledger ----------------------------------------------------------------------------

    async def grant(self, account_id: str, amount: Decimal, note: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = await self.store.tx(lambda tx: ledger.grant(tx, account_id, amount, time.time(), note=note))
        return result

    async def refund(self, account_id: str, amount: Decimal, note: str | None = None, run_id: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = await self.store.tx(
            lambda tx: ledger.grant(tx, account_id, amount, time.time(), kind=LedgerKind.REFUND, note=note, run_id=run_id)
        )
        return result

    async def balance(self, account_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.store.read(
            lambda tx: ledger.balance(tx, account_id, credits_default=self.defaults.credits_by_default)
        )
        result.update(self._effective(result))
        return result

    def _effective(self, shown: dict[str, Any]) -> dict[str, Any]:
        """The limits that apply (the account's own, else the settings')."""
        in_flight = shown.get("maxRunsInFlight")
        per_minute = shown.get("submitsPerMinute")
        confirm = shown.get("confirmAbove")
        return {
            "limits": {
                "maxRunsInFlight": self.defaults.max_runs_in_flight if in_flight is None else in_flight,
                "submitsPerMinute": self.defaults.submits_per_minute if per_minute is None else per_minute,
                "confirmAbove": confirm if confirm is not None else (
                    None if self.confirm_above is None else money_text(self.confirm_above)),
            }
        }

    async def history(self, account_id: str, limit: int = 50, before: int | None = None) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.store.read(ledger.history, account_id, limit, before)
        return result

    async def spend(self, since: float, until: float | None = None, account_id: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = await self.store.read(
            ledger.spend, since, until if until is not None else time.time() + 1, account_id
        )
        return result

    async def set_policy(self, account_id: str, **values: Any) -> dict[str, Any]:
        await self.store.tx(lambda tx: ledger.set_policy(tx, account_id, time.time(), **values))
        return await self.balance(account_id)
