"""A step's condition and templates, evaluated outside every transaction and within budgets.

A step whose condition or templates must be evaluated before it starts is first moved to
``ready`` by the planner (``plan.Evaluate``), with an ``evaluate`` task for its run. The worker
that holds the task sends each such step (``EvaluateWork``) to the evaluator processes
(``sandbox.EvaluationPool``): ``evaluate_step`` runs there, the condition under
``condition_budget`` of CPU time, the step's mappings (its templates) under ``template_budget``.
The answers (``StepEvaluation``) go back to the planner in the transaction that then starts, skips
or fails the step. So a condition or template a user's inputs make slow costs an evaluator
process its budget — never a store transaction, the event loop that serves requests, or a worker.

A condition is evaluated for a step's first attempt only (as before); templates for every attempt
(a retry and a fallback resolve the inputs again). A map step's templates are evaluated once, when
its map opens: every item's inputs, each item under its own ``template_budget``; an item past it
(or whose templates fail) fails alone, and its retries and fallback reuse what was resolved.

Only what can loop goes this way: a CEL condition with a macro (``all``, ``exists``, ``map``…), a
template with a loop, a call, ``*``, ``**``, ``%`` or a filter outside a short list of linear ones,
or a straight-line one whose work a user's values can make grow beyond their size times a fixed
factor (``sandbox.bounded_growth``: ``round(job.p, 'floor')``, ``join(job.v)``, a chain of ``tojson``).
A straight-line condition or bounded straight-line template (``steps.a.outputs.image.width < 2048``,
``{{ job.prompt }}, ultra detailed``) costs about what reading its values costs — like any mapping —
and the planner evaluates it where it stands, without the round trip.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from toolweave.engine.actions import StepEvaluation
from toolweave.model.definitions import Step
from toolweave.sandbox import BudgetExceeded, EvaluationError, EvaluationPool, cpu_budget
from toolweave.store.tasks import Claim

EVALUATE_STEP = "toolweave.engine.evaluate:evaluate_step"
BUDGET_CODE = "evaluation_budget"


@dataclass(frozen=True)
class Budgets:
    condition_seconds: float = 0.1
    template_seconds: float = 0.1

    def hard_seconds(self, evaluations: int = 1) -> float:
        """How long an evaluator may go without answering before it is killed: far beyond the CPU
        budgets of what it was asked (the condition, and ``evaluations`` templates evaluations:
        one per item of a map step) — the budget stops what it can; this stops what it cannot,
        like a C call."""
        return 5.0 + 20 * (self.condition_seconds + evaluations * self.template_seconds)


@dataclass
class EvaluateWork:
    """A leased ``evaluate`` task with what its steps' evaluation needs."""

    task_id: int
    claim_token: str
    run_id: str
    job_inputs: dict[str, Any]
    steps: list[tuple[Step, int, dict[str, Any]]] = field(default_factory=list)
    """(step, attempt, the steps' statuses and outputs it sees)."""

    @property
    def claim(self) -> Claim:
        return Claim(self.task_id, self.claim_token)


def templates_loop(step: Step) -> bool:
    """Whether a template of the step may loop (``mapping.template_loops``): its inputs are then
    resolved in an evaluator process."""
    from toolweave.engine.mapping import MappingError, template_loops

    for mapping in step.input_mappings:
        if mapping.template is None:
            continue
        try:
            if template_loops(mapping.template):
                return True
        except MappingError:
            return True  # let the evaluation report it
    return False


def condition_loops(step: Step) -> bool:
    """Whether the step's condition iterates (``CompiledCondition.loops``)."""
    from toolweave.engine.conditions import ConditionError, compile_condition

    if not step.condition:
        return False
    try:
        return compile_condition(step.condition).loops
    except ConditionError:
        return True


def needs_evaluation(step: Step, attempt: int) -> bool:
    """Whether starting this attempt evaluates something a user's inputs can make slow (a condition
    or template that loops): then the step goes to be evaluated, outside the transaction. (For a
    map step, the attempt is its opening: every item's inputs are evaluated then.)"""
    return templates_loop(step) or (attempt == 1 and condition_loops(step))


def prepare() -> None:
    """An evaluator process's one-off work, done before each call's hard deadline starts (and
    again after ``_forget_compiled``): import the condition and template modules, build CEL's
    environment and parser and the template environment. Cached: a no-op once done. Without it
    the first evaluation in a new evaluator process paid for them — about a second of CPU, which at
    the evaluators' lower priority on a busy machine ran past the 9 s hard deadline."""
    from toolweave.engine.conditions import compile_condition
    from toolweave.engine.mapping import compile_template

    compile_condition("true")
    compile_template("{{ prepared }}")


def evaluate_step(request: dict[str, Any]) -> dict[str, Any]:
    """One step's evaluation (runs in an evaluator process; plain data in and out)."""
    from toolweave.engine.conditions import ConditionError, compile_condition, evaluate_condition
    from toolweave.engine.mapping import MappingError, compile_template, resolve_step_inputs

    step = Step.model_validate(request["step"])
    attempt = int(request["attempt"])
    job, steps = request["job"], request["steps"]
    out: dict[str, Any] = {}
    # parsing is the definition's (checked when it was registered, and cached): only what the
    # inputs make it do counts against the budgets
    if attempt == 1 and step.condition:
        budget = float(request["condition_seconds"])
        try:
            compiled = compile_condition(step.condition)
            out["condition"] = evaluate_condition(compiled, job=job, steps=steps, budget_seconds=budget)
        except BudgetExceeded as exc:
            _forget_compiled()
            return {"error": _error(f"condition {step.condition!r} {exc} (its budget, condition_budget_ms)",
                                    BUDGET_CODE, "condition")}
        except ConditionError as exc:
            return {"error": _error(f"condition could not be evaluated: {exc}", None, "condition")}
        if not out["condition"]:
            return out
    if step.map is not None and templates_loop(step):
        items = _map_items(step, job, steps)
        if items is not None:  # (else the planner names what is wrong with the list when it opens the map)
            out["items"] = [_item_inputs(step, job, steps, i, item, float(request["template_seconds"]))
                            for i, item in enumerate(items)]
    elif templates_loop(step):
        budget = float(request["template_seconds"])
        try:
            for mapping in step.input_mappings:
                if mapping.template is not None:
                    compile_template(mapping.template)
            with cpu_budget(budget):
                out["inputs"] = resolve_step_inputs(step, job=job, steps=steps)
        except BudgetExceeded as exc:
            _forget_compiled()
            return {"error": _error(f"the templates of step {step.step_id!r} {exc} (their budget, "
                                    "template_budget_ms)", BUDGET_CODE, "inputs")}
        except MappingError as exc:
            return {"error": _error(f"inputs could not be resolved: {exc}", None, "inputs")}
    return out


def _map_items(step: Step, job: dict[str, Any], steps: dict[str, Any]) -> list[Any] | None:
    """The list a map step runs over, or None when the planner will refuse it (no list, too long)."""
    from toolweave.engine.mapping import MappingError, resolve_map_items

    assert step.map is not None
    try:
        items = resolve_map_items(step, job=job, steps=steps)
    except MappingError:
        return None
    return items if len(items) <= step.map.max_items else None


def _item_inputs(step: Step, job: dict[str, Any], steps: dict[str, Any], index: int, item: Any,
                 budget: float) -> dict[str, Any]:
    """One item's inputs (``{"inputs": …}``) under ``budget`` of CPU time, or why not (``{"error": …}``)."""
    from toolweave.engine.mapping import MappingError, compile_template, resolve_step_inputs

    try:
        for mapping in step.input_mappings:
            if mapping.template is not None:
                compile_template(mapping.template)  # (cached; compiled again after an interruption)
        with cpu_budget(budget):
            return {"inputs": resolve_step_inputs(step, job=job, steps=steps, item=item, index=index)}
    except BudgetExceeded as exc:
        _forget_compiled()
        message = f"the templates of step {step.step_id!r} for item {index} {exc} (their budget, template_budget_ms)"
        return {"error": {"message": message, "retryable": False, "code": BUDGET_CODE}}
    except MappingError as exc:
        return {"error": {"message": f"inputs could not be resolved: {exc}", "retryable": False, "code": None}}


def _forget_compiled() -> None:
    """Drop this process's compiled conditions and templates after an evaluation was interrupted,
    so that nothing an interruption may have left half-changed is used again (compiling again
    costs well under a millisecond each)."""
    from toolweave.engine import conditions, mapping

    conditions.forget_compiled()
    mapping.forget_compiled()


def _error(message: str, code: str | None, stage: str) -> dict[str, Any]:
    return {"message": message, "retryable": False, "code": code, "stage": stage}


async def evaluate(pool: EvaluationPool, work: EvaluateWork, budgets: Budgets) -> list[StepEvaluation]:
    """Evaluate every step of ``work`` in the evaluator processes."""
    import asyncio

    async def one(step: Step, attempt: int, context: dict[str, Any]) -> StepEvaluation:
        request = {
            "step": step.dump(), "attempt": attempt, "job": work.job_inputs, "steps": context,
            "condition_seconds": budgets.condition_seconds, "template_seconds": budgets.template_seconds,
        }
        items = _map_items(step, work.job_inputs, context) if step.map is not None else None
        try:
            answer = await pool.call(EVALUATE_STEP, request, budgets.hard_seconds(max(1, len(items or ()))))
        except EvaluationError as exc:
            code = BUDGET_CODE if exc.code == "evaluation_timeout" else exc.code
            stage = "condition" if attempt == 1 and step.condition else "inputs"
            answer = {"error": _error(f"step {step.step_id!r} could not be evaluated: {exc.message}", code, stage)}
        return StepEvaluation.of(step.step_id, attempt, answer)

    return list(await asyncio.gather(*(one(step, attempt, ctx) for step, attempt, ctx in work.steps)))
