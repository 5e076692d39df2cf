"""Resolve a step's input mappings: job inputs, earlier outputs, static values and templates.

Templates are Jinja2, rendered in a ``SandboxedEnvironment`` with ``StrictUndefined``: they see
``job`` (the run's inputs) and ``steps`` (``steps.<id>.status`` and ``steps.<id>.outputs.<name>``);
an artifact renders as its ``artifact:<sha256>`` URI. Compiled templates are cached.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, nodes
from jinja2.exceptions import SecurityError, TemplateError, UndefinedError

from toolweave.model import paths
from toolweave.model.definitions import Step, ValueSource
from toolweave.model.paths import PathError
from toolweave.model.records import ArtifactRef
from toolweave.sandbox import (
    BoundedEnvironment,
    BudgetExceeded,
    bounded_growth,
    piece_budget,
    straight_line,
    undeclared_variables,
)

SUCCEEDED = "succeeded"
UNAVAILABLE = frozenset({"skipped", "failed", "cancelled"})
TEMPLATE_VARIABLES = frozenset({"job", "steps"})
MAP_TEMPLATE_VARIABLES = frozenset({"item", "index"})
"""What a map step's templates see besides ``job`` and ``steps``."""
MAX_RENDERED_CHARS = 1_000_000
"""The longest text one template may render."""
MAX_TEMPLATE_CHARS = 20_000
"""The longest template a definition may hold."""
PARSE_BUDGET_SECONDS = 1.0
"""CPU time compiling one template may take (it is compiled once per process, then cached)."""


class MappingError(ValueError):
    """A mapping that cannot be resolved: a bad template or path, a missing output."""


class SourceUnavailable(MappingError):
    """The step a mapping reads from did not succeed, and the mapping has no ``default``."""


def _finalize(value: Any) -> Any:
    if ArtifactRef.is_ref(value):
        return value.get("uri") or f"artifact:{value['sha256']}"
    return value


@functools.lru_cache(maxsize=1)
def _environment() -> BoundedEnvironment:
    return BoundedEnvironment(undefined=StrictUndefined, autoescape=False, finalize=_finalize)


@functools.lru_cache(maxsize=2048)
def compile_template(src: str) -> Any:
    """Parse a template once; raise ``MappingError`` with a plain sentence on syntax errors."""
    if not isinstance(src, str):
        raise MappingError("a template must be text")
    if len(src) > MAX_TEMPLATE_CHARS:
        raise MappingError(f"a template may be at most {MAX_TEMPLATE_CHARS:,} characters long (this one has {len(src):,})")
    env = _environment()
    try:
        with piece_budget(PARSE_BUDGET_SECONDS):
            return env.from_string(src)
    except TemplateSyntaxError as exc:
        raise MappingError(f"template {src!r} does not parse: {exc.message} (line {exc.lineno})") from None
    except (SyntaxError, RecursionError, MemoryError):  # what Python refuses in the compiled template
        raise MappingError(f"template {src[:60]!r}... nests its blocks too deeply") from None
    except BudgetExceeded as exc:
        raise MappingError(f"template {src[:60]!r}... is too complex: compiling it {exc}") from None


@functools.lru_cache(maxsize=2048)
def template_references(src: str) -> tuple[frozenset[str], frozenset[str], bool]:
    """Parse ``src`` and return ``(free variables, step ids read, reads steps dynamically)``.

    Raises ``MappingError`` when it does not parse.
    """
    compile_template(src)
    try:
        ast = _environment().parse(src)
    except TemplateSyntaxError as exc:  # pragma: no cover - compile_template raised already
        raise MappingError(f"template {src!r} does not parse: {exc.message}") from None
    free = frozenset(undeclared_variables(ast, _environment()))
    refs: set[str] = set()
    steps_uses = sum(1 for n in ast.find_all(nodes.Name) if n.name == "steps" and n.ctx == "load")
    fixed = 0
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        if isinstance(node, nodes.Getattr):
            if isinstance(node.node, nodes.Name) and node.node.name == "steps":
                refs.add(node.attr)
                fixed += 1
        elif isinstance(node, nodes.Getitem):
            if isinstance(node.node, nodes.Name) and node.node.name == "steps":
                if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                    refs.add(node.arg.value)
                    fixed += 1
    return free, frozenset(refs), steps_uses != fixed


@functools.lru_cache(maxsize=2048)
def template_loops(src: str) -> bool:
    """Whether a template may do work that grows beyond the size of what it reads: a loop, a call,
    ``*``, ``**`` or ``%``, a macro, a filter outside a short list of linear ones — or a straight-line
    one whose work a user's values can make grow beyond a fixed multiple of their size
    (``sandbox.bounded_growth``: a filter given a width, precision or separator from a value, a chain
    of filters each of which may multiply its input). Such a template is rendered in an evaluator
    process, under a budget (``engine.evaluate``); a bounded straight-line one (attribute access,
    comparisons, ``~`` and simple filters) costs about what reading its values costs, and the planner
    renders it directly, inside its transaction."""
    compile_template(src)
    ast = _environment().parse(src)
    return not (straight_line(ast) and bounded_growth(ast))


def forget_compiled() -> None:
    """Drop every compiled template of this process."""
    compile_template.cache_clear()


def render_template(
    src: str, *, job: Mapping[str, Any], steps: Mapping[str, Mapping[str, Any]],
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Render a template against the run's inputs and the steps' statuses and outputs (and, in a map
    step, ``extra``: the ``item`` and its ``index``)."""
    template = compile_template(src)
    try:
        parts: list[str] = []
        size = 0
        for chunk in template.generate(job=job, steps=steps, **(extra or {})):
            size += len(chunk)
            if size > MAX_RENDERED_CHARS:
                raise MappingError(f"template {src!r} renders more than {MAX_RENDERED_CHARS:,} characters")
            parts.append(chunk)
        return "".join(parts)
    except MappingError:
        raise
    except UndefinedError as exc:
        raise MappingError(f"template {src!r} could not be rendered: {exc.message}") from None
    except SecurityError as exc:
        raise MappingError(f"template {src!r} tried something the sandbox forbids: {exc}") from None
    except TemplateError as exc:
        raise MappingError(f"template {src!r} could not be rendered: {exc}") from None
    except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
        raise MappingError(f"template {src!r} could not be rendered: {exc}") from None


def template_job_references(src: str) -> frozenset[str]:
    """The job inputs a template reads as ``job.<name>`` or ``job["<name>"]``."""
    return template_job_access(src)[0]


@functools.lru_cache(maxsize=2048)
def template_job_access(src: str) -> tuple[frozenset[str], bool]:
    """``(the job inputs a template reads by a fixed name, whether it reads job otherwise too)``."""
    compile_template(src)
    ast = _environment().parse(src)
    names: set[str] = set()
    fixed = 0
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        if isinstance(node, nodes.Getattr):
            if isinstance(node.node, nodes.Name) and node.node.name == "job":
                names.add(node.attr)
                fixed += 1
        elif isinstance(node, nodes.Getitem):
            if isinstance(node.node, nodes.Name) and node.node.name == "job":
                if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                    names.add(node.arg.value)
                    fixed += 1
    uses = sum(1 for n in ast.find_all(nodes.Name) if n.name == "job" and n.ctx == "load")
    return frozenset(names), uses != fixed


def parse_path(path: str) -> tuple[str | int, ...]:
    """``a.b[0]["c d"]`` → ``("a", "b", 0, "c d")``; raise ``MappingError`` on a malformed path."""
    try:
        return paths.parse_path(path)
    except PathError as exc:
        raise MappingError(str(exc)) from None


def follow_path(value: Any, path: str) -> Any:
    """The part of ``value`` at ``path``; raise ``MappingError`` naming the first missing part."""
    try:
        return paths.follow_path(value, path)
    except PathError as exc:
        raise MappingError(str(exc)) from None


def _status(steps: Mapping[str, Mapping[str, Any]], step_id: str) -> str:
    state = steps.get(step_id)
    if state is None:
        return "pending"
    return str(state.get("status", "pending"))


def _step_source(source: ValueSource, steps: Mapping[str, Mapping[str, Any]], what: str) -> Any:
    step_id = source.source_step_id or ""
    output = source.source_output_name or ""
    status = _status(steps, step_id)
    if status != SUCCEEDED:
        if source.has_default:
            return copy.deepcopy(source.default)
        raise SourceUnavailable(f"{what} needs output {output!r} of step {step_id!r}, which {_was(status)}")
    outputs = steps[step_id].get("outputs") or {}
    if output not in outputs:
        if source.has_default:
            return copy.deepcopy(source.default)
        raise MappingError(f"{what} needs output {output!r} of step {step_id!r}, which did not produce it")
    value = outputs[output]
    if source.path:
        try:
            value = follow_path(value, source.path)
        except MappingError as exc:
            if source.has_default:
                return copy.deepcopy(source.default)
            raise MappingError(f"{what}: output {output!r} of step {step_id!r}: {exc}") from None
    return value


def _was(status: str) -> str:
    if status in ("pending", "ready", "running", "waiting_retry", "waiting_input"):
        return "has not finished"
    return "failed" if status == "failed" else f"was {status}"


ABSENT: Any = object()
"""What ``resolve_source`` gives for a job input the run did not give (and no default): the input is
left out, so the tool's own default applies."""
NO_ITEM: Any = object()


def resolve_source(
    source: ValueSource, *, job: Mapping[str, Any], steps: Mapping[str, Mapping[str, Any]], what: str
) -> Any:
    """The value one source names (``ABSENT`` for a job input that was not given); ``what`` names
    the receiving end in errors."""
    if source.source_job_input is not None:
        value = job.get(source.source_job_input)
        if value is None:
            return copy.deepcopy(source.default) if source.has_default else ABSENT
        return value
    if source.source_step_id is not None:
        return _step_source(source, steps, what)
    if source.has_value:
        return copy.deepcopy(source.value)
    raise MappingError(f"{what} has no source")


def describe_source(source: ValueSource) -> str:
    """``job input 'x'``, ``output 'y' of step 'z'`` or ``a static value``, for messages."""
    if source.source_job_input is not None:
        return f"job input {source.source_job_input!r}"
    if source.source_step_id is not None:
        path = f" at {source.path}" if source.path else ""
        return f"output {source.source_output_name!r} of step {source.source_step_id!r}{path}"
    return "a static value"


def resolve_map_items(step: Step, *, job: Mapping[str, Any], steps: Mapping[str, Mapping[str, Any]]) -> list[Any]:
    """The list a map step runs over; ``MappingError`` naming the source when it is not a list."""
    assert step.map is not None
    source = step.map.over
    what = f"the list step {step.step_id!r} maps over"
    value = resolve_source(source, job=job, steps=steps, what=what)
    if value is ABSENT:
        raise MappingError(f"step {step.step_id!r} maps over {describe_source(source)}, which the run did not give")
    if not isinstance(value, list):
        raise MappingError(
            f"step {step.step_id!r} maps over {describe_source(source)}, which is {_kind(value)}, not a list"
        )
    return value


def _kind(value: Any) -> str:
    if ArtifactRef.is_ref(value):
        return "a file"
    if isinstance(value, str):
        return f"text ({value[:40]!r}{'…' if len(value) > 40 else ''})"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, dict):
        return "an object"
    return "null" if value is None else type(value).__name__


def resolve_step_inputs(
    step: Step, *, job: Mapping[str, Any], steps: Mapping[str, Mapping[str, Any]], item: Any = NO_ITEM,
    index: int | None = None,
) -> dict[str, Any]:
    """The inputs of ``step`` from its mappings (before ``prepare_inputs`` checks them against the tool).

    - ``sourceJobInput``: the job's value; an absent (or null) value leaves the input out, so the
      tool's default applies;
    - ``sourceStepId`` + ``sourceOutputName`` (+ ``path``): the output, or ``default`` when the source
      step did not succeed (``SourceUnavailable`` when there is no default);
    - ``value``: a copy of the value; ``template``: the rendered text (a map step's templates also
      see ``item`` and ``index``);
    - ``sourceItem`` (+ ``path``): the map step's ``item``;
    - ``collect``: a list of its sources' values, in order (a job input not given is null).

    Artifact dicts pass through unchanged.
    """
    resolved: dict[str, Any] = {}
    for mapping in step.input_mappings:
        target = mapping.target_input_name
        what = f"input {target!r} of step {step.step_id!r}"
        if mapping.source_item:
            if item is NO_ITEM:
                raise MappingError(f"{what} reads the map item, but the step is not a map step")
            value = item
            if mapping.path:
                try:
                    value = follow_path(item, mapping.path)
                except MappingError as exc:
                    if not mapping.has_default:
                        raise MappingError(f"{what}: item {index}: {exc}") from None
                    value = copy.deepcopy(mapping.default)
            resolved[target] = value
        elif mapping.collect is not None:
            parts = [
                resolve_source(part, job=job, steps=steps, what=f"{what} (collect[{k}])")
                for k, part in enumerate(mapping.collect)
            ]
            resolved[target] = [None if part is ABSENT else part for part in parts]
        elif mapping.template is not None:
            extra = {"item": item, "index": index} if item is not NO_ITEM else None
            try:
                resolved[target] = render_template(mapping.template, job=job, steps=steps, extra=extra)
            except SourceUnavailable:
                raise
            except MappingError as exc:
                raise MappingError(f"{what}: {exc}") from None
        else:
            value = resolve_source(mapping, job=job, steps=steps, what=what)
            if value is not ABSENT:
                resolved[target] = value
    return resolved


def mapping_unavailable(step: Step, steps: Mapping[str, Mapping[str, Any]]) -> str | None:
    """Why ``step`` cannot run because a source step was skipped, failed or cancelled, or None.

    Mappings with a ``default`` never make a step unavailable. Templates that read a step that
    did not succeed count too.
    """
    if step.map is not None:
        over = step.map.over
        if over.source_step_id is not None and not over.has_default:
            status = _status(steps, over.source_step_id)
            if status in UNAVAILABLE:
                return f"it maps over {describe_source(over)}, and step {over.source_step_id!r} {_was(status)}"
    for mapping in step.input_mappings:
        for source in (mapping, *(mapping.collect or [])):
            if source.source_step_id is not None and not source.has_default:
                status = _status(steps, source.source_step_id)
                if status in UNAVAILABLE:
                    return (
                        f"input {mapping.target_input_name!r} needs output {source.source_output_name!r} "
                        f"of step {source.source_step_id!r}, which {_was(status)}"
                    )
        if mapping.template is not None:
            try:
                _, refs, _ = template_references(mapping.template)
            except MappingError:
                continue
            for ref in sorted(refs):
                status = _status(steps, ref)
                if status in UNAVAILABLE:
                    return (
                        f"input {mapping.target_input_name!r} is a template that reads step {ref!r}, "
                        f"which {_was(status)}"
                    )
    return None


__all__ = [
    "ABSENT",
    "NO_ITEM",
    "MappingError",
    "SourceUnavailable",
    "compile_template",
    "describe_source",
    "follow_path",
    "mapping_unavailable",
    "parse_path",
    "render_template",
    "resolve_map_items",
    "resolve_source",
    "resolve_step_inputs",
    "template_job_access",
    "template_job_references",
    "template_references",
]
