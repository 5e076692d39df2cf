"""The bot's buttons: Cancel under a status message, Rerun under a result, and "send again" under a
delivery whose part may not have arrived. Each acts only for the person whose run it is; its short
answer (``answerCallbackQuery``) goes straight to Telegram."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from telegram import Update
from telegram.error import TelegramError

from toolweave.model.definitions import JobDefinition, ParamType
from toolweave.model.status import RunStatus
from toolweave.telegram import confirm, questions
from toolweave.telegram.asking import unseen_choice
from toolweave.telegram.channel import CHANNEL
from toolweave.telegram.commands import UserFacingError

if TYPE_CHECKING:
    from toolweave.telegram.bot import TelegramBot

log = logging.getLogger("toolweave.telegram")


async def on_callback(bot: TelegramBot, update: Update) -> None:
    """A button press: Cancel (``c:<run>``), Rerun (``r:<run>``), send a part again (``s:<notification>:<part>``)."""
    from toolweave.app import Conflict, NotFound

    query = update.callback_query
    if query is None:
        return
    data = query.data or ""
    if data.startswith(f"{questions.PREFIX}:"):  # a step's question answered by a button
        await answer_button(bot, query, data)
        return
    action, _, run_id = data.partition(":")
    if action in (confirm.RUN_IT, confirm.DROP_IT) and run_id:  # "Run it?" (telegram/confirm.py)
        await confirm.on_answer(bot, query, action, run_id)
        return
    if action == "s" and run_id:
        await send_again(bot, query, run_id)
        return
    if action not in ("c", "r") or not run_id:
        await answer(query, "This button is no longer supported.")
        return
    account = await bot.account_of(query.from_user)
    try:
        run = await bot.app.get_run(run_id, account)
    except NotFound:
        await answer(query, "That run is not yours.", show_alert=True)
        return
    if action == "c":
        if query.message is not None and _carries(query.message, data):
            # a status message the bot lost track of (a crash before its id was recorded)
            # is followed from now on and edited to the run's state — only a message that has
            # this very button: forged data pressed on another message (another user's result)
            # must not make the bot overwrite it
            await bot.tracker.adopt(run_id, query.message.chat.id, query.message.message_id)
        if RunStatus(run["status"]).terminal:
            await answer(query, "It has already finished.")
            bot.tracker.wake()
            return
        try:
            status = await bot.app.cancel(run_id, account)
        except Conflict:
            status = "finished"
        if status == RunStatus.CANCELLED.value:
            await answer(query, "Cancelled.")
        elif status in (RunStatus.QUEUED.value, RunStatus.RUNNING.value):
            await answer(query, "Cancelling…")
        else:
            await answer(query, "It finished before it could be cancelled.")
        bot.tracker.wake()
        return
    chat = query.message.chat if query.message is not None else None
    if chat is None:
        await answer(query, "I cannot tell which chat this is.")
        return
    inputs = dict(run.get("jobInputs") or {})
    try:
        definition: JobDefinition = bot.app.job_for(run["jobDefinitionId"])
    except Exception:
        await answer(query, "That tool or job is no longer available.", show_alert=True)
        return
    for param in definition.input_schema:
        if param.type is ParamType.SEED:
            inputs.pop(param.name, None)  # a new random seed
    origin = run.get("origin") or {}
    reply_to = origin.get("messageId") if origin.get("chatId") == chat.id else None
    try:
        await bot.submit(run["jobDefinitionId"], inputs, account=account, chat_id=chat.id, user_id=query.from_user.id,
                          reply_to=reply_to, idempotency_key=f"tg-rerun:{query.id}")
    except UserFacingError as exc:
        await answer(query, str(exc)[:200], show_alert=True)
        return
    await answer(query, "Running it again.")

async def answer_button(bot: TelegramBot, query: Any, data: str) -> None:
    """A button under a step's question (``telegram/questions.py``)."""
    parsed = questions.parse_callback(data)
    if parsed is None:
        await answer(query, "This button is no longer supported.")
        return
    account = await bot.account_of(query.from_user)
    chat = query.message.chat.id if query.message is not None else None
    # a candidate's button is under its photo, so only forged data chooses one the chat was not shown
    refusal = await unseen_choice(bot, chat, parsed[0], parsed[1]) if chat is not None else None
    await answer(query, (refusal or "")[:200] or await questions.answer(bot.app, parsed[0], account, parsed[1]))


async def send_again(bot: TelegramBot, query: Any, ref: str) -> None:
    """The button under a delivery whose part may not have arrived: send that part again. Two
    presses before the resend is done queue one resend (its ``dedupe_key``, ``resending.resend_key``:
    the outbox refuses a key queued before, in whichever process the presses arrive), unless that
    resend was given up (its horizon passed on 429s or network errors, or it failed for good):
    then the press queues a new one; once it arrived the part is no longer in doubt and a press is
    refused."""
    from toolweave.telegram.resending import SENT_NAMESPACE, resend_key

    notification_id, _, part = ref.partition(":")
    account = await bot.account_of(query.from_user)
    original = await bot.app.notification(notification_id)
    if original is None or original.get("account_id") != account or not _number(part):
        await answer(query, "That is not yours to ask for.", show_alert=True)
        return
    # only a part the delivery said may be missing (forged data may name any other)
    state = await bot.app.kv_get(SENT_NAMESPACE, notification_id) or {}
    if int(part) not in (state.get("doubts") or []):
        await answer(query, "Nothing of that is missing: it was all sent.", show_alert=True)
        return
    chat = query.message.chat.id if query.message is not None else original["target"].get("chatId")
    queued = await bot.app.queue_notification(
        CHANNEL, {"chatId": chat}, {"of": notification_id, "part": int(part)}, event_type="resend",
        account_id=account, dedupe_key=resend_key(notification_id, int(part), state), again_if_given_up=True,
    )
    await answer(query, "Sending it again." if queued else "It is being sent again already.")


def _carries(message: Any, data: str) -> bool:
    """Whether ``message`` has a button with this ``callback_data`` (a bad client may send any
    data with a press on any of the bot's messages)."""
    markup = getattr(message, "reply_markup", None)
    rows = getattr(markup, "inline_keyboard", None) or ()
    return any(getattr(button, "callback_data", None) == data for row in rows for button in row)


def _number(text: str) -> bool:
    """ASCII digits only (``str.isdigit`` takes "²", which ``int`` refuses)."""
    return text.isascii() and text.isdigit() and len(text) <= 6


async def answer(query: Any, text: str, *, show_alert: bool = False) -> None:
    """The short answer to a button press (``answerCallbackQuery``): shown for a moment, worth
    nothing later, so it goes straight to Telegram and a failure is only logged (whatever the
    press did — cancel, rerun — is in the store, and the status message shows it)."""
    try:
        await query.answer(text, show_alert=show_alert)
    except TelegramError as exc:
        log.info("answering a button press failed: %s", exc)
