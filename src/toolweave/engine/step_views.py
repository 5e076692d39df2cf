"""The planner's view of a run's steps as the engine makes it from their rows
(``runs_q.StepRows``): which rows a transition reads, every step's status without its view, and
each step's view made when the planner first reads it."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from toolweave.engine import plan
from toolweave.engine.plan_rules import work_sending
from toolweave.model.status import GenerationStatus, StepStatus
from toolweave.store import runs as runs_q

_STEP_STATUS = {s.value: s for s in StepStatus}
_GENERATION_STATUS = {s.value: s for s in GenerationStatus}
_UNFINISHED_VALUES = frozenset(
    s.value for s in (StepStatus.PENDING, StepStatus.READY, StepStatus.RUNNING, StepStatus.WAITING_RETRY, StepStatus.WAITING_INPUT)
)


def unfinished(rows: runs_q.StepRows) -> frozenset[str]:
    """The steps stored as unfinished."""
    return frozenset(sid for sid, status in rows.statuses.items() if status in _UNFINISHED_VALUES)


def wanted_rows(graph: plan.Graph, touched: frozenset[str] | None) -> set[str] | None:
    """The step rows a transition reads (``runs_q.step_rows``): the touched steps, the steps after
    them (the planner visits each of them) and the steps the view is made with (map steps, nested
    jobs, steps that ask); None (every row) when every step is decided, or the run has few steps
    (``runs_q.FEW_STEPS``)."""
    if touched is None or len(graph.order) <= runs_q.FEW_STEPS:
        return None
    wanted = set(touched)
    for sid in touched:
        wanted.update(graph.dependents.get(sid, ()))
    wanted.update(graph.maps)
    wanted.update(graph.nested)
    wanted.update(graph.asks)
    return wanted


class Statuses(Mapping[str, StepStatus]):
    """Every step's stored status for the planner (``RunView.statuses``), without making its view."""

    __slots__ = ("_stored",)

    def __init__(self, stored: Mapping[str, str]) -> None:
        self._stored = stored

    def __getitem__(self, sid: str) -> StepStatus:
        return _STEP_STATUS[self._stored[sid]]

    def __contains__(self, sid: object) -> bool:
        return sid in self._stored

    def __iter__(self) -> Iterator[str]:
        return iter(self._stored)

    def __len__(self) -> int:
        return len(self._stored)


class StepViews(Mapping[str, plan.StepView]):
    """The planner's views of a run's steps by id, each made from its row when first read: a
    transition that decides a few steps makes a few views, however many steps the run has."""

    __slots__ = ("_rows", "_views")

    def __init__(self, rows: Mapping[str, Any]) -> None:
        self._rows = rows
        self._views: dict[str, plan.StepView] = {}

    def __getitem__(self, sid: str) -> plan.StepView:
        view = self._views.get(sid)
        if view is None:
            view = self._views[sid] = _step_view(self._rows[sid])
        return view

    def __contains__(self, sid: object) -> bool:
        return sid in self._rows

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)


def _step_view(row: Any) -> plan.StepView:
    status = _STEP_STATUS[row["status"]]
    work = row["work_status"]
    work_status: GenerationStatus | None = None
    work_outputs = work_error = None
    sending = False
    if status is StepStatus.RUNNING and work is not None and not row["child_run_id"]:
        work_status, work_outputs, work_error = _GENERATION_STATUS[work], row["work_outputs"], row["work_error"]
        sending = work_sending(work, row["work_sent_at"], row["work_run_id"])
    return plan.StepView(
        step_id=row["step_id"], status=status, attempt=row["attempt"], tool_id=row["tool_id"],
        using_fallback=row["using_fallback"], outputs=row["outputs"], skipped_by_error=row["skipped_by_error"],
        reason=row["reason"], next_attempt_at=row["next_attempt_at"], started_at=row["started_at"],
        work_status=work_status, work_outputs=work_outputs, work_error=work_error, work_sending=sending,
    )

