"""A run's status message: its text (pure) and the tracker that keeps it up to date.

The tracker keeps nothing that matters in memory: every status message it follows is a row of
``kv("telegram.status", run_id)`` (chat, message, account, last text, last edit time), written
when the run is submitted. Each pass reads those rows, loads each unfinished run through the
facade, and edits the message when its text changed — at most once per
``settings.telegram_edit_interval_seconds`` per message and never before a ``retry_after`` that
Telegram asked for. A restarted bot picks up where the last one stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from telegram import InlineKeyboardButton, InlineKeyboardMarkup
from telegram.error import BadRequest, ChatMigrated, Forbidden, NetworkError, RetryAfter

from toolweave.model.status import RunStatus

if TYPE_CHECKING:
    from telegram import Bot

    from toolweave.app import App

log = logging.getLogger("toolweave.telegram")

STATUS_NAMESPACE = "telegram.status"
FINAL_TTL = 86400.0
FAILED_PAUSE = 30.0
"""How long a status message whose update failed unexpectedly is left alone."""

_STEP_ICONS = {
    "pending": ("⏳", "waiting"),
    "ready": ("⏳", "starting"),
    "running": ("🔄", "running"),
    "waiting_retry": ("🔁", "will retry"),
    "waiting_input": ("🙋", "waiting for your answer"),
    "succeeded": ("✅", "done"),
    "failed": ("❌", "failed"),
    "skipped": ("⏭", "skipped"),
    "cancelled": ("🚫", "cancelled"),
}


def _seconds(ms: Any) -> str:
    try:
        value = float(ms) / 1000.0
    except (TypeError, ValueError):
        return ""
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


def _progress(value: Any) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return ""
    if number <= 1.0:
        number *= 100
    return f" {max(0, min(100, round(number)))}%"


def render_status(run: Mapping[str, Any], name: str) -> str:
    """The status message of a run: a headline, then one line per step (when there are several)."""
    status = str(run.get("status"))
    steps = list(run.get("stepStatuses") or [])
    failed = next((s for s in steps if s.get("status") == "failed"), None)
    if status == RunStatus.QUEUED.value:
        head = f"⏳ {name} — queued" + (f" ({run['statusDetail']})" if run.get("statusDetail") else "")
    elif status == RunStatus.RUNNING.value:
        head = f"🔄 {name} — cancelling…" if run.get("cancelRequested") else f"🔄 {name} — running" + (
            f" ({run['statusDetail']})" if run.get("statusDetail") else "")
    elif status == RunStatus.COMPLETED.value:
        took = _seconds(run.get("durationMs"))
        head = f"✅ {name} — done" + (f" in {took}" if took else "")
    elif status == RunStatus.PARTIALLY_COMPLETED.value:
        head = f"⚠️ {name} — finished; some steps failed and were skipped"
    elif status == RunStatus.FAILED.value:
        error = run.get("error") or {}
        step = error.get("step_id") if isinstance(error, Mapping) else None
        head = f"❌ {name} — failed" + (f" at the step “{step}”" if step and len(steps) > 1 else "")
    elif status == RunStatus.CANCELLED.value:
        head = f"🚫 {name} — cancelled"
    else:
        head = f"{name} — {status}"
    lines = [head]
    if len(steps) > 1:
        for step in steps:
            icon, word = _STEP_ICONS.get(str(step.get("status")), ("•", str(step.get("status"))))
            extra = ""
            if step.get("status") == "running":
                extra = _progress(step.get("progress"))
            elif step.get("status") == "succeeded" and step.get("durationMs") is not None:
                extra = f" in {_seconds(step.get('durationMs'))}"
            elif step.get("status") == "waiting_retry":
                extra = f" (attempt {int(step.get('attempt') or 1) + 1})"
            lines.append(f"{icon} {step.get('stepId')} — {word}{extra}")
    elif steps and status == RunStatus.RUNNING.value:
        lines[0] += _progress(steps[0].get("progress"))
    if failed is not None and status == RunStatus.FAILED.value and failed.get("error"):
        error = failed["error"]
        message = error.get("message") if isinstance(error, Mapping) else str(error)
        if message:
            lines.append(f"Reason: {str(message)[:300]}")
    lines.append(f"Run {run.get('jobRunId')}")
    return "\n".join(lines)


def cancel_keyboard(run_id: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[InlineKeyboardButton("✖ Cancel", callback_data=f"c:{run_id}")]])


def cancel_markup(run_id: str) -> dict[str, Any]:
    """``cancel_keyboard`` as the Bot API's JSON (for the outbox channel)."""
    return {"inline_keyboard": [[{"text": "✖ Cancel", "callback_data": f"c:{run_id}"}]]}


def retry_after_seconds(exc: RetryAfter) -> float:
    value: Any = exc.retry_after
    if isinstance(value, timedelta):
        return value.total_seconds()
    try:
        return float(value)
    except (TypeError, ValueError):
        return 5.0


class StatusTracker:
    """Follows the runs the bot started and edits their status messages."""

    def __init__(self, app: App, bot: Bot, *, interval: float = 0.5) -> None:
        self.app = app
        self.bot = bot
        self.interval = interval
        self.edit_interval = max(0.0, app.settings.telegram_edit_interval_seconds)
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def adopt(self, run_id: str, chat_id: int, message_id: int) -> None:
        """A status message of ``run_id`` the bot had lost track of (a crash between Telegram
        accepting it and its id being recorded) turned up — its Cancel button was pressed: it is
        followed from now on like the run's own status message, and edited to the run's state."""
        state = await self.app.kv_get(STATUS_NAMESPACE, run_id)
        if not isinstance(state, dict) or state.get("chatId") != chat_id or state.get("messageId") == message_id:
            return
        extra = [int(i) for i in state.get("extraIds", [])]
        if message_id in extra:
            return
        state["extraIds"] = [*extra, message_id]
        state["text"] = None  # edit every message at the next pass, even a finished run's
        state["final"] = False
        await self.app.kv_set(STATUS_NAMESPACE, run_id, state)
        self._wake.set()

    def wake(self) -> None:
        """Look at the followed runs now rather than at the next interval."""
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._stop.clear()
            self._task = asyncio.create_task(self._loop(), name="toolweave-telegram-status")

    async def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._task is not None:
            task, self._task = self._task, None
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                await self.pass_once()
            except Exception:
                log.exception("updating status messages failed; trying again")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)

    async def pass_once(self, *, force: bool = False) -> int:
        """Look at every followed run once; returns how many are still unfinished."""
        open_count = 0
        for run_id, state in await self.app.kv_items(STATUS_NAMESPACE):
            if not isinstance(state, dict) or state.get("final") or not state.get("messageId"):
                continue  # finished, or not sent yet (the outbox sends it)
            open_count += 1
            try:
                await self._update(run_id, state, force=force)
            except Exception as exc:
                # one message that cannot be brought up to date holds up no other one
                log.warning("updating the status message of %s failed (%s: %s); trying again in %.0f s",
                            run_id, type(exc).__name__, exc, FAILED_PAUSE)
                state["notBefore"] = time.time() + FAILED_PAUSE
                with contextlib.suppress(Exception):
                    await self.app.kv_set(STATUS_NAMESPACE, run_id, state)
        return open_count

    async def _update(self, run_id: str, state: dict[str, Any], *, force: bool) -> None:
        from toolweave.app import NotFound

        now = time.time()
        if now < float(state.get("notBefore") or 0):
            return
        try:
            run = await self.app.get_run(run_id, state.get("accountId"))
        except NotFound:
            await self.app.kv_set(STATUS_NAMESPACE, run_id, None)
            return
        terminal = RunStatus(run["status"]).terminal
        text = render_status(run, str(state.get("name") or run.get("jobDefinitionId")))
        if text == state.get("text") and not terminal:
            return
        if not force and now - float(state.get("editedAt") or 0) < self.edit_interval:
            return
        markup = None if terminal else cancel_keyboard(run_id)
        try:
            for message_id in [state["messageId"], *state.get("extraIds", [])]:
                try:
                    await self.bot.edit_message_text(text, chat_id=state["chatId"], message_id=message_id,
                                                     reply_markup=markup)
                except BadRequest as exc:
                    # "not modified": it says this already; an adopted message that cannot be
                    # edited any more is let go; the run's own message is handled below
                    if "not modified" in str(exc).lower() or message_id != state["messageId"]:
                        continue
                    raise
        except RetryAfter as exc:
            state["notBefore"] = now + retry_after_seconds(exc)
            await self.app.kv_set(STATUS_NAMESPACE, run_id, state)
            return
        except BadRequest as exc:
            if "not modified" not in str(exc).lower():
                log.warning("status message of %s cannot be edited (%s); no longer following it", run_id, exc)
                terminal = True
        except (Forbidden, ChatMigrated) as exc:
            # the bot may not write there, or the group became a supergroup (its messages have
            # other ids there): the message is let go; the run's result goes to the chat anyway
            log.warning("status message of %s: the bot may not write to the chat (%s)", run_id, exc)
            terminal = True
        except NetworkError as exc:
            log.info("editing the status of %s failed for now: %s", run_id, exc)
            state["notBefore"] = now + max(self.edit_interval, 1.0)
            await self.app.kv_set(STATUS_NAMESPACE, run_id, state)
            return
        state.update(text=text, editedAt=now, final=terminal)
        state.pop("notBefore", None)
        await self.app.kv_set(STATUS_NAMESPACE, run_id, state, ttl=FINAL_TTL if terminal else None)
