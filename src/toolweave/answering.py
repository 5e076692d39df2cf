"""How an ``App`` lets a person answer a step that asks (``ask``): the answer (checked, recorded
and the run advanced in one transaction: ``Engine.answer_tx``), a question as its account or an
approver sees it, and the questions waiting for an account."""

from __future__ import annotations

import time
from typing import Any

from toolweave.engine.answers import Answered
from toolweave.engine.asking import AnswerError
from toolweave.engine.core import Engine
from toolweave.engine.work import NotFound
from toolweave.run_views import question_view
from toolweave.store import questions as questions_q
from toolweave.store import runs as runs_q
from toolweave.store.db import Store, Tx

__all__ = ["AnswerError", "Answering"]


class Answering:
    """Answering ask steps (a part of ``App``)."""

    engine: Engine
    store: Store

    async def answer(self, run_id: str, step_id: str, account_id: str | None, answer: Any) -> dict[str, Any]:
        """Answer the question step ``step_id`` of run ``run_id`` waits on: ``{decision, chosen,
        values, comment}`` (``engine.asking``). NotFound unless the run is the account's or the
        question names it an approver; Conflict when the step does not wait for an answer (the same
        answer again answers as before, ``repeated``); AnswerError naming every wrong field."""
        done: Answered = await self.store.tx(self.engine.answer_tx, run_id, step_id, account_id, answer, time.time())
        return {
            "runId": done.run_id, "stepId": done.step_id, "questionId": done.question_id, "answer": done.answer,
            "answeredBy": done.answered_by, "repeated": done.repeated, "runStatus": done.run_status,
        }

    async def answer_question(self, question_id: str, account_id: str | None, answer: Any) -> dict[str, Any]:
        """``answer`` for the question with this id (a Telegram button or reply names the question);
        NotFound as ``answer`` for a question that is not the account's to answer."""
        row = await self.store.read(questions_q.get, question_id)
        if row is None:
            raise NotFound(question_id)
        return await self.answer(str(row.run_id), str(row.step_id), account_id, answer)

    async def question(self, run_id: str, step_id: str, account_id: str | None) -> dict[str, Any]:
        """The question a step asked (its latest), for the run's account or an approver it names."""
        found: dict[str, Any] = await self.store.read(_question, run_id, step_id, account_id)
        return found

    async def waiting_questions(self, account_id: str | None, limit: int = 100) -> list[dict[str, Any]]:
        """Questions waiting for ``account_id``'s answer (its runs', and those naming it an
        approver), oldest first; every one for None (the admin)."""
        rows = await self.store.read(self.engine.waiting_questions_tx, account_id, limit)
        return [question_view(r) for r in rows]


def _question(tx: Tx, run_id: str, step_id: str, account_id: str | None) -> dict[str, Any]:
    run = runs_q.get(tx, run_id)
    row = runs_q.step(tx, run_id, step_id) if run is not None else None
    question = questions_q.get(tx, row.question_id) if row is not None and row.question_id else None
    allowed = run is not None and (
        account_id is None or run.master_account_id == account_id
        or (question is not None and account_id in (question.approvers or []))
    )
    if not allowed or question is None:
        raise NotFound(f"{run_id}/{step_id}")
    return question_view(question)
