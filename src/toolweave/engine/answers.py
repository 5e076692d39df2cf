"""A person's answer to an ask step's question (``Answers.answer_tx``): checked against the
question (``engine.asking``), recorded by compare-and-set under the run's lock, and the run
advanced in the same transaction; and the questions waiting for an account."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from toolweave.engine.asking import check_answer
from toolweave.engine.transitions import Transitions
from toolweave.engine.work import Conflict, NotFound, _Ctx
from toolweave.model.status import QuestionStatus, StepStatus
from toolweave.store import events as events_q
from toolweave.store import questions as questions_q
from toolweave.store import runs as runs_q
from toolweave.store.db import Row, Tx

ADMIN = "admin"
"""Who an answer given with the admin key is recorded as."""


@dataclass(frozen=True)
class Answered:
    """What answering a question did: ``repeated`` when the same answer had been given already."""

    run_id: str
    step_id: str
    question_id: str
    answer: dict[str, Any]
    answered_by: str
    repeated: bool
    run_status: str


def _describe(question: Row) -> str:
    if question.status == QuestionStatus.ANSWERED.value:
        return f"it was answered already by {question.answered_by}"
    if question.status == QuestionStatus.EXPIRED.value:
        return "nobody answered in time, and its default answer was taken"
    return "its step ended without an answer (the run was cancelled or failed)"


class Answers(Transitions):
    """Answering ask steps."""

    def answer_tx(self, tx: Tx, run_id: str, step_id: str, account_id: str | None, body: Any, now: float) -> Answered:
        """``account_id`` answers the question step ``step_id`` of run ``run_id`` asks (None: the
        admin key, which answers any run's question as ``admin``). NotFound when the run is not
        theirs and they are not an approver of the question; Conflict when the step
        does not wait for an answer (a repeat of the answer given is not: it answers as before);
        ``AnswerError`` when the answer does not fit the question."""
        run = runs_q.lock_state(tx, run_id)  # every transaction locks the run before its parts
        if run is None:
            raise NotFound(run_id)
        row = runs_q.step(tx, run_id, step_id)
        question = questions_q.get(tx, row.question_id) if row is not None and row.question_id else None
        own = account_id is None or run.master_account_id == account_id
        who = account_id or ADMIN
        if not own and (question is None or account_id not in (question.approvers or [])):
            raise NotFound(run_id)
        step = self._job(tx, run.definition_sha)[0].step(step_id)
        if row is None or step is None:
            raise NotFound(f"run {run_id} has no step {step_id!r}")
        if step.ask is None:
            raise Conflict(f"step {step_id!r} runs {step.target_id!r}; it asks nobody anything")
        if question is None:
            raise Conflict(f"step {step_id!r} is not waiting for an answer (it is {row.status})")
        if question.status != QuestionStatus.WAITING.value or row.status != StepStatus.WAITING_INPUT.value:
            if question.status == QuestionStatus.ANSWERED.value and question.answered_by == who:
                try:
                    same = check_answer(step.ask, question.body, body) == question.answer
                except ValueError:
                    same = False
                if same:  # the same answer again (a retried request, a second click): as before
                    return Answered(run_id, step_id, question.question_id, question.answer, who, True,
                                    str(run.status))
            raise Conflict(f"step {step_id!r} is not waiting for an answer: {_describe(question)}")
        if question.expires_at is not None and now >= float(question.expires_at):
            # its timeout passed: the timeout's task (due since then) answers with onTimeout, however
            # late a worker takes it; a person's answer now would depend on how busy the workers are
            raise Conflict(f"step {step_id!r} is not waiting for an answer: nobody answered in time "
                           f"(its question expired {now - float(question.expires_at):.0f} s ago; "
                           "its default answer is being taken)")
        answer = check_answer(step.ask, question.body, body)
        if not questions_q.answer(tx, question.question_id, answer, who, now):
            raise Conflict(f"step {step_id!r} is not waiting for an answer")  # (the run's lock makes this unreachable)
        events_q.append(tx, run_id, "step.answered", now, step_id=step_id, questionId=question.question_id,
                        answer=answer, answeredBy=who)
        self._advance(tx, run_id, _Ctx(now, None, picked_up=False))
        status = runs_q.get(tx, run_id)
        return Answered(run_id, step_id, question.question_id, answer, who, False,
                        str(status.status if status is not None else run.status))

    def questions_tx(self, tx: Tx, run_id: str) -> list[Row]:
        return questions_q.of_run(tx, run_id)

    def waiting_questions_tx(self, tx: Tx, account_id: str | None, limit: int = 100) -> list[Row]:
        """Questions waiting for ``account_id``: its runs' and those naming it an approver."""
        rows = questions_q.waiting(tx, account_id, limit)
        if account_id is not None:
            rows += questions_q.waiting_for_approver(tx, account_id, limit)
        return sorted(rows, key=lambda r: r.asked_at)[:limit]
