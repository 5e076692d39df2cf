"""The ``builtin`` service: tools that run in-process (Pillow image tools, text, media fetch).

Synchronous tools finish inside ``submit`` (``Submission.update`` is the final ``RunUpdate``);
the test-only ``test.slow_async`` behaves like a remote backend instead. Test tools are registered
only with ``test_tools=True``. Every failure leaves as a ``ServiceError``: bad inputs and bad
media are not retryable, timeouts and network trouble are. See docs/builtin-tools.md.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Mapping
from pathlib import Path
from typing import TypeVar

from toolweave.model.definitions import ToolDefinition
from toolweave.model.records import RunUpdate
from toolweave.model.status import GenerationStatus
from toolweave.services.base import (
    GenerationContext,
    ServiceError,
    ServiceHost,
    Submission,
    WebhookRejected,
    WebhookUpdate,
)
from toolweave.services.builtin._common import SERVICE_NAME, BuiltinTool, ToolContext, check_inputs
from toolweave.services.builtin.images import image_tools
from toolweave.services.builtin.media import media_tools
from toolweave.services.builtin.testing import LEDGER_NAME, make_test_tools, parse_test_webhook
from toolweave.services.builtin.text import text_tools
from toolweave.settings import Settings

__all__ = [
    "LEDGER_NAME",
    "SERVICE_NAME",
    "BuiltinService",
    "BuiltinTool",
    "builtin_tool_definitions",
    "builtin_tools",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

STATE_ENV = "TOOLWEAVE_TEST_STATE"
LEDGER_ENV = "TOOLWEAVE_TEST_LEDGER"


def builtin_tools(
    test_tools: bool = False, *, state_dir: Path | None = None, ledger_dir: Path | None = None
) -> list[BuiltinTool]:
    tools = [*image_tools(), *text_tools(), *media_tools()]
    if test_tools:
        tools.extend(make_test_tools(state_dir, ledger_dir))
    return tools


def builtin_tool_definitions(test_tools: bool = False) -> list[ToolDefinition]:
    """The definitions of every builtin tool (fresh copies), test tools only when asked for."""
    return [t.definition for t in builtin_tools(test_tools)]


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else None


class BuiltinService:
    """The in-process tools behind the ``Service`` protocol."""

    name = SERVICE_NAME

    def __init__(
        self,
        host: ServiceHost,
        *,
        test_tools: bool = False,
        settings: Settings | None = None,
        state_dir: Path | None = None,
        ledger_dir: Path | None = None,
    ) -> None:
        """``state_dir`` (test tools' durable state) defaults to ``$TOOLWEAVE_TEST_STATE``, then to
        ``<settings.home>/test-state`` when settings are given, else none (memory and
        ``GenerationContext.attempt``). ``ledger_dir`` defaults to ``$TOOLWEAVE_TEST_LEDGER``."""
        self.host = host
        self.settings = settings if settings is not None else Settings()
        self.test_tools = test_tools
        if state_dir is None:
            state_dir = _env_path(STATE_ENV)
        if state_dir is None and settings is not None and test_tools:
            state_dir = settings.home / "test-state"
        self.state_dir = state_dir
        self.ledger_dir = ledger_dir if ledger_dir is not None else _env_path(LEDGER_ENV)
        self._tools = {
            t.tool_id: t
            for t in builtin_tools(test_tools, state_dir=self.state_dir, ledger_dir=self.ledger_dir)
        }

    @property
    def definitions(self) -> list[ToolDefinition]:
        """This service's tool definitions (copies: changing them changes nothing here)."""
        return [t.definition.model_copy(deep=True) for t in self._tools.values()]

    def tool(self, tool_id: str) -> BuiltinTool:
        try:
            return self._tools[tool_id]
        except KeyError:
            known = ", ".join(sorted(self._tools))
            hint = "" if self.test_tools or not tool_id.startswith("test.") else " (test tools are not enabled)"
            raise ServiceError(
                f"unknown builtin tool {tool_id!r}{hint}; builtin tools are: {known}",
                retryable=False, code="unknown_tool",
            ) from None

    def _context(self, gen: GenerationContext, tool: BuiltinTool, *, check: bool) -> ToolContext:
        raw = gen.inputs or {}
        inputs = check_inputs(tool.definition, raw) if check and not tool.raw_inputs else dict(raw)
        return ToolContext(
            host=self.host, settings=self.settings, gen=gen, inputs=inputs,
            state_dir=self.state_dir, ledger_dir=self.ledger_dir,
        )

    async def submit(self, gen: GenerationContext) -> Submission:
        tool = self.tool(gen.tool.tool_id)
        ctx = self._context(gen, tool, check=True)
        if tool.asynchronous is not None:
            return await _guard(tool.tool_id, tool.asynchronous.submit(ctx))
        assert tool.run is not None
        try:
            async with asyncio.timeout(gen.timeout_seconds):
                outputs = await _guard(tool.tool_id, tool.run(ctx))
        except TimeoutError as exc:
            raise ServiceError(
                f"{tool.tool_id} did not finish within {gen.timeout_seconds:g} seconds",
                retryable=True, code="timeout",
            ) from exc
        return Submission(update=RunUpdate(status=GenerationStatus.COMPLETED, progress=1.0, outputs=outputs))

    async def poll(self, gen: GenerationContext) -> RunUpdate:
        tool = self.tool(gen.tool.tool_id)
        if tool.asynchronous is None:
            raise ServiceError(
                f"{tool.tool_id} runs synchronously: it has no platform run to poll",
                retryable=False, code="not_pollable",
            )
        return await _guard(tool.tool_id, tool.asynchronous.poll(self._context(gen, tool, check=False)))

    async def cancel(self, gen: GenerationContext) -> None:
        tool = self.tool(gen.tool.tool_id)
        if tool.asynchronous is None:
            return  # synchronous tools finish inside submit; nothing is left to cancel
        await _guard(tool.tool_id, tool.asynchronous.cancel(self._context(gen, tool, check=False)))

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookUpdate:
        """Only ``test.slow_async``'s stand-in backend posts webhooks (with test tools on), as
        ``{"runId", "status": "processing"|"completed"|"failed", "progress", "outputs"}``: what the
        ingress benchmark and tests send. The builtin tools themselves take none."""
        if not self.test_tools:
            raise WebhookRejected("the builtin service does not take webhooks")
        return parse_test_webhook(body)

    async def close(self) -> None:
        return None


async def _guard(tool_id: str, work: Awaitable[T]) -> T:
    """Await a tool's work, converting foreign errors into ``ServiceError`` at this boundary."""
    try:
        return await work
    except (ServiceError, TimeoutError, asyncio.CancelledError):
        raise
    except OSError as exc:
        log.warning("builtin tool %s: I/O error: %s", tool_id, exc)
        raise ServiceError(f"{tool_id}: I/O error: {exc}", retryable=True, code="io_error") from exc
    except Exception as exc:
        log.exception("builtin tool %s failed unexpectedly", tool_id)
        raise ServiceError(
            f"{tool_id} failed: {type(exc).__name__}: {exc}", retryable=False, code="internal"
        ) from exc
