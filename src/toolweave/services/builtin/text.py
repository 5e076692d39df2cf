"""``text.template``: render a Jinja template in a sandbox.

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
    return [BuiltinTool(TEMPLATE.model_copy(deep=True), run_template)]
