"""A send interrupted between Telegram carrying it out and the bot hearing so (the answer lost: a
short client timeout against a fake that holds the answer back), then tried again, on both stores:
what arrived is found by probing edits that change nothing and is not sent again — a status message
(also in a supergroup where the bot is an admin and users talk meanwhile: their messages are never
touched), a text, an album — and what never arrived (a request lost on the way) is sent again or,
for files, offered again."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

from PIL import Image
from tests.fakes.telegram_api import FakeTelegram, TelegramEnv, telegram_env
from tests.helpers.worker import running_worker

from toolweave.telegram.botapi import BotAPI
from toolweave.telegram.reconcile import PROBES

GROUP = -1001500000001


def jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (120, 90), "maroon").save(buffer, "JPEG")
    return buffer.getvalue()


def answers_quickly_or_not_at_all(env: TelegramEnv) -> None:
    """The channel gives up waiting for Telegram's answer after 1 s (the request may have been
    carried out): the send is in doubt, as after a connection that broke."""
    channel = env.app.notifier.channels["telegram"]
    channel.api = BotAPI(env.app.http, env.fake.token, env.url, timeout=1.0)


def statuses(fake: FakeTelegram, chat_id: int) -> list[dict[str, Any]]:
    return [m for m in fake.sent_to(chat_id) if "\nRun run_" in (m.get("text") or "")]


def buttons(message: dict[str, Any]) -> list[str]:
    rows = (message.get("reply_markup") or {}).get("inline_keyboard", [])
    return [b.get("callback_data", "") for row in rows for b in row]


async def closing(fake: FakeTelegram, head: str, chat_id: int = 42) -> dict[str, Any]:
    found = await fake.wait_for(lambda: [m for m in fake.sent_to(chat_id) if (m.get("text") or "").startswith(head)],
                                timeout=60)
    assert len(found) == 1
    message: dict[str, Any] = found[0]
    return message


async def test_a_status_message_that_arrived_is_found_in_a_busy_group_and_no_users_message_is_touched(
    db_url: str, tmp_path: Path
) -> None:
    # no worker until the status message is in doubt: it is sent while the run is unfinished (with
    # its Cancel button, which the probes repeat), however fast the run is once a worker takes it
    async with telegram_env(tmp_path, database_url=db_url, worker=False) as env:
        fake = env.fake
        fake.admin_in.add(GROUP)  # the bot could delete anyone's message here: it must not
        answers_quickly_or_not_at_all(env)
        fake.hold("sendMessage")  # carried out, its answer lost
        command = fake.message_update("/card In the group", chat_id=GROUP)
        # users talk while the bot handles the command
        before = [fake.user_message(f"chatter {i}", chat_id=GROUP, user_id=7) for i in range(2)]
        await env.send(command)
        (held,) = await fake.wait_for(lambda: fake.held, timeout=30)
        (stranded,) = statuses(fake, GROUP)
        after = fake.user_message("anyone?", chat_id=GROUP, user_id=8)
        # a supergroup counts every message: the users' and the bot's ids interleave
        assert [m["message_id"] for m in (command["message"], *before, stranded, after)] == list(
            range(command["message"]["message_id"], command["message"]["message_id"] + 5))
        async with running_worker(env.app):  # the send is tried again (probing) and the run done
            await closing(fake, "✅ Card is done.", GROUP)
        fake.release()
        # the message that arrived is the run's status message: brought up to date, no Cancel left
        final = await fake.wait_for(lambda: (fake.message(GROUP, stranded["message_id"]).get("text") or "").startswith("✅")
                                    and fake.message(GROUP, stranded["message_id"]), timeout=30)
        assert "reply_markup" not in final
        assert statuses(fake, GROUP) == [final]
        assert len([c for c in fake.calls_of("sendMessage") if "\nRun run_" in str(c.params.get("text"))]) == 1
        # the probes: the users' messages cannot be edited, the status message "is not modified"
        probes = [c for c in fake.calls if c.method == "editMessageReplyMarkup"]
        assert [c.params["message_id"] for c in probes] == [m["message_id"] for m in (*before, stranded)]
        assert [c.status for c in probes] == [400, 400, 400]
        for message in (*before, after):
            assert fake.incoming[(GROUP, message["message_id"])]["text"].startswith(("chatter", "anyone"))
        assert not fake.deleted
        assert held.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"].startswith("c:run_")


async def test_a_status_message_that_never_arrived_is_sent_again_once(db_url: str, tmp_path: Path) -> None:
    async with telegram_env(tmp_path, database_url=db_url, worker=False) as env:  # as above
        fake = env.fake
        answers_quickly_or_not_at_all(env)
        fake.lose("sendMessage")  # the request never reaches Telegram
        command = fake.message_update("/card Lost on the way")
        # people in other private chats move the bot's counter on: ids in this chat have gaps
        for user in (50, 51, 52):
            fake.user_message("hi", user_id=user)
        await env.send(command)
        (lost,) = await fake.wait_for(lambda: fake.lost, timeout=30)
        async with running_worker(env.app):
            await closing(fake, "✅ Card is done.")
        fake.release()
        (status,) = statuses(fake, 42)
        final = await fake.wait_for(lambda: (fake.message(42, status["message_id"]).get("text") or "").startswith("✅")
                                    and fake.message(42, status["message_id"]), timeout=30)
        assert "reply_markup" not in final
        probes = [c for c in fake.calls if c.method == "editMessageReplyMarkup"]
        assert len(probes) == PROBES and {c.status for c in probes} == {400}
        run = (await env.app.list_runs("telegram-42")).items[0]
        state = await env.app.kv_get("telegram.status", run["jobRunId"])
        assert state["messageId"] == status["message_id"] and state["lost"] == 1
        assert lost.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"].startswith("c:run_")


async def test_an_answer_that_arrived_is_not_sent_twice(db_url: str, tmp_path: Path) -> None:
    async with telegram_env(tmp_path, database_url=db_url) as env:
        fake = env.fake
        answers_quickly_or_not_at_all(env)
        fake.hold("sendMessage")
        await env.send(fake.message_update("/help"))
        await fake.wait_for(lambda: fake.held, timeout=30)
        for _ in range(300):
            rows = await env.app.store.read(lambda tx: [dict(r) for r in tx.all("SELECT * FROM notifications")])
            if rows and rows[0]["status"] == "delivered":
                break
            await asyncio.sleep(0.1)
        fake.release()
        assert rows[0]["status"] == "delivered" and rows[0]["attempts"] == 2
        (answer,) = fake.sent_to(42)
        assert "/status" in answer["text"]
        assert len(fake.calls_of("sendMessage")) == 1
        (probe,) = [c for c in fake.calls if c.method == "editMessageText"]
        assert probe.params["message_id"] == answer["message_id"] and probe.status == 400


async def test_an_album_that_arrived_is_not_sent_again_nor_said_to_be_missing(db_url: str, tmp_path: Path) -> None:
    async with telegram_env(tmp_path, database_url=db_url) as env:
        fake = env.fake
        answers_quickly_or_not_at_all(env)
        fake.hold("sendMediaGroup")
        await env.send(fake.message_update("/variants", photo=jpeg()))
        done = await closing(fake, "✅ Variants is done.")
        fake.release()
        assert "interrupted" not in done["text"] and not [b for b in buttons(done) if b.startswith("s:")]
        assert len(fake.calls_of("sendMediaGroup")) == 1
        photos = [m for m in fake.sent_to(42) if m.get("photo")]
        assert [m["caption"] for m in photos] == ["bright", "dark"]
        probes = [c for c in fake.calls if c.method == "editMessageCaption"]
        assert [(c.params["message_id"], c.params["caption"]) for c in probes] == [
            (photos[0]["message_id"], "bright"), (photos[1]["message_id"], "dark")]


async def test_an_album_lost_on_the_way_is_offered_again_and_sent_when_asked(db_url: str, tmp_path: Path) -> None:
    async with telegram_env(tmp_path, database_url=db_url) as env:
        fake = env.fake
        answers_quickly_or_not_at_all(env)
        fake.lose("sendMediaGroup")
        await env.send(fake.message_update("/variants", photo=jpeg()))
        done = await closing(fake, "✅ Variants is done.")
        fake.release()
        assert not [m for m in fake.sent_to(42) if m.get("photo")]
        assert "bright, dark: sending was interrupted" in done["text"]
        assert len([c for c in fake.calls if c.method == "editMessageCaption"]) == PROBES
        (again,) = [b for b in buttons(done) if b.startswith("s:")]
        await env.send(fake.callback_update(again, message=done))
        photos = await fake.wait_for(lambda: [m for m in fake.sent_to(42) if m.get("photo")], timeout=30)
        assert [m["caption"] for m in photos] == ["bright", "dark"]
