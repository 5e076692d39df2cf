"""Running what users write — CEL conditions, Jinja templates — within bounds.

- ``budget``: a CPU-time budget for pure-Python evaluation (a trace function in the evaluating
  thread stops it past the budget; an uninterruptible C call is what the process pool is for);
- ``jinja``: the sandboxed Jinja environment with size limits on ``*`` and ``**``; which templates
  are straight-line, how much a straight-line one may build at most, and whether that is bounded
  whatever the values;
- ``pool``: a pool of evaluator processes, each with a memory limit, killed and replaced when a call
  outlives its hard deadline, so no evaluation runs inside a store transaction or on the event loop
  that serves requests, and none can freeze or exhaust the process that does.

This package imports nothing of ours beyond itself: the engine and the builtin tools use it.
"""

from toolweave.sandbox.budget import Allowance, BudgetExceeded, cpu_budget, piece_budget, shared_allowance
from toolweave.sandbox.jinja import (
    BoundedEnvironment,
    bounded_growth,
    straight_line,
    undeclared_variables,
    work_bound,
)
from toolweave.sandbox.pool import EvaluationError, EvaluationPool

__all__ = [
    "Allowance", "BoundedEnvironment", "BudgetExceeded", "EvaluationError", "EvaluationPool", "bounded_growth",
    "cpu_budget", "piece_budget", "shared_allowance", "straight_line", "undeclared_variables", "work_bound",
]
