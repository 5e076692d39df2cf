"""Text tools: ``text.template`` (a Jinja template rendered in a sandbox), ``text.concat`` and
``text.replace`` (the predecessor's string operations).

The template runs in the bounded Jinja sandbox (``sandbox.BoundedEnvironment``: no attribute
access to internals, no unsafe calls, ``range``, ``*`` and ``**`` capped) with ``StrictUndefined``
(a missing variable is an error, not an empty string). Its output is capped at ``MAX_OUTPUT_CHARS``
while it is generated, and rendering stops after ``template_budget_ms`` of CPU time (a setting,
100 ms by default) with the error code ``evaluation_budget``.

Where it renders follows the planner's policy for a step's templates (``engine.evaluate``): a
template that may loop (``sandbox.straight_line`` says no: a ``for``, a call, ``*``, ``**``,
``%``…) renders in one of the evaluator processes (``ServiceHost.evaluator``), never on the
worker's event loop. A short straight-line one (at most ``HERE_MAX_TEMPLATE_CHARS``) whose work is
bounded by what it reads (``sandbox.work_bound`` at most ``HERE_MAX_WORK_CHARS`` characters for
these variables) renders where it stands, under the same budget and cap: it costs what reading its
values costs — without an evaluator process to start (a fresh interpreter: most of a CLI run's
second) or a round trip.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError, TemplateSyntaxError, UndefinedError, nodes
from jinja2.exceptions import SecurityError

from toolweave.model.definitions import InputParam, OutputParam, ParamType, PlatformHints, ToolDefinition
from toolweave.sandbox import (
    BoundedEnvironment,
    BudgetExceeded,
    EvaluationError,
    cpu_budget,
    straight_line,
    work_bound,
)
from toolweave.services.builtin._common import SERVICE_NAME, BuiltinTool, ToolContext, bad_input, free

MAX_TEMPLATE_CHARS = 100_000
MAX_OUTPUT_CHARS = 1_000_000
RENDER = "toolweave.services.builtin.text:render"
HERE_MAX_TEMPLATE_CHARS = 2_000
"""The longest template that may render in the worker (parsing and compiling it takes a few ms)."""
HERE_MAX_WORK_CHARS = 1_000_000
"""The most a template rendered in the worker may build (``sandbox.work_bound``)."""

TEMPLATE = ToolDefinition(
    tool_id="text.template",
    service=SERVICE_NAME,
    display_name="Text template",
    description="Render a Jinja template with variables, in a sandbox. Missing variables are errors; "
    f"output is limited to {MAX_OUTPUT_CHARS} characters and rendering to the server's template budget "
    "(100 ms of CPU time unless configured otherwise).",
    input_schema=[
        InputParam(name="template", type=ParamType.TEXT, required=True, order=0,
                   description=f"The Jinja template (at most {MAX_TEMPLATE_CHARS} characters), "
                   "e.g. `A photo of {{ subject }}, {{ style | default('film') }}`."),
        InputParam(name="variables", type=ParamType.JSON, default={}, order=1,
                   description="A JSON object of the variables the template uses."),
        InputParam(name="strip", type=ParamType.BOOLEAN, default=True, order=2, advanced=True,
                   description="Strip leading and trailing whitespace from the result."),
    ],
    output_schema=[OutputParam(name="text", type=ParamType.TEXT, description="The rendered text.")],
    costing_model=free(),
    platform_hints=PlatformHints(primary_input="template", category="text-to-text"),
    metadata={"provider": "builtin"},
)


CONCAT = ToolDefinition(
    tool_id="text.concat",
    service=SERVICE_NAME,
    display_name="Join text",
    description="Join two texts, with an optional separator between them (empty parts add nothing "
    "but the separator is kept only between two non-empty parts).",
    input_schema=[
        InputParam(name="text", type=ParamType.TEXT, required=True, order=0, description="The first text."),
        InputParam(name="append", type=ParamType.TEXT, required=True, order=1, description="The text added after it."),
        InputParam(name="separator", type=ParamType.STRING, default="", order=2, advanced=True,
                   description="Put between the two when both are non-empty (e.g. `, ` or a newline)."),
    ],
    output_schema=[OutputParam(name="text", type=ParamType.TEXT, description="The joined text.")],
    costing_model=free(),
    platform_hints=PlatformHints(primary_input="text", category="text-to-text"),
    metadata={"provider": "builtin"},
)

REPLACE = ToolDefinition(
    tool_id="text.replace",
    service=SERVICE_NAME,
    display_name="Replace text",
    description="Replace every occurrence of a text (or the first `count`) with another; literal, "
    "case-sensitive. An empty replacement deletes.",
    input_schema=[
        InputParam(name="text", type=ParamType.TEXT, required=True, order=0, description="The text to change."),
        InputParam(name="search", type=ParamType.STRING, required=True, order=1, description="What to look for."),
        InputParam(name="replacement", type=ParamType.STRING, default="", order=2,
                   description="What to put instead (empty: delete)."),
        InputParam(name="count", type=ParamType.INTEGER, default=0, minimum=0, order=3, advanced=True,
                   description="Replace only this many, from the start (0: all)."),
    ],
    output_schema=[OutputParam(name="text", type=ParamType.TEXT, description="The text with the replacements.")],
    costing_model=free(),
    platform_hints=PlatformHints(primary_input="text", category="text-to-text"),
    metadata={"provider": "builtin"},
)


async def run_concat(ctx: ToolContext) -> dict[str, Any]:
    first, second, separator = ctx.inputs["text"], ctx.inputs["append"], ctx.inputs["separator"] or ""
    joined = f"{first}{separator}{second}" if first and second else f"{first}{second}"
    if len(joined) > MAX_OUTPUT_CHARS:
        raise bad_input(f"the joined text would be longer than {MAX_OUTPUT_CHARS} characters", code="too_long")
    return {"text": joined}


async def run_replace(ctx: ToolContext) -> dict[str, Any]:
    text, search = ctx.inputs["text"], ctx.inputs["search"]
    replacement, count = ctx.inputs["replacement"] or "", int(ctx.inputs["count"] or 0)
    if not search:
        raise bad_input("input 'search' must not be empty (it would match between every character)")
    found = text.count(search)
    made = min(found, count) if count else found
    if len(text) + made * (len(replacement) - len(search)) > MAX_OUTPUT_CHARS:
        raise bad_input(f"the result would be longer than {MAX_OUTPUT_CHARS} characters", code="too_long")
    return {"text": text.replace(search, replacement, count or -1)}


@functools.lru_cache(maxsize=1)
def _environment() -> BoundedEnvironment:
    return BoundedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


def render(request: dict[str, Any]) -> dict[str, Any]:
    """Render ``request["source"]`` with ``request["variables"]`` (in an evaluator process):
    ``{"text"}``, or ``{"error", "code"}`` naming the problem."""
    try:
        ast = _environment().parse(request["source"])
    except TemplateSyntaxError as exc:
        return _syntax_error(exc)
    except (SyntaxError, RecursionError):
        return _too_deep()
    return _render(ast, request["variables"], float(request["seconds"]), int(request.get("max_chars", MAX_OUTPUT_CHARS)))


def render_here(source: str, variables: dict[str, Any], seconds: float) -> dict[str, Any] | None:
    """``render`` in this process when the template is short and straight-line and what it may
    build within ``HERE_MAX_WORK_CHARS`` for these variables; ``None``: it goes to an evaluator."""
    if len(source) > HERE_MAX_TEMPLATE_CHARS:
        return None
    try:
        ast = _environment().parse(source)
    except TemplateSyntaxError as exc:
        return _syntax_error(exc)
    except (SyntaxError, RecursionError):
        return _too_deep()
    if not straight_line(ast):
        return None
    def value_chars(name: str) -> int:
        return len(json.dumps(variables[name], ensure_ascii=False, default=str)) if name in variables else 0

    if work_bound(ast, value_chars, HERE_MAX_WORK_CHARS) is None:
        return None
    return _render(ast, variables, seconds, MAX_OUTPUT_CHARS)


def _render(ast: nodes.Template, variables: dict[str, Any], seconds: float, max_chars: int) -> dict[str, Any]:
    try:
        template: Template = _environment().from_string(ast)
    except (SyntaxError, RecursionError):
        return _too_deep()
    except TemplateSyntaxError as exc:  # (an unknown filter or test is found when compiling)
        return _syntax_error(exc)
    parts: list[str] = []
    total = 0
    try:
        with cpu_budget(seconds):
            for chunk in template.generate(variables):
                total += len(chunk)
                if total > max_chars:
                    return _refused(f"input 'template' renders more than {max_chars} characters", "template_too_long")
                parts.append(chunk)
    except BudgetExceeded as exc:
        return _refused(f"input 'template' {exc} to render (the template budget, template_budget_ms)",
                        "evaluation_budget")
    except UndefinedError as exc:
        return _refused(f"input 'template' uses an undefined variable: {exc.message} (give it in input 'variables')",
                        "template_undefined")
    except SecurityError as exc:
        return _refused(f"input 'template' tried something the sandbox forbids: {exc}", "template_security")
    except TemplateError as exc:
        return _refused(f"input 'template' failed to render: {exc}", "template_error")
    except (TypeError, ValueError, ArithmeticError, LookupError, AttributeError) as exc:
        return _refused(f"input 'template' failed to render: {type(exc).__name__}: {exc}", "template_error")
    return {"text": "".join(parts)}


def _syntax_error(exc: TemplateSyntaxError) -> dict[str, Any]:
    return _refused(f"input 'template' has a syntax error on line {exc.lineno}: {exc.message}", "template_syntax")


def _too_deep() -> dict[str, Any]:
    return _refused("input 'template' nests its blocks too deeply", "template_syntax")


def _refused(message: str, code: str) -> dict[str, Any]:
    return {"error": message, "code": code}


async def run_template(ctx: ToolContext) -> dict[str, Any]:
    source = ctx.inputs["template"]
    variables = ctx.inputs["variables"]
    if variables is None:
        variables = {}
    if not isinstance(variables, dict):
        raise bad_input(f"input 'variables' must be a JSON object, got {type(variables).__name__}")
    if any(not isinstance(k, str) for k in variables):
        raise bad_input("input 'variables' must have text keys")
    if len(source) > MAX_TEMPLATE_CHARS:
        raise bad_input(f"input 'template' is longer than {MAX_TEMPLATE_CHARS} characters")
    seconds = ctx.settings.template_budget_ms / 1000
    answer = render_here(source, variables, seconds)
    if answer is None:  # it may loop: in an evaluator process, which a hard deadline stops too
        try:
            answer = await ctx.host.evaluator.call(
                RENDER, {"source": source, "variables": variables, "seconds": seconds}, 5.0 + 20 * seconds
            )
        except EvaluationError as exc:
            code = "evaluation_budget" if exc.code == "evaluation_timeout" else exc.code
            raise bad_input(f"input 'template' could not be rendered: {exc.message}", code=code) from None
    if "error" in answer:
        raise bad_input(answer["error"], code=answer["code"])
    text = str(answer["text"])
    return {"text": text.strip() if ctx.inputs["strip"] else text}


def text_tools() -> list[BuiltinTool]:
    return [
        BuiltinTool(TEMPLATE.model_copy(deep=True), run_template),
        BuiltinTool(CONCAT.model_copy(deep=True), run_concat),
        BuiltinTool(REPLACE.model_copy(deep=True), run_replace),
    ]
