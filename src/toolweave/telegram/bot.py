"""The Telegram bot: every public tool and job as a command.

``TelegramBot(app)`` wraps a python-telegram-bot ``Application`` (no updater: updates come from
``poll`` — long polling with ``getUpdates`` — or from the webhook route in ``webhook.py``, both
through ``process_raw``, which parses each update on its own so that one malformed update cannot
block the others). It routes each message: the bot's own commands to ``own_commands.py``, a
tool's or job's command and the inputs it asks for to ``asking.py``, button presses to
``buttons.py``. Runs are submitted through the ``App`` facade (``submit``); the status message is
kept up to date by ``StatusTracker``.

Every message the bot sends to a chat — answers, questions, errors, status messages, results —
is queued in the notification outbox (``App.queue_notification``) and sent by the ``telegram``
channel (``channel.py``) with retries; only the short answers to button presses
(``answerCallbackQuery``) go straight to Telegram. An update counts as handled (``update_id``
recorded under ``kv("telegram.updates")``, so a webhook or poll that hands it out again changes
nothing) only once its replies are in the outbox: if they cannot be queued, the webhook answers
500 and long polling does not confirm it, so Telegram hands it out again. Replies to one update
are queued under keys made of its ``update_id``, so handling it again queues nothing twice.

Durable state (nothing that matters lives only in memory):
- ``origin`` of each run: ``{"platform": "telegram", "chatId", "userId", "messageId"}``;
- ``kv("telegram.status", run_id)``: the run's status message (see ``status.py``);
- ``kv("telegram.pending", "<chat>:<user>")``: a command waiting for a missing input (with a TTL);
- ``kv("telegram.updates", "<update_id>")``: updates handled, kept for a week;
- ``kv("telegram.rejected", "<update_id>")``: updates that could not be parsed, kept for a week;
- ``kv("telegram.confirm", "<token>")``: a run waiting for "Run it?" (its estimate is above the
  account's threshold; see ``confirm.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
from telegram import BotCommand, Message, Update, User
from telegram.ext import Application

from toolweave.accounting import Refused
from toolweave.inputs import InputError
from toolweave.telegram import confirm
from toolweave.telegram.asking import on_plain, run_command
from toolweave.telegram.botapi import BotAPI, BotAPIError, redact_token_in_logs
from toolweave.telegram.buttons import on_callback
from toolweave.telegram.channel import CHANNEL
from toolweave.telegram.commands import OWN_COMMANDS, RESERVED, CommandEntry, UserFacingError, command_table
from toolweave.telegram.confirm import refusal_text
from toolweave.telegram.own_commands import cancel_latest, help_command, status_command
from toolweave.telegram.status import StatusTracker

if TYPE_CHECKING:
    from toolweave.app import App

log = logging.getLogger("toolweave.telegram")

REJECTED_NAMESPACE = "telegram.rejected"
HANDLED_NAMESPACE = "telegram.updates"
HANDLED_TTL = 7 * 86400.0
"""Telegram keeps an unconfirmed update for 24 hours; a handled one is remembered for a week."""

_ALLOWED_UPDATES = ["message", "callback_query"]


@dataclass
class _Handling:
    """The update being handled: its replies are queued under ``tg:<update_id>:<n>``."""

    update_id: int
    replies: int = 0

    def next_key(self) -> str:
        self.replies += 1
        return f"tg:{self.update_id}:{self.replies}"


_HANDLING: ContextVar[_Handling | None] = ContextVar("toolweave_telegram_update", default=None)


def _split_command(text: str, username: str | None) -> tuple[str | None, str]:
    """``/name@bot rest`` → (``name``, ``rest``); (None, text) when the text is not a command or
    is addressed to another bot."""
    stripped = text.lstrip()
    if not stripped.startswith("/"):
        return None, text
    head, _, rest = stripped[1:].partition(" ")
    first_line, newline, after = head.partition("\n")
    if newline:
        head, rest = first_line, after + (" " + rest if rest else "")
    name, _, addressee = head.partition("@")
    if addressee and username and addressee.lower() != username.lower():
        return None, text
    if not name:
        return None, text
    return name.lower(), rest.strip()


def _user_name(user: User) -> str:
    return user.full_name or user.username or str(user.id)


class TelegramBot:
    """The bot front end. ``await start()``, feed it updates, ``await stop()``."""

    def __init__(self, app: App, *, tracker_interval: float = 0.5) -> None:
        token = app.settings.telegram_token
        if not token:
            raise ValueError("set the Telegram bot token first (TOOLWEAVE_TELEGRAM_TOKEN or telegram_token in toolweave.toml)")
        redact_token_in_logs(token)
        self.app = app
        self._token = token
        base = app.settings.telegram_api_url.rstrip("/")
        self.application: Application[Any, Any, Any, Any, Any, Any] = (
            Application.builder()
            .token(token)
            .base_url(f"{base}/bot")
            .base_file_url(f"{base}/file/bot")
            .updater(None)
            .build()
        )
        self.tracker = StatusTracker(app, self.application.bot, interval=tracker_interval)
        self._started = False
        self._lock = asyncio.Lock()

    @property
    def bot(self) -> Any:
        return self.application.bot

    # --- life cycle -------------------------------------------------------------------------------

    async def start(self, *, set_commands: bool = True) -> None:
        async with self._lock:
            if self._started:
                return
            await self.application.initialize()
            if set_commands:
                await self.set_commands()
            self.tracker.start()
            self._started = True

    async def stop(self) -> None:
        async with self._lock:
            if not self._started:
                return
            self._started = False
            await self.tracker.stop()
            await self.application.shutdown()

    def commands(self) -> dict[str, CommandEntry]:
        return command_table(self.app.list_tools(), self.app.list_jobs())

    async def set_commands(self) -> None:
        own = [BotCommand("start", "What this bot does")] + [BotCommand(n, d) for n, d in OWN_COMMANDS]
        table = self.commands()
        await self.bot.set_my_commands(own + [BotCommand(e.command, e.description) for e in table.values()])

    # --- updates in -------------------------------------------------------------------------------

    async def process_raw(self, data: Any) -> bool:
        """Parse and handle one update as received from Telegram. Never raises: an update that
        cannot be parsed is logged and kept under ``kv("telegram.rejected")``; returns whether it
        was handled."""
        if not self._started:
            await self.start()
        update_id = data.get("update_id") if isinstance(data, dict) else None
        try:
            if not isinstance(data, dict) or not isinstance(update_id, int):
                raise ValueError("not an update object with an integer update_id")
            update = Update.de_json(data, self.bot)
        except Exception as exc:
            log.warning("rejected an update that cannot be parsed (%s: %s)", type(exc).__name__, exc)
            with contextlib.suppress(Exception):
                key = str(update_id) if update_id is not None else f"t{time.time():.6f}"
                await self.app.kv_set(REJECTED_NAMESPACE, key, {"error": f"{type(exc).__name__}: {exc}"[:500],
                                                                "update": _clip(data)}, ttl=7 * 86400)
            return False
        if await self.app.kv_get(HANDLED_NAMESPACE, str(update_id)):
            log.info("update %s was handled already; ignoring it", update_id)
            return True
        handling = _Handling(int(update_id))
        token = _HANDLING.set(handling)
        try:
            try:
                await self._dispatch(update)
            except Exception as exc:
                # the user hears of it (through the outbox); if even that cannot be queued, the
                # update is not handled: the caller lets Telegram hand it out again
                log.error("handling update %s failed: %s: %s", update_id, type(exc).__name__, exc, exc_info=exc)
                await self._sorry(update)
        finally:
            _HANDLING.reset(token)
        await self.app.kv_set(HANDLED_NAMESPACE, str(update_id), {"replies": handling.replies}, ttl=HANDLED_TTL)
        return True

    async def _dispatch(self, update: Update) -> None:
        if update.callback_query is not None:
            await on_callback(self, update)
        elif update.message is not None:
            await self._on_message(update, None)

    async def poll(self, stop: asyncio.Event, *, timeout: int = 25) -> None:
        """Long polling with ``getUpdates`` until ``stop`` is set. An update is confirmed (by the
        next call's offset) only after it was handled, so a crash hands it out again; submissions
        carry an idempotency key, so a repeated command does not run twice."""
        await self.start()
        async with httpx.AsyncClient() as http:
            api = BotAPI(http, self._token, self.app.settings.telegram_api_url, timeout=timeout + 15)
            with contextlib.suppress(BotAPIError):
                await api.call("deleteWebhook", {"drop_pending_updates": False})
            offset: int | None = None
            failures = 0
            while not stop.is_set():
                call = asyncio.create_task(
                    api.call("getUpdates", {"offset": offset, "timeout": timeout, "allowed_updates": _ALLOWED_UPDATES})
                )
                stopper = asyncio.create_task(stop.wait())
                done, _ = await asyncio.wait({call, stopper}, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                if call not in done:
                    call.cancel()
                    with contextlib.suppress(BaseException):
                        await call
                    break
                try:
                    updates = call.result()
                except BotAPIError as exc:
                    failures += 1
                    delay = exc.retry_after or min(30.0, 0.5 * 2 ** min(failures, 6))
                    log.warning("getUpdates failed (%s); again in %.1f s", exc, delay)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
                    continue
                failures = 0
                for raw in updates if isinstance(updates, list) else []:
                    uid = raw.get("update_id") if isinstance(raw, dict) else None
                    try:
                        await self.process_raw(raw)
                    except Exception as exc:
                        # its replies could not be queued (the store is unreachable): not
                        # confirmed, so getUpdates hands it out again
                        failures += 1
                        delay = min(30.0, 0.5 * 2 ** min(failures, 6))
                        log.warning("update %s could not be handled (%s); again in %.1f s", uid, exc, delay)
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), delay)
                        break
                    if isinstance(uid, int):
                        offset = max(offset or 0, uid + 1)

    # --- handlers ---------------------------------------------------------------------------------

    async def _sorry(self, update: Update) -> None:
        query = update.callback_query
        if query is not None:
            with contextlib.suppress(Exception):
                await query.answer("Sorry, something went wrong on our side. Please try again.")
            return
        message = update.effective_message
        if message is not None and message.chat is not None:
            await self.reply(message, "Sorry, something went wrong on our side. Please try again.")

    async def reply(self, message: Message, text: str, *, markup: dict[str, Any] | None = None,
                     pending: str | None = None, key: str | None = None) -> str:
        """Queue a message to ``message``'s chat, replying to it; returns its outbox key. Long
        texts are split by the channel, never cut."""
        return await self.send(message.chat_id, text, reply_to=message.message_id, markup=markup, pending=pending,
                               key=key, account=f"telegram-{message.from_user.id}" if message.from_user else None)

    def next_key(self) -> str:
        """The outbox key of the next reply: within an update, made of its ``update_id``."""
        handling = _HANDLING.get()
        return handling.next_key() if handling is not None else f"tg:x{time.time_ns()}"

    async def send(self, chat_id: int, text: str, *, reply_to: int | None = None, markup: dict[str, Any] | None = None,
                   pending: str | None = None, key: str | None = None, account: str | None = None) -> str:
        """Queue a text message for a chat in the outbox (the ``telegram`` channel sends it, with
        retries); returns its key. Within an update, the key is made of its ``update_id``."""
        if key is None:
            key = self.next_key()
        payload: dict[str, Any] = {"text": text}
        if markup:
            payload["markup"] = markup
        if pending:
            payload["pending"] = pending
        await self.app.queue_notification(
            CHANNEL, {"chatId": chat_id, "replyTo": reply_to}, payload, event_type="message",
            account_id=account or f"telegram-chat-{chat_id}", dedupe_key=key,
        )
        return key

    async def _on_message(self, update: Update, context: Any) -> None:
        message = update.message
        user = update.effective_user
        if message is None or user is None or user.is_bot or message.chat is None:
            return
        text = message.text or message.caption or ""
        command, rest = _split_command(text, self.bot.username)
        private = message.chat.type == "private"
        try:
            if command is None:
                await on_plain(self, message, user, private)
            elif command in ("start", "help"):
                await help_command(self, message, rest)
            elif command == "status":
                await status_command(self, message, user)
            elif command == "cancel":
                await cancel_latest(self, message, user)
            else:
                entry = self.commands().get(command)
                if entry is None:
                    if private:
                        await self.reply(message, f"I don't know /{command}. Send /help for the list of commands.")
                    return
                await run_command(self, entry, rest, message, user)
        except UserFacingError as exc:
            await self.reply(message, str(exc))

    async def account_of(self, user: User) -> str:
        """The account of a Telegram user (made on first use)."""
        return await self.app.account_for("telegram", str(user.id), _user_name(user))

    def _name(self, target_id: str) -> str:
        try:
            return self.app.definition(target_id).display_name
        except Exception:
            return target_id

    async def submit(self, target_id: str, inputs: Mapping[str, Any], *, account: str, chat_id: int, user_id: int,
                     reply_to: int | None, idempotency_key: str, confirmed: bool = False) -> str | None:
        """Submit a run for a chat user and post its status message; returns the run id (None when
        refused, after telling the user why, or when the user is first asked to confirm its cost)."""
        from toolweave.app import MediaError, Notice, UnknownDefinition

        limit = self.app.settings.telegram_max_runs_in_flight
        running = await self.app.in_flight(account)
        if running >= limit:
            raise UserFacingError(
                f"You already have {running} run{'s' if running != 1 else ''} in progress (the limit is {limit}). "
                "Wait for one to finish, or /cancel the latest."
            )
        origin = {"platform": "telegram", "chatId": chat_id, "userId": user_id, "messageId": reply_to}
        name = self._name(target_id)

        def status_message(run_id: str) -> list[Notice]:
            # queued in the run's own transaction, before anything the run queues (its result,
            # however fast it ends), once per run (the same update again, or a second press of
            # Rerun, queues nothing): the channel renders it when it sends it
            return [Notice(CHANNEL, {"chatId": chat_id, "replyTo": reply_to}, {"runId": run_id, "name": name},
                           event_type="status", account_id=account, dedupe_key=f"tg:status:{run_id}")]

        try:
            if not confirmed and await confirm.ask_first(self, target_id, inputs, account, chat_id, reply_to,
                                                         {"userId": user_id, "idempotencyKey": idempotency_key}):
                return None
            run_id = await self.app.submit(target_id, inputs, account_id=account, origin=origin,
                                           idempotency_key=idempotency_key, coerce_text=True, allow_local_paths=False,
                                           notices=status_message)
        except InputError as exc:
            lines = [f"• {p.field} {p.message}" for p in exc.problems]
            raise UserFacingError("That did not work:\n" + "\n".join(lines)) from None
        except MediaError as exc:
            raise UserFacingError(f"A file could not be read: {exc}") from None
        except UnknownDefinition:
            raise UserFacingError("That command is no longer available.") from None
        except Refused as exc:
            raise UserFacingError(refusal_text(exc)) from None
        self.tracker.wake()
        return run_id

def _clip(data: Any, limit: int = 4000) -> Any:
    import json

    try:
        text = json.dumps(data, default=str)
    except (TypeError, ValueError):
        text = repr(data)
    return text if len(text) <= limit else text[:limit]


__all__ = ["RESERVED", "TelegramBot"]
