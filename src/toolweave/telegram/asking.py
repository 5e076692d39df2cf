"""Running a command from a chat: its arguments, the inputs it still needs (asked for one at a
time, a question the user replies to, kept under ``kv("telegram.pending", "<chat>:<user>")`` with
a TTL), the files sent for media inputs (downloaded and kept as artifacts), and replies that
answer a step's question. ``TelegramBot`` (bot.py) routes messages here."""

from __future__ import annotations

import logging
import mimetypes
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from telegram import Message, User
from telegram.error import TelegramError

from toolweave.model.definitions import ParamType
from toolweave.telegram import questions
from toolweave.telegram.commands import (
    ArgumentError,
    CommandEntry,
    CommandSpec,
    UserFacingError,
    ask_hint,
    check_answer,
    classify,
    media_kind_ok,
    missing_inputs,
    parse_arguments,
)

if TYPE_CHECKING:
    from toolweave.telegram.bot import TelegramBot

log = logging.getLogger("toolweave.telegram")

PENDING_NAMESPACE = "telegram.pending"
PROMPT_MARK = "❓"
MAX_DOWNLOAD = 20 * 1024 * 1024
"""The Bot API lets bots download files of at most 20 MB."""


@dataclass
class Media:
    """A file sent with a message (a photo, a video, an animation or a document)."""

    file_id: str
    mime_type: str
    filename: str
    size: int | None
    what: str  # "a photo", "a video", "a file"


def find_media(message: Message | None) -> Media | None:
    if message is None:
        return None
    if message.photo:
        photo = message.photo[-1]
        return Media(photo.file_id, "image/jpeg", f"photo_{photo.file_unique_id}.jpg", photo.file_size, "a photo")
    if message.video:
        v = message.video
        return Media(v.file_id, v.mime_type or "video/mp4", v.file_name or f"video_{v.file_unique_id}.mp4", v.file_size, "a video")
    if message.animation:
        a = message.animation
        return Media(a.file_id, a.mime_type or "video/mp4", a.file_name or f"animation_{a.file_unique_id}.mp4", a.file_size, "an animation")
    if message.document:
        d = message.document
        mime = d.mime_type or (mimetypes.guess_type(d.file_name or "")[0]) or "application/octet-stream"
        return Media(d.file_id, mime, d.file_name or f"file_{d.file_unique_id}", d.file_size, "a file")
    return None


async def run_command(bot: TelegramBot, entry: CommandEntry, rest: str, message: Message, user: User) -> None:
    """``/<command> args``: parse the arguments (a file sent with it, or replied to, fills its media
    input), then submit it or ask for what is missing."""
    await bot.app.kv_set(PENDING_NAMESPACE, f"{message.chat_id}:{user.id}", None)
    definition = bot.app.job_for(entry.target_id)
    spec = classify(definition)
    try:
        inputs: dict[str, Any] = dict(parse_arguments(rest, spec)[0])
    except ArgumentError as exc:
        raise UserFacingError(f"/{entry.command}: {exc}.") from None
    for name, value in inputs.items():
        param = spec.param(name)
        problem = check_answer(param, value) if param is not None else None
        if problem:
            raise UserFacingError(f"/{entry.command}: {problem}.")
    account = await bot.account_of(user)
    media = find_media(message) or find_media(message.reply_to_message)
    if media is not None and spec.media_input is not None and spec.media_input not in inputs:
        inputs[spec.media_input] = await download(bot, media, spec, account)
    await continue_command(bot, entry, spec, inputs, message, user, account, command_message_id=message.message_id)


async def continue_command(bot: TelegramBot, entry: CommandEntry, spec: CommandSpec, inputs: dict[str, Any],
                           message: Message, user: User, account: str, *, command_message_id: int) -> None:
    missing = missing_inputs(spec, inputs)
    if missing:
        await ask_for_input(bot, entry, spec, inputs, missing[0], message, user, command_message_id)
        return
    await bot.app.kv_set(PENDING_NAMESPACE, f"{message.chat_id}:{user.id}", None)
    await bot.submit(entry.target_id, inputs, account=account, chat_id=message.chat_id, user_id=user.id,
                     reply_to=command_message_id, idempotency_key=f"tg:{message.chat_id}:{message.message_id}")


async def ask_for_input(bot: TelegramBot, entry: CommandEntry, spec: CommandSpec, inputs: dict[str, Any],
                        param: Any, message: Message, user: User, command_message_id: int) -> None:
    timeout = bot.app.settings.telegram_prompt_timeout_seconds
    if param.type.is_media:
        what = {"image": "a photo (or an image file)", "video": "a video"}.get(param.type.value, "a file")
        ask = f"{PROMPT_MARK} /{entry.command} needs {param.name}: please send {what}."
    else:
        ask = f"{PROMPT_MARK} /{entry.command} needs {param.name}: please reply with it."
    hint = ask_hint(param)
    if hint:
        ask += f"\n({hint})"
    minutes = max(1, round(timeout / 60))
    ask += f"\nI'll wait {minutes} min. /cancel to stop."
    key = bot.next_key()
    pending_key = f"{message.chat_id}:{user.id}"
    # the question's message id is known once the outbox has sent it (the channel adds it)
    await bot.app.kv_set(
        PENDING_NAMESPACE, pending_key,
        {"command": entry.command, "targetId": entry.target_id, "inputs": inputs, "asking": param.name,
         "promptKey": key, "expiresAt": time.time() + timeout, "commandMessageId": command_message_id},
        ttl=timeout,
    )
    await bot.reply(message, ask, markup={"force_reply": True, "selective": True}, pending=pending_key, key=key)


async def on_question_reply(bot: TelegramBot, message: Message, user: User) -> bool:
    """A reply to a question message answers it; False when the message replies to none."""
    replied = message.reply_to_message
    if replied is None or replied.from_user is None or replied.from_user.id != bot.bot.id:
        return False
    found = questions.MARK.search(replied.text or "")
    if found is None:
        return False
    account = await bot.account_of(user)
    body = questions.parse_reply(message.text or message.caption or "")
    refusal = await unseen_choice(bot, message.chat_id, found.group(1), body)
    await bot.reply(message, refusal or await questions.answer(bot.app, found.group(1), account, body))
    return True


async def unseen_choice(bot: TelegramBot, chat_id: int, question_id: str, body: dict[str, Any]) -> str | None:
    """Why ``body`` may not be taken, when it chooses a candidate this chat was not shown (it
    could not be sent here: what the delivery that asked recorded); None otherwise."""
    from toolweave.telegram.channel import ASKED_NAMESPACE
    from toolweave.telegram.resending import SENT_NAMESPACE

    chosen = body.get("chosen")
    if not isinstance(chosen, list):
        return None
    asked = await bot.app.kv_get(ASKED_NAMESPACE, f"{chat_id}:{question_id}")
    if not isinstance(asked, dict) or not asked.get("notification"):
        return None
    delivery = await bot.app.notification(str(asked["notification"]))
    state = await bot.app.kv_get(SENT_NAMESPACE, str(asked["notification"]))
    if delivery is None or not isinstance(state, dict):
        return None
    question = (delivery.get("payload") or {}).get("question") or {}
    candidates = len(question.get("candidates") or []) if isinstance(question, dict) else 0
    return questions.unseen_refusal(chosen, questions.unseen(state.get("notes") or []), candidates)


async def on_plain(bot: TelegramBot, message: Message, user: User, private: bool) -> None:
    """A message that is not a command: the answer to a step's question, or to the input a command
    is waiting for (in a group, only a reply to the bot's question counts)."""
    if await on_question_reply(bot, message, user):
        return
    key = f"{message.chat_id}:{user.id}"
    pending = await bot.app.kv_get(PENDING_NAMESPACE, key)
    replied = message.reply_to_message
    to_prompt = bool(replied and replied.from_user and replied.from_user.id == bot.bot.id
                     and (replied.text or "").startswith(PROMPT_MARK))
    if not pending:
        if to_prompt:
            await bot.reply(message, "That question has expired. Please send the command again.")
        elif private and (message.text or find_media(message)):
            await bot.reply(message, "Send a command to run something; /help lists them.")
        return
    if not private and not (replied and replied.message_id == pending.get("promptMessageId")):
        return
    entry = bot.commands().get(str(pending.get("command")))
    if entry is None or entry.target_id != pending.get("targetId"):
        await bot.app.kv_set(PENDING_NAMESPACE, key, None)
        await bot.reply(message, "That command is no longer available.")
        return
    spec = classify(bot.app.job_for(entry.target_id))
    name = str(pending.get("asking"))
    param = spec.param(name)
    inputs = dict(pending.get("inputs") or {})
    account = await bot.account_of(user)
    if param is None:
        await bot.app.kv_set(PENDING_NAMESPACE, key, None)
        return
    if param.type.is_media:
        media = find_media(message)
        if media is None:
            raise UserFacingError(f"{name} needs {'a photo' if param.type is ParamType.IMAGE else 'a file'}; please send one, or /cancel.")
        inputs[name] = await download(bot, media, spec, account, param_name=name)
    else:
        value = message.text or message.caption or ""
        if not value.strip():
            raise UserFacingError(f"Please reply with a value for {name}, or /cancel.")
        problem = check_answer(param, value)
        if problem:
            raise UserFacingError(f"{problem}. Please try again, or /cancel.")
        inputs[name] = value.strip() if param.type not in (ParamType.STRING, ParamType.TEXT) else value
    await continue_command(bot, entry, spec, inputs, message, user, account,
                           command_message_id=int(pending.get("commandMessageId") or message.message_id))


async def download(bot: TelegramBot, media: Media, spec: CommandSpec, account: str, *, param_name: str | None = None) -> dict[str, Any]:
    name = param_name or spec.media_input or "media"
    param = spec.param(name)
    kind = param.type if param is not None else spec.media_type
    if not media_kind_ok(kind, media.mime_type):
        wanted = {ParamType.IMAGE: "an image", ParamType.VIDEO: "a video"}.get(kind, "a file") if kind else "a file"
        raise UserFacingError(f"{name} needs {wanted}, but you sent {media.what} ({media.mime_type}).")
    limit = min(MAX_DOWNLOAD, bot.app.settings.media_max_bytes)
    if media.size is not None and media.size > limit:
        raise UserFacingError(f"{name}: the file is too large ({media.size / 1048576:.1f} MB; at most {limit / 1048576:.0f} MB).")
    try:
        file = await bot.bot.get_file(media.file_id)
        data = bytes(await file.download_as_bytearray())
    except TelegramError as exc:
        log.warning("downloading a file from Telegram failed: %s", exc)
        raise UserFacingError(f"I could not download the file for {name} from Telegram; please send it again.") from None
    if len(data) > limit:
        raise UserFacingError(f"{name}: the file is too large ({len(data) / 1048576:.1f} MB).")
    # Only the bytes are kept: the download URL holds the bot token and is never stored or passed on.
    return await bot.app.put_media(data, account, filename=media.filename, mime_type=media.mime_type)
