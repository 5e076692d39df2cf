"""Steps that ask a person: answer one (``POST /runs/{id}/steps/{step}/answer``), read a question
as the run's account or an approver, list the questions waiting for the caller."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from toolweave.api.auth import Caller, changing, require_caller, tw
from toolweave.api.routes_runs import RunId
from toolweave.api.schemas import QuestionInfo

router = APIRouter(prefix="/api/v1")

StepId = Annotated[str, Path(min_length=1, max_length=200, description="The id of the step that asks")]


class AnswerRequest(BaseModel):
    """An answer to a step's question: ``decision`` (an approve question needs it; choosing or
    editing is approving), ``chosen`` (a choose question: the candidates' indexes, from 0),
    ``values`` (an edit question: the fields to change; the others keep their prefilled values),
    ``comment``."""

    model_config = ConfigDict(extra="forbid")
    decision: Literal["approve", "reject"] | None = None
    chosen: list[int] | int | None = Field(default=None, description="choose: the chosen candidates' indexes")
    values: dict[str, Any] | None = Field(default=None, description="edit: the values to change")
    comment: str | None = Field(default=None, max_length=2000)


class AnswerResult(BaseModel):
    runId: str
    stepId: str
    questionId: str
    answer: dict[str, Any] = Field(description="The answer as recorded")
    answeredBy: str
    repeated: bool = Field(description="true when this answer had been given already (nothing changed)")
    runStatus: str = Field(description="The run's status after the answer")


class QuestionList(BaseModel):
    items: list[QuestionInfo]


@router.post(
    "/runs/{run_id}/steps/{step_id}/answer", response_model=AnswerResult, summary="Answer a step that asks",
    tags=["runs"],
    responses={
        404: {"description": "No such run or step, or neither your run nor one whose question names you an approver"},
        409: {"description": "The step is not waiting for an answer (a different answer was given, the timeout "
                             "answered, the run ended); the same answer again is not a conflict"},
        422: {"description": "The answer does not fit the question (each wrong field named)"},
    },
)
async def answer_step(request: Request, run_id: RunId, step_id: StepId, body: AnswerRequest,
                      caller: Caller = Depends(require_caller)) -> dict[str, Any]:
    """Answer the question the step waits on; the run goes on at once (in the same transaction).
    Repeating the answer already recorded answers as before (``repeated``)."""
    given = body.model_dump(exclude_none=True)
    app = tw(request)
    async with changing(app, caller, run_id) as account:
        return await app.answer(run_id, step_id, account, given)


@router.get("/runs/{run_id}/steps/{step_id}/question", response_model=QuestionInfo,
            summary="Show what a step asks", tags=["runs"],
            responses={404: {"description": "No such question, or not for you"}})
async def show_question(request: Request, run_id: RunId, step_id: StepId,
                        caller: Caller = Depends(require_caller)) -> dict[str, Any]:
    """The step's latest question and its answer: for the run's account and the approvers it names."""
    return await tw(request).question(run_id, step_id, caller.scope)


@router.get("/questions", response_model=QuestionList, summary="List the questions waiting for you", tags=["runs"])
async def list_questions(request: Request, caller: Caller = Depends(require_caller),
                         limit: Annotated[int, Query(ge=1, le=500)] = 100) -> dict[str, Any]:
    """Questions waiting for an answer from you, oldest first: your runs' and those that name you an
    approver."""
    return {"items": await tw(request).waiting_questions(caller.scope, limit)}
