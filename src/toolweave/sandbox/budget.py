"""A CPU-time budget for code that evaluates what users wrote.

``with cpu_budget(0.1): ...`` installs a trace function in the current thread that checks, every
few hundred trace events, how much CPU time the thread has used, and raises ``BudgetExceeded`` once
the budget is spent. CPU time, not wall time: a machine under load slows an evaluation down without
making it fail. Jinja's compiled templates produce trace events all the time, so they stop within a
few milliseconds of the budget; a single long C call does not, which is why evaluation also runs in
a separate process that can be killed (``pool``). (CEL conditions are budgeted by their interpreter
instead, between nodes: ``engine.conditions``.)

A garbage collection that the budgeted code starts (by allocating) runs finalizers inside the
block, under the trace function: SQLAlchemy's pool returns connections from them. The budget does
not raise there: the finalizer would be cut short ("Exception ignored in …"), and Python drops a
trace function that raises, so the budget would stop watching the code it budgets. It raises at the
first look at the clock after the collection instead.
"""

from __future__ import annotations

import gc
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from types import FrameType
from typing import Any

CHECK_EVERY = 256
"""Trace events between two looks at the clock."""


class BudgetExceeded(BaseException):
    """The evaluation used up its CPU budget. A ``BaseException``, so that the evaluators' own
    ``except Exception`` handlers cannot swallow it and carry on."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"took more than {seconds * 1000:g} ms of CPU time")
        self.seconds = seconds


_collecting: set[int] = set()
"""Threads in a garbage collection (``gc.callbacks``): finalizers run there, not budgeted code."""


def _on_collection(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _collecting.add(threading.get_ident())
    else:
        _collecting.discard(threading.get_ident())


gc.callbacks.append(_on_collection)


@contextmanager
def cpu_budget(seconds: float) -> Iterator[None]:
    """Raise ``BudgetExceeded`` in this thread once it has used ``seconds`` of CPU time inside the block."""
    deadline = time.thread_time() + seconds
    ticks = 0

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal ticks
        ticks += 1
        if ticks % CHECK_EVERY == 0 and time.thread_time() > deadline and threading.get_ident() not in _collecting:
            raise BudgetExceeded(seconds)
        return tracer

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        yield
    finally:
        sys.settrace(previous)


@dataclass
class Allowance:
    """CPU time shared by many budgeted pieces of work (one definition's templates and conditions,
    compiled one by one): each ``piece_budget`` gets at most what is left, and its time is taken
    from it. Only the time inside the pieces counts."""

    seconds: float
    spent: float = 0.0
    pieces: int = 0
    """Pieces that started (the last may have been cut short)."""
    exhausted: bool = False
    """A piece was refused or cut short because the allowance ran out (not by its own budget)."""


_allowance: ContextVar[Allowance | None] = ContextVar("toolweave_cpu_allowance", default=None)


@contextmanager
def shared_allowance(seconds: float) -> Iterator[Allowance]:
    """Within the block, every ``piece_budget`` of this context draws on one ``Allowance``."""
    allowance = Allowance(seconds)
    token = _allowance.set(allowance)
    try:
        yield allowance
    finally:
        _allowance.reset(token)


@contextmanager
def piece_budget(seconds: float) -> Iterator[None]:
    """``cpu_budget(seconds)``, or less when a ``shared_allowance`` has less left (``BudgetExceeded``
    at once when it has nothing left)."""
    allowance = _allowance.get()
    if allowance is None:
        with cpu_budget(seconds):
            yield
        return
    left = allowance.seconds - allowance.spent
    if left <= 0:
        allowance.exhausted = True
        raise BudgetExceeded(allowance.seconds)
    limit = min(seconds, left)
    allowance.pieces += 1
    start = time.thread_time()
    try:
        with cpu_budget(limit):
            yield
    except BudgetExceeded:
        if limit < seconds:
            allowance.exhausted = True
        raise
    finally:
        allowance.spent += time.thread_time() - start
