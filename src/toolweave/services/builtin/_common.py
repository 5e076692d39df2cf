"""What every builtin tool shares: the tool record, input reading, error conversion.

A builtin tool is a ``ToolDefinition`` plus an async ``run(ctx) -> outputs``. Inputs are checked
again here against the definition (the engine validates them too, but a service must not trust
its caller): defaults are applied, numbers coerced, bounds and enums enforced, and every problem
is reported at once in one non-retryable ``ServiceError`` that names the inputs.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import httpx

from toolweave.model.definitions import (
    CostingModel,
    InputParam,
    Money,
    ParamType,
    RateSource,
    ToolDefinition,
)
from toolweave.model.records import ArtifactRef, RunUpdate
from toolweave.services.base import GenerationContext, ServiceError, ServiceHost, Submission
from toolweave.settings import Settings

SERVICE_NAME = "builtin"


def free() -> CostingModel:
    """The costing model of every builtin tool: nothing per run."""
    return CostingModel(rate_source=RateSource.STATIC, static_cost=Money(amount=Decimal(0), unit="USD"))


@dataclass
class ToolContext:
    """One call of one builtin tool."""

    host: ServiceHost
    settings: Settings
    gen: GenerationContext
    inputs: dict[str, Any]
    """The checked inputs: every declared input present, defaults applied, values coerced."""
    state_dir: Path | None = None
    """Where test tools keep durable state (None: in memory / use ``gen.attempt``)."""
    ledger_dir: Path | None = None


ToolImpl = Callable[[ToolContext], Awaitable[dict[str, Any]]]


class AsyncTool(Protocol):
    """A tool that runs like a remote backend: submit, then poll until it finishes."""

    async def submit(self, ctx: ToolContext) -> Submission: ...

    async def poll(self, ctx: ToolContext) -> RunUpdate: ...

    async def cancel(self, ctx: ToolContext) -> None: ...


@dataclass
class BuiltinTool:
    definition: ToolDefinition
    run: ToolImpl | None = None
    """A synchronous tool: inputs in, outputs out (``submit`` returns the final update)."""
    asynchronous: AsyncTool | None = None
    """An asynchronous tool (``submit`` returns a platform run id; ``poll`` finishes it)."""
    raw_inputs: bool = False
    """Skip the generic input check (the tool checks its own inputs; used by ``test.instant``)."""

    @property
    def tool_id(self) -> str:
        return self.definition.tool_id


def bad_input(message: str, *, code: str = "bad_input", **details: Any) -> ServiceError:
    return ServiceError(message, retryable=False, code=code, details=details or None)


# --- input checking ----------------------------------------------------------------------------

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _coerce(param: InputParam, value: Any) -> tuple[Any, str | None]:
    """The coerced value, or an error message (without the input's name)."""
    t = param.type
    if t in (ParamType.INTEGER, ParamType.SEED):
        if isinstance(value, bool):
            return None, f"must be an integer, got {value!r}"
        if isinstance(value, int):
            out: Any = value
        elif isinstance(value, float) and value.is_integer():
            out = int(value)
        elif isinstance(value, str):
            try:
                out = int(value.strip())
            except ValueError:
                return None, f"must be an integer, got {value!r}"
        else:
            return None, f"must be an integer, got {value!r}"
    elif t is ParamType.NUMBER:
        if isinstance(value, bool):
            return None, f"must be a number, got {value!r}"
        if isinstance(value, int | float | Decimal):
            out = float(value)
        elif isinstance(value, str):
            try:
                out = float(value.strip())
            except ValueError:
                return None, f"must be a number, got {value!r}"
        else:
            return None, f"must be a number, got {value!r}"
        if out != out or out in (float("inf"), float("-inf")):
            return None, "must be a finite number"
    elif t is ParamType.BOOLEAN:
        if isinstance(value, bool):
            out = value
        elif isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            out = value.strip().lower() in _TRUE
        elif isinstance(value, int) and value in (0, 1):
            out = bool(value)
        else:
            return None, f"must be true or false, got {value!r}"
    elif t in (ParamType.STRING, ParamType.TEXT):
        if isinstance(value, str) or (param.accepts_url and ArtifactRef.is_ref(value)):
            out = value
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out = str(value)
        else:
            return None, f"must be text, got {type(value).__name__}"
    elif t is ParamType.ENUM:
        out = value
    elif t.is_media:
        if not (ArtifactRef.is_ref(value) or isinstance(value, str)):
            return None, f"must be an artifact or a URL, got {type(value).__name__}"
        out = value
    else:  # json: text that looks like JSON is parsed (as the engine's input check does)
        out = value
        if isinstance(value, str) and value.strip()[:1] in ("{", "["):
            try:
                out = json.loads(value)
            except ValueError:
                return None, "is not valid JSON"
    if param.enum is not None and out not in param.enum:
        allowed = ", ".join(repr(v) for v in param.enum)
        return None, f"must be one of {allowed}, got {out!r}"
    if isinstance(out, int | float) and not isinstance(out, bool):
        if param.minimum is not None and out < param.minimum:
            return None, f"must be at least {_num(param.minimum)}, got {_num(out)}"
        if param.maximum is not None and out > param.maximum:
            return None, f"must be at most {_num(param.maximum)}, got {_num(out)}"
    return out, None


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def check_inputs(tool: ToolDefinition, raw: Mapping[str, Any]) -> dict[str, Any]:
    """Every declared input, defaulted and coerced; raises one ``ServiceError`` naming every problem."""
    problems: list[str] = []
    known = {p.name for p in tool.input_schema}
    for name in raw:
        if name not in known:
            problems.append(f"unknown input {name!r} (inputs of {tool.tool_id}: {', '.join(sorted(known))})")
    out: dict[str, Any] = {}
    for param in tool.input_schema:
        value = raw.get(param.name)
        if value is None or (isinstance(value, str) and value == "" and param.type not in _TEXTUAL):
            value = _copy_default(param.default)
        if value is None:
            if param.required:
                problems.append(f"input {param.name!r} is required")
            out[param.name] = None
            continue
        coerced, error = _coerce(param, value)
        if error:
            problems.append(f"input {param.name!r} {error}")
        out[param.name] = coerced
    if problems:
        raise bad_input(f"{tool.tool_id}: " + "; ".join(problems), code="bad_input")
    return out


_TEXTUAL = frozenset({ParamType.STRING, ParamType.TEXT})


def _copy_default(value: Any) -> Any:
    if isinstance(value, list):
        return list(value)
    if isinstance(value, dict):
        return dict(value)
    return value


# --- media -------------------------------------------------------------------------------------


async def load_media(ctx: ToolContext, name: str, value: Any | None = None) -> tuple[bytes, str]:
    """Bytes and mime type of a media input, with the host's errors converted and named."""
    if value is None:
        value = ctx.inputs.get(name)
    if value is None:
        raise bad_input(f"input {name!r} is required")
    try:
        return await ctx.host.load_media(value)
    except ServiceError as exc:
        raise ServiceError(
            f"input {name!r}: {exc.message}", retryable=exc.retryable, code=exc.code, details=exc.details
        ) from exc
    except httpx.TimeoutException as exc:
        raise ServiceError(f"input {name!r}: timed out fetching the media", retryable=True, code="timeout") from exc
    except httpx.HTTPStatusError as exc:
        status = exc.response.status_code
        retryable = status >= 500 or status in (408, 429)
        raise ServiceError(
            f"input {name!r}: fetching the media failed with HTTP {status}", retryable=retryable, code="http_error"
        ) from exc
    except httpx.TransportError as exc:
        raise ServiceError(f"input {name!r}: network error fetching the media: {exc}", retryable=True,
                           code="network") from exc
    except KeyError as exc:
        raise bad_input(f"input {name!r}: no such artifact ({exc.args[0] if exc.args else value!r})",
                        code="not_found") from exc
    except (ValueError, TypeError) as exc:
        raise bad_input(f"input {name!r}: {exc}") from exc


async def store(ctx: ToolContext, data: bytes, mime_type: str, filename: str | None = None) -> dict[str, Any]:
    """Store bytes as an artifact; returns the ``ArtifactRef.as_value()`` dict."""
    try:
        ref = await asyncio.to_thread(ctx.host.artifacts.put_bytes, data, mime_type, filename)
    except OSError as exc:
        raise ServiceError(f"could not store the output: {exc}", retryable=True, code="storage") from exc
    return ref.as_value()
