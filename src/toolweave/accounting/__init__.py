"""Money and fairness: credits (the ledger, holds, charges), estimates, per-account limits and the
fair claiming order. See docs/credits.md.

- ``gate``: what a submit decides in its transaction, account by account: limits, the credit hold,
  the run's place in the claiming order (``Gate``, used by ``Engine.submit_many_tx``);
- ``estimate``: what a run will cost, from its tools' costing models and their past generations;
- ``ledger``: grants, refunds, balances, history and spend (the admin commands).

Imports ``model`` and ``store`` only; the engine calls it through thin hooks.
"""

from __future__ import annotations

from toolweave.accounting.gate import Defaults, Gate, InsufficientCredits, OverLimit, Place, Refused

__all__ = ["Defaults", "Gate", "InsufficientCredits", "OverLimit", "Place", "Refused"]
