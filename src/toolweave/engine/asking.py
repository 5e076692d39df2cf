"""Questions of ``ask`` steps: what is asked (built from the step's resolved inputs), whether an
answer fits it, what answers when the person does not, and the outputs an answer gives. Pure: the
planner builds questions and outputs with it, the answer transaction checks answers with it.

A question (stored as the ``body`` of its ``questions`` row) is::

    {"kind": "choose", "text": "Which one?", "candidates": [...], "minChoices": 1, "maxChoices": 1,
     "values": {...}, "fields": [...], "shown": {...}, "onTimeout": "reject", "onReject": "fail"}

An answer, as checked and stored::

    {"decision": "approve" | "reject", "chosen": [0, 2], "values": {...}, "comment": "..."}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from toolweave.inputs import MAX_LISTED_PROBLEMS, FieldProblem, InputError, prepare_inputs, storable_problems
from toolweave.model.asking import ASK_CHOICES_MAX, CANDIDATES, QUESTION, AskKind, AskSpec, OnTimeout
from toolweave.model.definitions import InputParam, OutputParam, ParamType

APPROVE = "approve"
REJECT = "reject"
ANSWER_FIELDS = ("decision", "chosen", "values", "comment")
MAX_COMMENT_CHARS = 2000
MAX_QUESTION_CHARS = 2000


class AnswerError(ValueError):
    """An answer that does not fit its question; ``problems`` names every field that is wrong."""

    def __init__(self, problems: list[FieldProblem]) -> None:
        self.problems = problems[:MAX_LISTED_PROBLEMS]
        more = f" (and {len(problems) - MAX_LISTED_PROBLEMS} more)" if len(problems) > MAX_LISTED_PROBLEMS else ""
        super().__init__("; ".join(str(p) for p in self.problems) + more)


def build_question(spec: AskSpec, inputs: Mapping[str, Any]) -> dict[str, Any] | str:
    """The question from the step's resolved inputs, or why it cannot be asked (a sentence)."""
    text = inputs.get(QUESTION, spec.question)
    if not isinstance(text, str) or not text.strip():
        return f"the question must be text, not {type(text).__name__}"
    question: dict[str, Any] = {
        "kind": spec.kind.value, "text": text[:MAX_QUESTION_CHARS],
        "onTimeout": spec.on_timeout.value, "onReject": spec.on_reject.value,
    }
    reserved = {QUESTION}
    if spec.kind is AskKind.CHOOSE:
        reserved.add(CANDIDATES)
        candidates = inputs.get(CANDIDATES)
        if candidates is None:
            return "there are no candidates to choose from (map a list into 'candidates')"
        if not isinstance(candidates, list):
            candidates = [candidates]
        candidates = [c for c in candidates if c is not None]  # a map step's failed items leave gaps
        if len(candidates) < spec.min_choices:
            return f"there are {len(candidates)} candidates; at least {spec.min_choices} are needed (minChoices)"
        if len(candidates) > ASK_CHOICES_MAX:
            return f"there are {len(candidates)} candidates; a person chooses among at most {ASK_CHOICES_MAX}"
        question.update(candidates=candidates, minChoices=spec.min_choices,
                        maxChoices=min(spec.max_choices, len(candidates)))
    if spec.kind is AskKind.EDIT:
        reserved.update(f.name for f in spec.fields)
        question["fields"] = [f.dump() for f in spec.fields]
        question["values"] = {
            f.name: inputs[f.name] if inputs.get(f.name) is not None else f.default for f in spec.fields
        }
    shown = {k: v for k, v in inputs.items() if k not in reserved}
    if shown:
        question["shown"] = shown
    return question


def shown_artifacts(question: Mapping[str, Any]) -> set[str]:
    """The hashes of the artifacts a question shows (its candidates, prefilled values and shown
    inputs, at any depth): what its approvers may read (``App.artifact``)."""
    found: set[str] = set()
    todo: list[Any] = [question.get(k) for k in ("candidates", "values", "shown")]
    while todo:
        value = todo.pop()
        if isinstance(value, Mapping):
            if value.get("kind") == "artifact" and isinstance(value.get("sha256"), str):
                found.add(value["sha256"])
            else:
                todo.extend(value.values())
        elif isinstance(value, list):
            todo.extend(value)
    return found


def _choices(spec: AskSpec, question: Mapping[str, Any], value: Any, problems: list[FieldProblem]) -> list[int]:
    count = len(question.get("candidates") or [])
    low, high = int(question.get("minChoices", spec.min_choices)), int(question.get("maxChoices", spec.max_choices))
    want = f"choose {low}" + (f" to {high}" if high > low else "") + f" of the {count} candidates by their index (0 to {count - 1})"
    if value is None:
        problems.append(FieldProblem("chosen", f"is missing: {want}"))
        return []
    items = value if isinstance(value, list) else [value]
    before = len(problems)
    chosen: list[int] = []
    for i, item in enumerate(items):
        if len(problems) - before > MAX_LISTED_PROBLEMS:
            break  # (enough to say what is wrong)
        where = f"chosen[{i}]" if isinstance(value, list) else "chosen"
        if isinstance(item, str) and item.strip().isdigit():
            item = int(item.strip())
        if isinstance(item, bool) or not isinstance(item, int):
            problems.append(FieldProblem(where, f"must be the index of a candidate (0 to {count - 1}), not {item!r}"[:200]))
        elif not 0 <= item < count:
            problems.append(FieldProblem(where, f"there is no candidate {item}; {want}"))
        elif item in chosen:
            problems.append(FieldProblem(where, f"candidate {item} is chosen twice"))
        else:
            chosen.append(item)
    if items and len(problems) == before and not low <= len(chosen) <= high:
        problems.append(FieldProblem("chosen", f"{len(chosen)} chosen: {want}"))
    elif not items:
        problems.append(FieldProblem("chosen", f"is empty: {want}"))
    return chosen


def check_answer(spec: AskSpec, question: Mapping[str, Any], body: Any) -> dict[str, Any]:
    """The answer as it is stored, or ``AnswerError`` naming every wrong field."""
    if not isinstance(body, Mapping):
        raise AnswerError([FieldProblem("answer", f"must be an object with {', '.join(ANSWER_FIELDS)}")])
    problems: list[FieldProblem] = []
    for key in body:
        if key not in ANSWER_FIELDS:
            problems.append(FieldProblem(str(key)[:100] or '""', f"is not part of an answer (expected: {', '.join(ANSWER_FIELDS)})"))
    kind = spec.kind
    decision = body.get("decision")
    if decision is None and kind is not AskKind.APPROVE and (body.get("chosen") is not None or body.get("values") is not None):
        decision = APPROVE  # choosing or editing is approving
    if decision not in (APPROVE, REJECT):
        problems.append(FieldProblem("decision", f"must be 'approve' or 'reject', not {decision!r}"[:200]))
    answer: dict[str, Any] = {"decision": decision}
    comment = body.get("comment")
    if comment is not None:
        if not isinstance(comment, str) or len(comment) > MAX_COMMENT_CHARS:
            problems.append(FieldProblem("comment", f"must be text of at most {MAX_COMMENT_CHARS} characters"))
        elif comment.strip():
            answer["comment"] = comment.strip()
    chosen, values = body.get("chosen"), body.get("values")
    if chosen is not None and (kind is not AskKind.CHOOSE or decision == REJECT):
        problems.append(FieldProblem("chosen", "only an approving answer to a choose question chooses candidates"))
    if values is not None and (kind is not AskKind.EDIT or decision == REJECT):
        problems.append(FieldProblem("values", "only an approving answer to an edit question gives values"))
    if decision == APPROVE and kind is AskKind.CHOOSE:
        answer["chosen"] = _choices(spec, question, chosen, problems)
    if decision == APPROVE and kind is AskKind.EDIT:
        answer["values"] = _values(spec, question, values, problems)
    if not problems:
        problems = storable_problems(answer)  # (text with NUL or lone surrogates, NaN: never stored)
    if problems:
        raise AnswerError(problems)
    return answer


def _values(spec: AskSpec, question: Mapping[str, Any], values: Any, problems: list[FieldProblem]) -> dict[str, Any]:
    if values is not None and not isinstance(values, Mapping):
        problems.append(FieldProblem("values", "must be an object of the fields to change"))
        return {}
    merged = {**(question.get("values") or {}), **(values or {})}
    try:
        return prepare_inputs(spec.fields, merged, coerce_text=True, allow_paths=False)
    except InputError as exc:
        problems.extend(FieldProblem(f"values.{p.field}", p.message.replace("input of this tool", "field of this question"))
                        for p in exc.problems)
        return {}


def default_answer(spec: AskSpec, question: Mapping[str, Any]) -> dict[str, Any]:
    """What answers when the timeout passes: ``onTimeout`` (approving takes the prefilled values
    or the first ``minChoices`` candidates; when those do not fit, it rejects)."""
    if spec.on_timeout is OnTimeout.REJECT:
        return {"decision": REJECT}
    body: dict[str, Any] = {"decision": APPROVE}
    if spec.kind is AskKind.CHOOSE:
        body["chosen"] = list(range(int(question.get("minChoices", spec.min_choices))))
    try:
        return check_answer(spec, question, body)
    except AnswerError as exc:
        return {"decision": REJECT, "comment": f"the default answer does not fit: {exc}"}


def outputs_of(spec: AskSpec, question: Mapping[str, Any], answer: Mapping[str, Any], answered_by: str | None) -> dict[str, Any]:
    """The step's outputs: ``approved``, ``answeredBy`` (null when the timeout answered),
    ``timedOut``, ``comment``; ``chosen`` and ``chosenIndexes`` (choose); ``values`` (edit)."""
    approved = answer.get("decision") == APPROVE
    outputs: dict[str, Any] = {
        "approved": approved, "answeredBy": answered_by, "timedOut": answered_by is None,
        "comment": answer.get("comment", ""),
    }
    if spec.kind is AskKind.CHOOSE:
        candidates = list(question.get("candidates") or [])
        indexes = [i for i in answer.get("chosen") or [] if isinstance(i, int) and 0 <= i < len(candidates)]
        picked = [candidates[i] for i in indexes]
        outputs["chosenIndexes"] = indexes
        outputs["chosen"] = (picked[0] if picked else None) if spec.single else picked
    if spec.kind is AskKind.EDIT:
        outputs["values"] = dict(answer.get("values") or {}) if approved else dict(question.get("values") or {})
    return outputs


def output_params(spec: AskSpec, candidate_type: ParamType | None) -> list[OutputParam]:
    """The outputs an ask step declares (for the checks of the steps that read them)."""
    params = [
        OutputParam(name="approved", type=ParamType.BOOLEAN, description="Whether the person approved."),
        OutputParam(name="answeredBy", type=ParamType.STRING, description="The account that answered (null: the timeout)."),
        OutputParam(name="timedOut", type=ParamType.BOOLEAN, description="Whether the timeout answered."),
        OutputParam(name="comment", type=ParamType.TEXT, description="What the person wrote with the answer."),
    ]
    if spec.kind is AskKind.CHOOSE:
        chosen_type = candidate_type if spec.single and candidate_type is not None else ParamType.JSON
        params += [
            OutputParam(name="chosen", type=chosen_type,
                        description="The chosen candidate (a list when more than one may be chosen)."),
            OutputParam(name="chosenIndexes", type=ParamType.JSON, description="The indexes of the chosen candidates."),
        ]
    if spec.kind is AskKind.EDIT:
        params.append(OutputParam(name="values", type=ParamType.JSON, description="The values, as the person left them."))
    return params


def input_params(spec: AskSpec) -> list[InputParam]:
    """The inputs an ask step takes by name (any other mapped input is shown to the person)."""
    params = [InputParam(name=QUESTION, type=ParamType.TEXT, description="Overrides the question's text.")]
    if spec.kind is AskKind.CHOOSE:
        params.append(InputParam(name=CANDIDATES, type=ParamType.JSON,
                                 description="The list to choose from."))
    params += [f.model_copy(update={"required": False}) for f in spec.fields]
    return params
