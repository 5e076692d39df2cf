"""A run's cost ceiling as the planner applies it (pure: no I/O).

Before a step (or an item of a map step) starts, its estimate is added to what the run has cost
and to the estimates of its work under way (not yet charged); when that passes the ceiling the
step is not started (``Ceiling.refuse``). See docs/credits.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from toolweave.engine.actions import Budget, StepView
from toolweave.model.status import GenerationStatus, StepStatus


class Ceiling:
    """One planner call's account of a run's ceiling."""

    def __init__(self, budget: Budget | None, steps: Mapping[str, StepView]) -> None:
        self.budget = budget
        self.committed = _committed(budget, steps) if budget is not None else Decimal(0)
        """What the run has cost and what its work under way is estimated at."""
        self.first_error: dict[str, Any] | None = None
        """The error of the first step not started because of the ceiling (the run's reason)."""

    def refuse(self, step_id: str) -> dict[str, Any] | None:
        """The error that keeps ``step_id`` (or one item of it) from starting; None when it fits
        (and it is then counted)."""
        budget = self.budget
        if budget is None:
            return None
        each = budget.steps.get(step_id, Decimal(0))
        if self.committed + each <= budget.ceiling:
            self.committed += each
            return None
        error = {
            "message": f"not started: its estimate {each} would take the run past its cost ceiling {budget.ceiling} "
                       f"(spent and under way: {self.committed})",
            "retryable": False, "code": "cost_ceiling",
        }
        if self.first_error is None:
            self.first_error = error
        return error

    def run_error(self) -> dict[str, Any] | None:
        """The run's error when the ceiling stopped it short."""
        if self.first_error is None:
            return None
        return {**self.first_error, "message": f"the run reached its cost ceiling; a step was {self.first_error['message']}"}


def _committed(budget: Budget, steps: Mapping[str, StepView]) -> Decimal:
    """What a run has cost, plus the estimates of its work under way (not yet charged)."""
    total: Decimal = budget.spent
    for sid, view in steps.items():
        each = budget.steps.get(sid, Decimal(0))
        if view.map is not None:
            total += each * sum(1 for i in view.map.active if i.status is StepStatus.RUNNING and not _ended(i.work_status))
        elif view.status is StepStatus.RUNNING and not _ended(view.work_status):
            total += each
    return total


def _ended(status: GenerationStatus | None) -> bool:
    return status is not None and status.terminal
