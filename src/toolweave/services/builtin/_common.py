"""What every builtin tool shares: the tool record, input reading, error conversion.

A builtin tool is a ``ToolDefinition`` plus an async ``run(ctx) -> outputs``. Inputs are checked
again here against the definition with the engine's own preparation (a service must not trust its
caller): defaults are applied, numbers coerced, bounds and enums enforced, and every problem is
reported at once in one non-retryable ``ServiceError`` that names the inputs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from toolweave.inputs import InputError, prepare_inputs
from toolweave.model.definitions import (
    CostingModel,
    Money,
    RateSource,
    ToolDefinition,
)
from toolweave.model.records import RunUpdate
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


def check_inputs(tool: ToolDefinition, raw: Mapping[str, Any]) -> dict[str, Any]:
    """Every declared input, prepared as the engine prepares a step's (``inputs.prepare_inputs``)
    and present (None when absent); raises one ``ServiceError`` naming every problem."""
    try:
        prepared = prepare_inputs(tool.input_schema, raw, coerce_text=True, allow_paths=False)
    except InputError as exc:
        raise bad_input(f"{tool.tool_id}: {exc}", code="bad_input") from None
    return {p.name: prepared.get(p.name) for p in tool.input_schema}


# --- media -------------------------------------------------------------------------------------


async def load_media(ctx: ToolContext, name: str, value: Any | None = None) -> tuple[bytes, str]:
    """Bytes and mime type of a media input, with the host's errors converted and named."""
    import httpx  # here, not with the module: a run of a tool that reads no media need not load it

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
