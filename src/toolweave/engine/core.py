"""The engine: one ``Engine`` object whose functions named ``*_tx`` each run inside one store
transaction (``await store.tx(fn, ...)``): the state change, the tasks that follow from it and its
events commit together. The planner (``plan.decide``) chooses what happens; ``transitions`` writes it.

The engine's parts, by concern: ``work`` (what its transactions take and hand back), ``snapshots``
(definition snapshots and run inputs, cached), ``transitions`` (advancing a run: view, decide,
apply; a run's end is ``run_end``, the artifacts a step's outputs grant ``grants``), ``submission`` (new runs), ``recording`` (what services report), ``claims`` (leasing tasks
to workers), ``control`` (cancel, retry, fork), ``answers`` (a person's answer to an ask step,
whose transitions are ``ask_steps``); ``Engine`` puts them together.
"""

from __future__ import annotations

import hmac
from typing import Any

from toolweave.engine.answers import Answers
from toolweave.engine.claims import Claims
from toolweave.engine.control import RunControl
from toolweave.engine.recording import Recording
from toolweave.engine.submission import Submission
from toolweave.engine.work import Lease, Outcome, Work
from toolweave.store.db import Tx


class Engine(Submission, Recording, Claims, RunControl, Answers):
    """Transaction functions over the store, with caches of definition snapshots."""

    def record_and_claim_tx(
        self, tx: Tx, outcomes: list[Outcome], now: float, lease: Lease | None, owner: str | None, room: int
    ) -> tuple[list[tuple[list[Work], bool]], list[Any]]:
        """``record_submissions_tx``, then, in the same transaction, claim for ``owner`` queued tasks
        into the slots the batch leaves free: a worker that finishes a run takes its next task
        without a transaction of its own. ``room`` is how many tasks the batch and the claims may
        hold together (the worker's claim rule); the dispatches the batch goes on with count first."""
        results = self.record_submissions_tx(tx, outcomes, now, lease)
        freed = sum(1 for dispatches, _ in results if not dispatches)
        limit = min(freed, room - sum(len(dispatches) for dispatches, _ in results))
        claimed = self._claim(tx, owner, limit, now)[0] if owner is not None and limit > 0 else []
        return results, claimed

    # --- webhooks ------------------------------------------------------------------------------

    def webhook_token(self, service: str, generation_id: str) -> str:
        return hmac.digest(self.secret, f"{service}:{generation_id}".encode(), "sha256").hex()[:32]

    def check_webhook_token(self, service: str, generation_id: str, token: str) -> bool:
        expected = self.webhook_token(service, generation_id).encode()
        return hmac.compare_digest(expected, (token or "").encode("utf-8", "surrogateescape"))
