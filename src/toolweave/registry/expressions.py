"""What checking a job's templates and conditions may cost, together.

Each template and condition is compiled under a CPU budget of its own (``PARSE_BUDGET_SECONDS`` in
``engine.mapping`` and ``engine.conditions``); a definition posted to ``/jobs/validate`` (any
account may) could otherwise hold as many as its characters allow, each taking most of its budget:
a job's templates and conditions together may hold ``MAX_EXPRESSION_CHARS`` characters, and
compiling them all may take ``DEFINITION_COMPILE_SECONDS`` of CPU together (``sandbox.shared_allowance``).
Past either, the definition has one problem (``code`` ``too_costly``) and the rest is not checked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from toolweave.model.definitions import JobDefinition
from toolweave.registry.problems import Problem
from toolweave.sandbox import shared_allowance

MAX_EXPRESSION_CHARS = 200_000
"""The most characters a job's templates and conditions may hold together (a 7 MB definition of
400 templates took 176 s of CPU to validate)."""
DEFINITION_COMPILE_SECONDS = 2.0
"""The CPU time compiling a job's templates and conditions may take together (cached ones cost
nothing): 200,000 characters of list literals in conditions took about 40 s, each within its own
second."""
TOO_COSTLY = "too_costly"
"""The ``code`` of the problem of a definition too costly to check."""


def expressions(job: JobDefinition) -> list[str]:
    """The job's templates and conditions."""
    found: list[str] = []
    for step in job.steps:
        if step.condition:
            found.append(step.condition)
        found.extend(m.template for m in step.input_mappings if m.template)
    return found


def too_long(job: JobDefinition, problem: Callable[[str], Problem]) -> Problem | None:
    """The problem of a job whose templates and conditions hold too many characters together."""
    total = sum(len(text) for text in expressions(job))
    if total <= MAX_EXPRESSION_CHARS:
        return None
    return problem(f"its templates and conditions hold {total:,} characters together; a job may hold "
                   f"at most {MAX_EXPRESSION_CHARS:,} characters of them")


@contextmanager
def compile_allowance(job: JobDefinition, problem: Callable[[str], Problem]) -> Iterator[list[Problem]]:
    """Check the job inside the block; afterwards the list holds the one problem of a job whose
    templates and conditions took more than ``DEFINITION_COMPILE_SECONDS`` to compile together."""
    refused: list[Problem] = []
    with shared_allowance(DEFINITION_COMPILE_SECONDS) as allowance:
        yield refused
    if allowance.exhausted:
        count = len(expressions(job))
        refused.append(problem(
            f"its templates and conditions take more than {DEFINITION_COMPILE_SECONDS:g} s of CPU to compile "
            f"together (it ran out after {allowance.pieces} of {count}); make them shorter or fewer"))
