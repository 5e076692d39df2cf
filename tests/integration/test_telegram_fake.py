"""The fake Bot API counts message ids and answers edits and deleteMessage as Telegram documents
them (the reconciliation after a crash relies on exactly these answers)."""

from __future__ import annotations

from typing import Any

import httpx
from tests.fakes.telegram_api import FakeTelegram
from tests.helpers.loopback import serve_asgi

SUPERGROUP = -1001700000002
GROUP = -4700000003


async def call(http: httpx.AsyncClient, fake: FakeTelegram, method: str, **params: Any) -> tuple[int, Any]:
    response = await http.post(f"/bot{fake.token}/{method}", json=params)
    body = response.json()
    return response.status_code, body.get("result") if body.get("ok") else body.get("description")


async def test_ids_edits_and_deletion_follow_telegrams_rules() -> None:
    fake = FakeTelegram()
    async with serve_asgi(fake.asgi()) as url, httpx.AsyncClient(base_url=url) as http:
        # a supergroup counts its own messages, users' and the bot's alike, one by one
        first = fake.user_message("hi", chat_id=SUPERGROUP, user_id=7)
        status, mine = await call(http, fake, "sendMessage", chat_id=SUPERGROUP, text="hello",
                                  reply_markup={"inline_keyboard": [[{"text": "x", "callback_data": "c:1"}]]})
        later = fake.user_message("yo", chat_id=SUPERGROUP, user_id=8)
        assert status == 200
        assert [first["message_id"], mine["message_id"], later["message_id"]] == [1, 2, 3]
        # private chats and basic groups share the bot account's counter: gaps in each chat
        a = fake.user_message("a", user_id=42)
        fake.user_message("b", user_id=43)
        _, reply = await call(http, fake, "sendMessage", chat_id=42, text="to 42")
        fake.user_message("c", chat_id=GROUP, user_id=44)
        _, again = await call(http, fake, "sendMessage", chat_id=42, text="to 42 again")
        assert reply["message_id"] == a["message_id"] + 2 and again["message_id"] == reply["message_id"] + 2

        markup = {"inline_keyboard": [[{"text": "x", "callback_data": "c:1"}]]}
        sid = mine["message_id"]
        assert await call(http, fake, "editMessageReplyMarkup", chat_id=SUPERGROUP, message_id=sid,
                          reply_markup=markup) == (400, "Bad Request: message is not modified: specified new message "
                                                   "content and reply markup are exactly the same as a current content "
                                                   "and reply markup of the message")
        assert await call(http, fake, "editMessageText", chat_id=SUPERGROUP, message_id=first["message_id"],
                          text="mine now") == (400, "Bad Request: message can't be edited")
        assert await call(http, fake, "editMessageReplyMarkup", chat_id=SUPERGROUP, message_id=99,
                          reply_markup=markup) == (400, "Bad Request: message to edit not found")
        assert (await call(http, fake, "editMessageText", chat_id=SUPERGROUP, message_id=sid, text="hello",
                           reply_markup=markup))[0] == 400  # not modified
        status, edited = await call(http, fake, "editMessageText", chat_id=SUPERGROUP, message_id=sid, text="hello")
        assert status == 200 and "reply_markup" not in edited  # an edit without buttons removes them
        assert fake.incoming[(SUPERGROUP, first["message_id"])]["text"] == "hi"

        # deleteMessage: another user's message only where the bot is an admin; a user's message in
        # a private chat; the bot's own; nothing older than 48 hours; nothing twice
        assert await call(http, fake, "deleteMessage", chat_id=SUPERGROUP, message_id=later["message_id"]) == (
            400, "Bad Request: message can't be deleted")
        fake.admin_in.add(SUPERGROUP)
        assert await call(http, fake, "deleteMessage", chat_id=SUPERGROUP, message_id=later["message_id"]) == (200, True)
        assert await call(http, fake, "deleteMessage", chat_id=42, message_id=a["message_id"]) == (200, True)
        fake.age(42, reply["message_id"], 48 * 3600)
        assert await call(http, fake, "deleteMessage", chat_id=42, message_id=reply["message_id"]) == (
            400, "Bad Request: message can't be deleted")
        assert await call(http, fake, "deleteMessage", chat_id=42, message_id=again["message_id"]) == (200, True)
        assert await call(http, fake, "deleteMessage", chat_id=42, message_id=again["message_id"]) == (
            400, "Bad Request: message to delete not found")
        assert await call(http, fake, "editMessageText", chat_id=42, message_id=again["message_id"], text="x") == (
            400, "Bad Request: message to edit not found")
        assert fake.deleted == [(SUPERGROUP, later["message_id"]), (42, a["message_id"]), (42, again["message_id"])]
