"""Finding what an interrupted send left in a chat (a crash between Telegram accepting a message
and the bot recording its id).

The Bot API cannot list a chat's messages, nor say whether a message arrived. What it offers:

- message ids grow: "unique message identifier inside this chat" (Bot API, ``Message``); in a
  supergroup (and a channel) each chat counts its own messages one by one, in private chats and
  basic groups the ids come from the bot account's own counter, which every message it sends or
  receives in any of those chats moves on by one (so ids in one private chat grow with gaps);
- a bot can edit only its own messages ("message can't be edited" for anyone else's, admin or
  not), and an edit that changes nothing is refused with "message is not modified".

So: before a message is sent, the channel records the chat's *watermark* (``kv("telegram.chats",
chat)``: the highest id of the bot's recorded messages there, or the message it answers when
higher). Messages to one chat go out one at a time and in order (``Notifier`` holds the others
back), and every one sent is recorded with its id, which raises the watermark: so a message of the
bot's above the watermark that is not recorded can only be the one whose sending was interrupted.
After a restart the ids just above the watermark are *probed* with an edit that repeats exactly
what that message would hold (its text or caption, its buttons): Telegram answers "message is not
modified" only for a message of the bot's that holds exactly that — the proof that it arrived;
a user's message cannot be edited and an unused id is not found, both harmless. Nothing is ever
deleted, so no user's message can be touched, even where the bot is an admin.

At most ``PROBES`` ids are probed: in a private chat of a busy bot the lost message may lie further
up (other chats moved the counter on meanwhile); then it is not found (docs/telegram.md says what
happens then).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from toolweave.telegram.botapi import BotAPI, BotAPIError

if TYPE_CHECKING:
    from toolweave.app import App

log = logging.getLogger("toolweave.telegram")

CHATS_NAMESPACE = "telegram.chats"
CHATS_TTL = 30 * 86400.0
PROBES = 20
"""How many ids above the watermark are probed for a message whose sending was interrupted."""


async def watermark(app: App, chat_id: Any, reply_to: Any = None) -> int | None:
    """The id below which every message of the bot's in ``chat_id`` is recorded (None: unknown)."""
    state = await app.kv_get(CHATS_NAMESPACE, str(chat_id))
    high = int(state["high"]) if isinstance(state, Mapping) and state.get("high") is not None else None
    if isinstance(reply_to, int) and (high is None or reply_to > high):
        return reply_to
    return high


async def seen(app: App, chat_id: Any, message_ids: list[int]) -> None:
    """Messages of the bot's in ``chat_id`` recorded: the watermark rises to the highest."""
    if not message_ids:
        return
    state = await app.kv_get(CHATS_NAMESPACE, str(chat_id))
    high = int(state["high"]) if isinstance(state, Mapping) and state.get("high") is not None else 0
    if max(message_ids) > high:
        await app.kv_set(CHATS_NAMESPACE, str(chat_id), {"high": max(message_ids)}, ttl=CHATS_TTL)


async def moved(app: App, chat_id: Any) -> None:
    """``chat_id`` is the supergroup a basic group was upgraded to, which counts its own message
    ids from 1: with no watermark there yet, it is 0 (every message of the bot's there is sent, and
    recorded, from now on). A mark of the old group's (its ids come from the bot account's counter)
    never moves over."""
    if await app.kv_get(CHATS_NAMESPACE, str(chat_id)) is None:
        await app.kv_set(CHATS_NAMESPACE, str(chat_id), {"high": 0}, ttl=CHATS_TTL)


def inline(markup: Any) -> dict[str, Any] | None:
    """The inline keyboard of a reply markup (the only kind a message keeps and an edit takes)."""
    return markup if isinstance(markup, Mapping) and "inline_keyboard" in markup else None  # type: ignore[return-value]


def text_probe(text: str, markup: Any = None) -> tuple[str, dict[str, Any]]:
    """An edit that changes nothing on a text message holding ``text`` and ``markup``."""
    params: dict[str, Any] = {"text": text}
    if inline(markup):
        params["reply_markup"] = inline(markup)
    return "editMessageText", params


def caption_probe(caption: str, markup: Any = None) -> tuple[str, dict[str, Any]]:
    """An edit that changes nothing on a photo, video or document captioned ``caption``."""
    params: dict[str, Any] = {"caption": caption}
    if inline(markup):
        params["reply_markup"] = inline(markup)
    return "editMessageCaption", params


def markup_probe(markup: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """An edit that changes nothing on a message carrying exactly the inline keyboard ``markup``."""
    return "editMessageReplyMarkup", {"reply_markup": markup}


async def find(api: BotAPI, chat_id: Any, after: int | None, probes: list[tuple[str, dict[str, Any]]],
               what: str) -> list[int]:
    """The ids of the bot's messages above ``after`` that hold, in order, what ``probes`` repeat
    (an album: one probe per item; the messages of one send are the first of the bot's above the
    watermark, so each probe only meets the message it expects, or a user's, or nothing). Stops
    when all are found or after ``PROBES`` ids: fewer ids than probes means not all arrived (or
    they lie further up). 429, 5xx and network errors leave as ``BotAPIError`` (the delivery is
    tried again later, probing again)."""
    if after is None:
        log.warning("%s in chat %s may have been sent before an interruption, and nothing tells where "
                    "(no message of the bot's recorded there yet)", what, chat_id)
        return []
    found: list[int] = []
    for message_id in range(after + 1, after + PROBES + 1):
        method, params = probes[len(found)]
        try:
            result = await api.call(method, {"chat_id": chat_id, "message_id": message_id, **params})
        except BotAPIError as exc:
            if exc.status == 400 and "not modified" in exc.description.lower():
                found.append(message_id)
                if len(found) == len(probes):
                    log.info("%s in chat %s had arrived before an interruption (message %s)", what, chat_id,
                             ", ".join(map(str, found)))
                    return found
                continue
            if exc.status == 400:
                continue  # not found, or not the bot's: nothing to see, nothing changed
            raise
        # the edit changed a message of the bot's that was not recorded: this should not happen
        # (every message is recorded before the next one to the chat is sent)
        log.error("probing for %s in chat %s changed message %s, which was not recorded (%s)",
                  what, chat_id, message_id, _describe(result))
    log.warning("%s in chat %s: %d of its %d messages found among the %d ids after %s", what, chat_id,
                len(found), len(probes), PROBES, after)
    return found


def _describe(result: Any) -> str:
    if not isinstance(result, Mapping):
        return "?"
    body = result.get("text") or result.get("caption") or ""
    return repr(str(body)[:60])
