"""The planner's part for steps that ask a person (``ask:``): the question asked when the step is
ready, its answer (or the default answer once its timeout passed) turned into the step's outputs,
a rejection that fails or skips it. Pure: no I/O."""

from __future__ import annotations

from typing import Any

from toolweave.engine.actions import AskStep, CompleteStep, ExpireQuestion, StepView
from toolweave.engine.asking import build_question, default_answer, outputs_of
from toolweave.engine.plan_base import PlannerBase
from toolweave.engine.plan_rules import error as _error
from toolweave.model.asking import OnReject
from toolweave.model.definitions import ErrorStrategy, Step
from toolweave.model.status import StepStatus


class AskPlanning(PlannerBase):
    def ask(self, step: Step, view: StepView, attempt: int, inputs: dict[str, Any]) -> None:
        """An ask step is ready: its question is stored and it waits for a person until its timeout."""
        assert step.ask is not None
        question = build_question(step.ask, inputs)
        if isinstance(question, str):
            self.failure(step, view, _error(f"step {step.step_id!r} cannot ask: {question}", code="invalid_input"),
                         attempt=attempt, tool_may_help=False)
            return
        expires = self.now + step.ask.timeout
        self.actions.append(AskStep(step.step_id, attempt, question, expires))
        self.status[step.step_id] = StepStatus.WAITING_INPUT
        self.wake_at(expires)

    def visit_waiting(self, step: Step, view: StepView) -> None:
        """An ask step waiting for input: its answer, or the default answer once its timeout passed."""
        spec, question = step.ask, view.question
        if spec is None or question is None:  # (a view built without its question)
            return
        answer, by = view.answer, view.answered_by
        if answer is None:
            expires = (view.started_at if view.started_at is not None else self.now) + spec.timeout
            if self.now < expires:
                self.wake_at(expires)
                return
            answer, by = default_answer(spec, question), None
            self.actions.append(ExpireQuestion(step.step_id, answer))
        outputs = outputs_of(spec, question, answer, by)
        if not outputs["approved"] and spec.on_reject is OnReject.FAIL:
            if by is None:
                error = _error(f"not answered within {spec.timeout:g} s (onTimeout: {spec.on_timeout.value})", code="ask_timeout")
            else:
                error = _error(f"rejected by {by}" + (f": {outputs['comment']}" if outputs["comment"] else ""),
                               code="rejected")
            self.give_up(step, error, skip=self.job.error_handling_for(step).strategy is ErrorStrategy.SKIP)
            return
        self.actions.append(CompleteStep(step.step_id, outputs))
        self.status[step.step_id] = StepStatus.SUCCEEDED
        self.outputs[step.step_id] = outputs
