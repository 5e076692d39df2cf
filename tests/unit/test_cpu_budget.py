"""``sandbox.cpu_budget`` stops the code it budgets, and only that code.

The budget is a trace function: it sees every Python frame the thread runs inside the block,
including finalizers (``__del__``, weakref callbacks: SQLAlchemy's connection pool returns
connections from them) that a garbage collection runs there because the budgeted code allocated
enough to start one. Raising in such a finalizer interrupted it half way ("Exception ignored in")
and, since Python drops a trace function that raises, the budget stopped watching: the budgeted
code went on without a limit. No test here measures time: a budget of 0 is spent at the first look
at the clock."""

from __future__ import annotations

import gc
from typing import ClassVar

import pytest

from toolweave.sandbox import BudgetExceeded, cpu_budget


class _Cycle:
    """Garbage only a collection frees; its finalizer does Python work (as a pool's does)."""

    finished: ClassVar[list[int]] = []

    def __init__(self) -> None:
        self.me = self

    def __del__(self) -> None:
        total = 0
        for i in range(5000):  # far past the tracer's look at the clock
            total += i
        _Cycle.finished.append(total)


def _spin() -> None:
    """Budgeted work: the trace function sees the frames this makes (not the caller's own, which
    began before the block). Bounded, so that a budget that stopped watching fails the test
    instead of hanging it."""
    for _ in range(1_000_000):
        _step()


def _step() -> None:
    pass


def test_the_budget_stops_the_budgeted_code() -> None:
    with pytest.raises(BudgetExceeded, match="took more than 0 ms of CPU time"):
        with cpu_budget(0.0):
            _spin()


def test_a_finalizer_a_collection_runs_inside_the_block_is_not_interrupted() -> None:
    _Cycle.finished.clear()
    gc.disable()
    try:
        _Cycle()  # unreachable at once: a cycle waiting for the collector
        with pytest.raises(BudgetExceeded):
            with cpu_budget(0.0):
                gc.collect()  # as an allocation inside a template would start one
                _spin()
    finally:
        gc.enable()
    assert _Cycle.finished == [sum(range(5000))]


def _spin() -> None:
    while True:  # Python work until a budget stops it
        sum(range(100))


def test_pieces_draw_on_one_shared_allowance_and_none_starts_once_it_is_spent() -> None:
    """``piece_budget`` inside ``shared_allowance``: a piece gets at most what is left of the
    allowance (here next to nothing: cut at the first look at the clock), and the pieces after it
    are refused before they start. Outside an allowance a piece has its own budget only."""
    from toolweave.sandbox import piece_budget, shared_allowance

    started: list[int] = []
    with shared_allowance(1e-9) as allowance:
        for piece in range(3):
            with pytest.raises(BudgetExceeded):
                with piece_budget(60.0):
                    started.append(piece)
                    _spin()
    assert started == [0] and allowance.exhausted and allowance.pieces == 1  # then nothing left: none started

    with shared_allowance(60.0) as allowance:
        with pytest.raises(BudgetExceeded), piece_budget(0.0):  # cut by its own budget
            _spin()
    assert not allowance.exhausted and allowance.pieces == 1
    with pytest.raises(BudgetExceeded), piece_budget(0.0):  # no allowance: its own budget
        _spin()
