"""Ask steps in the engine's transitions: a question asked (its row, its event, the notification
that says the run needs its account), the answers the planner reads (``attach``), the timeout's
answer, the run's ``waiting_input`` status, and a question closed when its step ends otherwise.
The planner decides what an answer does (``plan``); a person's answer is ``engine.answers``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from toolweave.engine import plan
from toolweave.engine.work import _Ctx
from toolweave.model.status import QuestionStatus, RunStatus, StepStatus, TaskKind
from toolweave.store import notifications as notes_q
from toolweave.store import questions as questions_q
from toolweave.store import runs as runs_q
from toolweave.store import tasks as tasks_q
from toolweave.store.db import Tx
from toolweave.store.ids import new_id

WAITING_EVENT = "run.waiting_input"
NEEDS_YOU = "Your run needs you"


def attach(tx: Tx, step_rows: Mapping[str, Any], views: Mapping[str, plan.StepView]) -> None:
    """Give the planner's views of waiting ask steps their question and answer (one read, only
    when a step waits)."""
    wanted = {sid: row["question_id"] for sid, row in step_rows.items()
              if row["status"] == StepStatus.WAITING_INPUT.value and row["question_id"]}
    if not wanted:
        return
    found = questions_q.many(tx, list(wanted.values()))
    for sid, qid in wanted.items():
        question = found.get(qid)
        if question is None:
            continue
        view = views[sid]
        view.question = question.body
        if question.status == QuestionStatus.ANSWERED.value:
            view.answer, view.answered_by = question.answer, question.answered_by


def close_waiting(tx: Tx, row: Any, now: float) -> None:
    """A waiting step that ended otherwise (cancelled, failed, skipped): its question is closed."""
    if row["status"] == StepStatus.WAITING_INPUT.value and row["question_id"]:
        questions_q.close(tx, row["question_id"], now)


def apply(
    engine: Any, tx: Tx, run: Any, view: plan.RunView, step_rows: Mapping[str, Any],
    action: plan.AskStep | plan.ExpireQuestion | plan.SetWaiting, ctx: _Ctx, event: Callable[..., None],
) -> None:
    now, run_id = ctx.now, run.run_id
    if isinstance(action, plan.SetWaiting):
        status = RunStatus.WAITING_INPUT if action.waiting else RunStatus.RUNNING
        if runs_q.set_status(tx, run_id, status, now):
            event(WAITING_EVENT if action.waiting else "run.resumed")
            if run.parent_run_id:  # a nested job's run: its parent waits (or no longer waits) with it
                engine._advance_parent(tx, run.parent_run_id, ctx, None)
        return
    if isinstance(action, plan.ExpireQuestion):
        row = step_rows[action.step_id]
        if row["question_id"] and questions_q.answer(tx, row["question_id"], action.answer, None, now, expired=True):
            event("step.answer_timed_out", action.step_id, questionId=row["question_id"], answer=action.answer)
        return
    step = view.job.step(action.step_id)
    assert step is not None and step.ask is not None
    qid = new_id("q_")
    if not runs_q.update_step(
        tx, run_id, action.step_id, (StepStatus.PENDING, StepStatus.READY, StepStatus.WAITING_RETRY),
        status=StepStatus.WAITING_INPUT, attempt=action.attempt, question_id=qid, started_at=now,
        next_attempt_at=None, progress=None, tool_id=None,
    ):
        return
    questions_q.insert(
        tx, question_id=qid, run_id=run_id, step_id=action.step_id, attempt=action.attempt,
        account_id=run.master_account_id, approvers=list(step.ask.approvers), kind=step.ask.kind.value,
        body=action.question, status=QuestionStatus.WAITING.value, asked_at=now, expires_at=action.expires_at,
    )
    event("step.waiting_input", action.step_id, questionId=qid, attempt=action.attempt, question=action.question,
          expiresAt=action.expires_at)
    _notify(engine, tx, run, action.step_id, qid, action, list(step.ask.approvers), now)


def _notify(
    engine: Any, tx: Tx, run: Any, step_id: str, qid: str, action: plan.AskStep, approvers: list[str], now: float
) -> None:
    """The outbox rows that tell the run's account its run needs it (callback, Telegram, …), and
    the approvers the step names where a rule knows how to reach them (Telegram)."""
    targets: list[tuple[str, dict[str, Any]]] = []
    if run.callback_url:
        targets.append(("callback", {"url": run.callback_url}))
    for rule in engine.notification_rules:
        targets.extend(rule(run, RunStatus.WAITING_INPUT))
    if approvers:
        for approver_rule in engine.approver_rules:
            targets.extend(t for t in approver_rule(tx, run, approvers) if t not in targets)
    payload = {
        "runId": run.run_id, "status": RunStatus.WAITING_INPUT.value, "jobId": run.job_definition_id,
        "stepId": step_id, "questionId": qid, "question": action.question, "expiresAt": action.expires_at,
        "message": f"{NEEDS_YOU}: {action.question.get('text', '')}",
    }
    for channel, target in targets:
        nid = new_id("ntf_")
        notes_q.insert(
            tx, notification_id=nid, run_id=run.run_id, account_id=run.master_account_id, channel=channel,
            event_type=WAITING_EVENT, target=target, payload=payload, created_at=now,
        )
        tasks_q.enqueue(tx, TaskKind.NOTIFY, run_id=run.run_id, ref_id=nid, now=now)
