"""Text tools: ``text.template`` (a Jinja template rendered in a sandbox), ``text.concat`` and
``text.replace`` (the predecessor's string operations).

The template runs in jinja2's ``SandboxedEnvironment`` (no attribute access to internals, no
unsafe calls, ``range`` capped) with ``StrictUndefined`` (a missing variable is an error, not an
empty string). Two more limits keep a template from holding a worker: the output is capped at
``MAX_OUTPUT_CHARS`` while it is generated, and rendering stops after ``RENDER_SECONDS`` of work
(checked by a trace function installed only in the rendering thread).
"""

from __future__ import annotations

import asyncio
import sys
import time
from types import FrameType
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, UndefinedError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from toolweave.model.definitions import InputParam, OutputParam, ParamType, PlatformHints, ToolDefinition
from toolweave.services.builtin._common import SERVICE_NAME, BuiltinTool, ToolContext, bad_input, free

MAX_TEMPLATE_CHARS = 100_000
MAX_OUTPUT_CHARS = 1_000_000
RENDER_SECONDS = 5.0

TEMPLATE = ToolDefinition(
    tool_id="text.template",
    service=SERVICE_NAME,
    display_name="Text template",
    description="Render a Jinja template with variables, in a sandbox. Missing variables are errors; "
    f"output is limited to {MAX_OUTPUT_CHARS} characters and rendering to {RENDER_SECONDS:g} seconds.",
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


class _RenderTimeout(Exception):
    pass


class _TooLong(Exception):
    pass


def render(source: str, variables: dict[str, Any], *, seconds: float = RENDER_SECONDS,
           max_chars: int = MAX_OUTPUT_CHARS) -> str:
    """Render ``source`` in the sandbox; raises ``ServiceError`` (not retryable) naming the problem."""
    env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
    try:
        template = env.from_string(source)
    except TemplateSyntaxError as exc:
        raise bad_input(f"input 'template' has a syntax error on line {exc.lineno}: {exc.message}",
                        code="template_syntax") from exc
    deadline = time.monotonic() + seconds
    ticks = 0

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal ticks
        ticks += 1
        if ticks % 256 == 0 and time.monotonic() > deadline:
            raise _RenderTimeout
        return tracer

    parts: list[str] = []
    total = 0
    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        for chunk in template.generate(variables):
            total += len(chunk)
            if total > max_chars:
                raise _TooLong
            parts.append(chunk)
    except _RenderTimeout as exc:
        raise bad_input(f"input 'template' took longer than {seconds:g} seconds to render",
                        code="template_timeout") from exc
    except _TooLong as exc:
        raise bad_input(f"input 'template' renders more than {max_chars} characters", code="template_too_long") from exc
    except UndefinedError as exc:
        raise bad_input(f"input 'template' uses an undefined variable: {exc.message} "
                        "(give it in input 'variables')", code="template_undefined") from exc
    except SecurityError as exc:
        raise bad_input(f"input 'template' tried something the sandbox forbids: {exc}",
                        code="template_security") from exc
    except TemplateError as exc:
        raise bad_input(f"input 'template' failed to render: {exc}", code="template_error") from exc
    except (TypeError, ValueError, ArithmeticError, LookupError, AttributeError) as exc:
        raise bad_input(f"input 'template' failed to render: {type(exc).__name__}: {exc}",
                        code="template_error") from exc
    finally:
        sys.settrace(previous)
    return "".join(parts)


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
    text = await asyncio.to_thread(render, source, variables)
    return {"text": text.strip() if ctx.inputs["strip"] else text}


def text_tools() -> list[BuiltinTool]:
    return [
        BuiltinTool(TEMPLATE.model_copy(deep=True), run_template),
        BuiltinTool(CONCAT.model_copy(deep=True), run_concat),
        BuiltinTool(REPLACE.model_copy(deep=True), run_replace),
    ]
