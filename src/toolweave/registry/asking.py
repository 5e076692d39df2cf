"""Checks of ``ask`` steps (a step that asks a person): the fields that make no sense on them, the
list a choose question needs, and what the step takes and gives for the checks of its mappings and
of the steps that read it. Pure."""

from __future__ import annotations

from collections.abc import Callable

from toolweave.engine.asking import input_params, output_params
from toolweave.model.asking import CANDIDATES, AskKind
from toolweave.model.definitions import (
    ErrorStrategy,
    InputParam,
    JobOutput,
    OutputParam,
    ParamType,
    Step,
)

OutputOf = Callable[[str, str], tuple[OutputParam | JobOutput, bool] | None]
"""``(step id, output name) → (the output, whether that step is a map step)``, when known."""


def ask_problems(step: Step) -> list[tuple[str, str]]:
    """(path inside the step, sentence) for every field that does not fit an ask step."""
    assert step.ask is not None
    problems: list[tuple[str, str]] = []
    sid = step.step_id
    for name, given in (("toolId", step.tool_id), ("jobId", step.job_id)):
        if given is not None:
            problems.append((name, f"step {sid!r} asks a person (ask); it cannot also run {name[:-2]} {given!r}"))
    if step.map is not None:
        problems.append(("map", f"step {sid!r} asks a person; an ask step cannot map over a list"))
    if step.cache is not None and step.cache.enabled:
        problems.append(("cache", f"step {sid!r} asks a person; there is nothing to cache"))
    if step.timeout_seconds is not None:
        problems.append(("timeoutSeconds", f"step {sid!r} asks a person; its time to answer is ask.timeout"))
    handling = step.error_handling
    if handling is not None and (
        handling.strategy in (ErrorStrategy.RETRY, ErrorStrategy.FALLBACK) or handling.fallback_tool_id
    ):
        problems.append(("errorHandling", f"step {sid!r} asks a person; its errorHandling strategy is halt or skip "
                                          "(what a rejection or a failed question does)"))
    mapped = {m.target_input_name for m in step.input_mappings}
    if step.ask.kind is AskKind.CHOOSE and CANDIDATES not in mapped:
        problems.append(("inputMappings", f"step {sid!r} asks to choose; map the list to choose from into "
                                          f"{CANDIDATES!r}"))
    if step.ask.kind is not AskKind.CHOOSE and CANDIDATES in mapped:
        problems.append(("inputMappings", f"step {sid!r} asks to {step.ask.kind.value}; only a choose question "
                                          f"takes {CANDIDATES!r}"))
    return problems


def candidate_type(step: Step, output_of: OutputOf) -> ParamType | None:
    """The type of one candidate of a choose step, when it can be told: a map step's output
    (a list of its items), or a ``collect`` of outputs that all have one type."""
    mapping = next((m for m in step.input_mappings if m.target_input_name == CANDIDATES), None)
    if mapping is None:
        return None
    if mapping.source_step_id and mapping.source_output_name and mapping.path is None:
        found = output_of(mapping.source_step_id, mapping.source_output_name)
        return found[0].type if found is not None and found[1] else None
    types: set[ParamType] = set()
    for part in mapping.collect or []:
        found = output_of(part.source_step_id or "", part.source_output_name or "") if part.source_step_id else None
        if found is None or found[1] or part.path is not None:
            return None
        types.add(found[0].type)
    return types.pop() if len(types) == 1 else None


def ask_contract(step: Step, output_of: OutputOf) -> tuple[list[InputParam], list[OutputParam]]:
    """(the inputs it takes by name, the outputs it gives) of an ask step."""
    assert step.ask is not None
    kind = candidate_type(step, output_of) if step.ask.kind is AskKind.CHOOSE else None
    return input_params(step.ask), output_params(step.ask, kind)


