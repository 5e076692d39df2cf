"""Result delivery against a hostile Bot API, on both stores: an album Telegram refuses sent item by
item while a 429 cuts in, a chat Telegram will not take messages for (400 "chat not found", a group
upgraded to a supergroup), a retry after the job changed, forged buttons, an answer that trickles
in — each photo arrives exactly once, and nothing is lost."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import yaml
from PIL import Image
from tests.fakes.telegram_api import DEFINITIONS, FakeTelegram, TelegramEnv, telegram_env

FINAL_MARKS = ("✅", "⚠️", "❌", "🚫")


def jpeg(width: int = 120, height: int = 90, color: str = "teal") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, "JPEG")
    return buffer.getvalue()


def results(env: TelegramEnv, chat_id: int = 42) -> list[dict[str, Any]]:
    return [m for m in env.replies(chat_id) if (m.get("text") or "").startswith(FINAL_MARKS) and "r:" in str(m.get("reply_markup"))]


def photos_by_caption(fake: FakeTelegram, chat_id: int = 42) -> dict[str, int]:
    """How many messages with a file of each caption reached ``chat_id``."""
    counts: dict[str, int] = {}
    for message in fake.sent_to(chat_id):
        if ("photo" in message or "document" in message) and message.get("caption"):
            counts[message["caption"]] = counts.get(message["caption"], 0) + 1
    return counts


async def notifications(env: TelegramEnv) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = await env.app.store.read(
        lambda tx: [dict(r) for r in tx.all("SELECT * FROM notifications ORDER BY created_at")])
    return rows


async def settled(env: TelegramEnv, timeout: float = 60.0, *, results: int = 1) -> list[dict[str, Any]]:
    """The outbox once the run's result (``results`` of them) is queued and nothing is pending."""
    for _ in range(int(timeout / 0.1)):
        rows = await notifications(env)
        ended = [r for r in rows if r["event_type"].startswith("run.")]
        if len(ended) >= results and all(r["status"] != "pending" for r in rows):
            return rows
        await asyncio.sleep(0.1)
    raise AssertionError(f"still pending: {[(r['event_type'], r['status'], r['last_error']) for r in rows]}")


async def test_an_album_sent_item_by_item_that_meets_a_429_sends_no_item_twice(db_url: str, tmp_path: Path) -> None:
    async with telegram_env(tmp_path, database_url=db_url) as env:
        fake = env.fake
        # Telegram refuses the album as a whole (every time), and the second of its photos sent on
        # their own meets the rate limit: sending a photo after another one quickly is what a 429 is
        fake.fail("sendMediaGroup", 400, times=10, description="Bad Request: IMAGE_PROCESS_FAILED")
        fake.fail("sendPhoto", 429, retry_after=1, after=1)
        await env.send(fake.message_update("/variants", photo=jpeg()))
        (done,) = await fake.wait_for(lambda: results(env), timeout=60)
        rows = await settled(env)
        assert {r["status"] for r in rows} == {"delivered"}
        assert photos_by_caption(fake) == {"bright": 1, "dark": 1, "sheet": 1}
        assert [c.status for c in fake.calls if c.method == "sendPhoto"] == [200, 429, 200]
        assert "could not be sent" not in done["text"]


async def test_a_chat_telegram_does_not_know_loses_no_result_and_a_resend_delivers_all_of_it(
        db_url: str, tmp_path: Path) -> None:
    async with telegram_env(tmp_path, database_url=db_url) as env:
        fake = env.fake
        # the chat is gone for Telegram while the result is sent ("chat not found" is a 400, as a
        # photo Telegram cannot take is): nothing of it can arrive, so none of it counts as sent
        fake.close_chat(42)
        await env.send(fake.message_update("/variants", photo=jpeg()))
        rows = await settled(env)
        given_up = [r for r in rows if r["status"] == "failed"]
        assert {r["event_type"] for r in given_up} == {"status", "run.completed"}
        result = next(r for r in given_up if r["event_type"] == "run.completed")
        assert "chat not found" in result["last_error"]
        # one try of the first part, no photo tried as a document nor album item by item: a chat
        # that takes nothing is not a file Telegram refuses
        tried = [c.method for c in fake.calls if c.params.get("chat_id") == 42 and c.method != "sendMessage"]
        assert tried == ["sendMediaGroup"], tried
        fake.open_chat(42)
        assert sorted(await env.app.resend_notifications([r["notification_id"] for r in given_up])) == sorted(
            r["notification_id"] for r in given_up)
        (done,) = await fake.wait_for(lambda: results(env), timeout=60)
        await settled(env)
        assert photos_by_caption(fake) == {"bright": 1, "dark": 1, "sheet": 1}
        assert "could not be sent" not in done["text"]


async def test_an_album_item_lost_on_the_way_is_the_only_one_offered_and_sent_again_once(
        db_url: str, tmp_path: Path) -> None:
    from toolweave.telegram.botapi import BotAPI

    async with telegram_env(tmp_path, database_url=db_url) as env:
        fake = env.fake
        # the channel gives up waiting for an answer after 1 s: a request lost on the way is in doubt
        env.app.notifier.channels["telegram"].api = BotAPI(env.app.http, fake.token, env.url, timeout=1.0)
        fake.fail("sendMediaGroup", 400, times=10, description="Bad Request: IMAGE_PROCESS_FAILED")
        fake.lose("sendPhoto")  # the album goes item by item, and its first item is lost on the way
        await env.send(fake.message_update("/variants", photo=jpeg()))
        (done,) = await fake.wait_for(lambda: results(env), timeout=60)
        fake.release()
        # the item sent after the lost one arrived; only the lost one is said to be missing
        assert photos_by_caption(fake) == {"dark": 1, "sheet": 1}
        assert "bright: sending was interrupted" in done["text"] and "dark: sending" not in done["text"]
        rows = done["reply_markup"]["inline_keyboard"]
        (again,) = [b for row in rows for b in row if b["callback_data"].startswith("s:")]
        assert again["text"] == "📥 bright"
        # sent again when asked, while a 429 cuts in: the missing item arrives once, nothing else
        fake.fail("sendPhoto", 429, retry_after=1, times=1)
        await env.send(fake.callback_update(again["callback_data"], message=done))
        await fake.wait_for(lambda: photos_by_caption(fake).get("bright"), timeout=60)
        await settled(env)
        assert photos_by_caption(fake) == {"bright": 1, "dark": 1, "sheet": 1}


async def test_a_group_upgraded_to_a_supergroup_gets_its_status_message_and_result_there(
        db_url: str, tmp_path: Path) -> None:
    group, supergroup = -4242, -1004242
    async with telegram_env(tmp_path, database_url=db_url) as env:
        fake = env.fake
        command = fake.message_update("/card Moving house", chat_id=group)
        # the group is upgraded before the bot answers: Telegram refuses the old id and names the new one
        fake.upgrade_group(group, supergroup)
        await env.send(command)
        (done,) = await fake.wait_for(lambda: results(env, supergroup), timeout=60)
        rows = await settled(env)
        assert {r["status"] for r in rows} == {"delivered"}
        assert "Card: Moving house" in done["text"]
        assert len([m for m in fake.sent_to(supergroup) if "\nRun run_" in (m.get("text") or "")]) == 1
        assert not fake.sent_to(group)


async def test_forged_button_data_is_answered_plainly(db_url: str, tmp_path: Path, caplog: Any) -> None:
    import logging

    caplog.set_level(logging.ERROR, logger="toolweave")
    async with telegram_env(tmp_path, database_url=db_url) as env:
        fake = env.fake
        await env.send(fake.message_update("/card Mine"))
        (done,) = await fake.wait_for(lambda: results(env), timeout=60)
        rows = await notifications(env)
        mine = next(r for r in rows if r["event_type"] == "run.completed")["notification_id"]
        run_id = next(r for r in rows if r["event_type"] == "run.completed")["run_id"]
        # a bad client may send any callback_data (the Bot API says so): digits that are not ASCII
        # ("²" is a digit to str.isdigit, not to int), another user's runs and deliveries, garbage
        forged = [f"s:{mine}:²", "a:q_x:c²", f"s:{mine}:99", f"r:{run_id}", f"c:{run_id}", f"s:{mine}:0", "zz", ":"]
        users = [42, 42, 42, 77, 77, 77, 42, 42]
        for data, user in zip(forged, users, strict=True):
            await env.send(fake.callback_update(data, user_id=user, message=done))
        answers = [str(c.params.get("text")) for c in fake.calls_of("answerCallbackQuery")]
        assert len(answers) == len(forged)
        assert not [a for a in answers if a.startswith("Sorry")], answers
        assert answers[0].startswith("That is not yours") and answers[1] == "This button is no longer supported."
        assert answers[2] == "Nothing of that is missing: it was all sent."  # no part 100, nor one in doubt
        assert answers[3] == answers[4] == "That run is not yours." and answers[5].startswith("That is not yours")
        assert not [r for r in await notifications(env) if r["event_type"] == "resend"]
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len((await env.app.list_runs("telegram-42")).items) == 1
        assert len((await env.app.list_runs("telegram-77")).items) == 0


async def test_a_bot_api_that_answers_a_byte_at_a_time_does_not_hold_the_sender() -> None:
    import httpx
    from tests.integration.test_api_callbacks import Tarpit

    from toolweave.telegram.botapi import BotAPI, BotAPIError

    # a broken proxy in front of Telegram, or Telegram itself, trickling its answer: httpx's
    # timeout starts again with every byte, so only a deadline for the whole call ends it
    async with Tarpit("headers") as url, httpx.AsyncClient() as http:
        api = BotAPI(http, "123:abc", url.removesuffix("/hook"), timeout=1.0)
        calling = asyncio.ensure_future(api.call("sendMessage", {"chat_id": 42, "text": "hi"}))
        done, _ = await asyncio.wait({calling}, timeout=30)
        if not done:
            calling.cancel()
            raise AssertionError("the Bot API call was still going after 30 s")
        error = calling.exception()
        assert isinstance(error, BotAPIError) and error.retryable
        assert error.sent_maybe  # the request went out: Telegram may have carried it out


async def test_a_status_message_in_an_upgraded_group_does_not_stop_the_others_being_edited(
        db_url: str, tmp_path: Path) -> None:
    group, supergroup = -4343, -1004343
    # no worker: both runs stay queued until they are cancelled, so their status messages change once
    async with telegram_env(tmp_path, database_url=db_url, worker=False) as env:
        fake = env.fake

        def status_of(chat: int) -> list[dict[str, Any]]:
            return [m for m in fake.sent_to(chat) if "\nRun run_" in (m.get("text") or "")]

        await env.send(fake.message_update("/card In the group", chat_id=group))
        await fake.wait_for(lambda: status_of(group))
        await asyncio.sleep(0.01)  # the private chat's run sorts after the group's
        await env.send(fake.message_update("/card In private"))
        (sent,) = await fake.wait_for(lambda: status_of(42))
        private = dict(sent)  # as it was sent (the fake edits its message in place)
        fake.upgrade_group(group, supergroup)  # editing the group's message now fails: ChatMigrated
        for index in range(2):
            run = await env.run_of("telegram-42", index)
            await env.app.cancel(run["jobRunId"], "telegram-42")
        edited = await fake.wait_for(
            lambda: "reply_markup" not in fake.message(42, private["message_id"]) and fake.message(42, private["message_id"]),
            timeout=30)
        assert edited["text"] != private["text"]


async def test_a_delivery_retried_after_its_job_changed_keeps_to_the_version_it_ran(db_url: str, tmp_path: Path) -> None:
    async with telegram_env(tmp_path, database_url=db_url) as env:
        fake = env.fake
        # the album goes; the document after it meets a 429; meanwhile a new version of the job
        # says "dark" goes as a document: a plan made from the new version would put "dark" where
        # the old one had "sheet", sending "dark" twice and "sheet" never
        fake.fail("sendDocument", 429, retry_after=3)
        await env.send(fake.message_update("/variants", photo=jpeg()))
        await fake.wait_for(lambda: [c for c in fake.calls if c.method == "sendDocument" and c.status == 429], timeout=60)
        jobs = yaml.safe_load((DEFINITIONS / "jobs.yaml").read_text())
        variants = next(j for j in (jobs if isinstance(jobs, list) else jobs["jobs"]) if j["jobId"] == "tg_variants")
        variants = {**variants, "version": "99"}
        variants["deliveryHints"]["telegram"]["outputs"]["dark"] = {"send-as": "document"}
        _, problems = await env.app.register_job(variants)
        assert not problems
        await fake.wait_for(lambda: results(env), timeout=60)
        await settled(env)
        assert photos_by_caption(fake) == {"bright": 1, "dark": 1, "sheet": 1}
        assert [c.files["document"][0] for c in fake.calls_of("sendDocument")] == ["sheet.png"]


async def test_a_forged_cancel_on_another_users_message_does_not_overwrite_it(db_url: str, tmp_path: Path) -> None:
    group = -5151
    async with telegram_env(tmp_path, database_url=db_url) as env:
        fake = env.fake
        await env.send(fake.message_update("/card Mine", chat_id=group, user_id=42))
        await fake.wait_for(lambda: [m for m in results(env, group) if "Card: Mine" in m["text"]], timeout=60)
        await env.send(fake.message_update("/card Theirs", chat_id=group, user_id=77))
        (theirs,) = await fake.wait_for(lambda: [m for m in results(env, group) if "Card: Theirs" in m["text"]], timeout=60)
        before = dict(theirs)
        mine = (await env.run_of("telegram-42"))["jobRunId"]
        # user 42's client sends the Cancel data of their own run on user 77's result message
        await env.send(fake.callback_update(f"c:{mine}", user_id=42, message=theirs))
        await env.bot.tracker.pass_once(force=True)
        await asyncio.sleep(0.3)  # the tracker's own passes
        after = fake.message(group, theirs["message_id"])
        assert after["text"] == before["text"] and after.get("reply_markup") == before.get("reply_markup")
        assert not [e for e in fake.edits if e["message_id"] == theirs["message_id"]]


async def test_files_a_group_does_not_let_the_bot_send_are_kept_and_sent_once_an_admin_allows_them(
        db_url: str, tmp_path: Path) -> None:
    group = -6161
    async with telegram_env(tmp_path, database_url=db_url) as env:
        fake = env.fake
        # the bot may write in the group but not send media: Telegram refuses every photo and file
        # with "not enough rights" — the group's permissions, not the files' fault
        fake.restrict(group, "photos", "videos", "documents")
        await env.send(fake.message_update("/variants", chat_id=group, photo=jpeg()))
        (done,) = await fake.wait_for(lambda: results(env, group), timeout=60)
        rows = await settled(env)
        assert {r["status"] for r in rows} == {"delivered"}
        assert not photos_by_caption(fake, group)
        assert "could not be sent" not in done["text"]
        assert "the bot may not send documents in this chat" in done["text"] and "admin" in done["text"]
        again = [b for row in done["reply_markup"]["inline_keyboard"] for b in row if b["callback_data"].startswith("s:")]
        assert [b["text"] for b in again] == ["📥 bright, dark", "📥 sheet"]
        # pressed before the admin changed anything: nothing can go, and the chat is told so
        await env.send(fake.callback_update(again[1]["callback_data"], message=done))
        await fake.wait_for(lambda: [m for m in fake.sent_to(group) if "still not sent" in (m.get("text") or "")],
                            timeout=30)
        # an admin allows files (photos stay forbidden): each press delivers what it names, once
        fake.restrict(group, "photos")
        for button in again:
            await env.send(fake.callback_update(button["callback_data"], message=done))
        await fake.wait_for(lambda: len(photos_by_caption(fake, group)) == 3, timeout=60)
        await settled(env)
        assert photos_by_caption(fake, group) == {"bright": 1, "dark": 1, "sheet": 1}
        assert {m["document"]["file_name"] for m in fake.sent_to(group) if "document" in m} >= {"sheet.png"}


async def test_an_album_in_doubt_in_an_upgraded_group_is_found_in_the_supergroup(db_url: str, tmp_path: Path) -> None:
    from tests.integration.test_telegram_reconcile import answers_quickly_or_not_at_all

    group, supergroup = -4646, -1004646
    async with telegram_env(tmp_path, database_url=db_url) as env:
        fake = env.fake
        answers_quickly_or_not_at_all(env)
        # the command's id comes from the bot account's counter (1000 and up); the supergroup counts
        # its own messages from 1: a watermark taken from the command would sit above all of them
        command = fake.message_update("/variants", chat_id=group, photo=jpeg())
        fake.upgrade_group(group, supergroup)
        fake.hold("sendMediaGroup")  # the album arrives in the supergroup, its answer is lost
        await env.send(command)
        (done,) = await fake.wait_for(lambda: results(env, supergroup), timeout=60)
        fake.release()
        await settled(env)
        assert command["message"]["message_id"] > max(m["message_id"] for m in fake.sent_to(supergroup))
        assert "interrupted" not in done["text"]
        assert not [b for row in done["reply_markup"]["inline_keyboard"] for b in row if b["callback_data"].startswith("s:")]
        assert photos_by_caption(fake, supergroup) == {"bright": 1, "dark": 1, "sheet": 1}
        assert len(fake.calls_of("sendMediaGroup")) == 1
        # no reply points at the old group's message (in the supergroup that id is another message)
        assert not [m for m in fake.sent_to(supergroup) if m.get("_reply_to") == command["message"]["message_id"]]


async def test_a_delivery_sent_again_months_after_it_was_given_up_sends_only_what_was_missing(
        db_url: str, tmp_path: Path) -> None:
    async with telegram_env(tmp_path, database_url=db_url) as env:
        fake = env.fake
        # the album arrives, then the user blocks the bot: the delivery is given up after its first part
        fake.fail("sendDocument", 403, times=1)
        await env.send(fake.message_update("/variants", photo=jpeg()))
        rows = await settled(env)
        (given_up,) = [r for r in rows if r["status"] == "failed"]
        assert photos_by_caption(fake) == {"bright": 1, "dark": 1}
        # 31 days pass: every record kept for a time runs out (the store's clock, moved back)
        await env.app.store.tx(lambda tx: tx.q(
            "UPDATE kv SET expires_at = expires_at - :d WHERE expires_at IS NOT NULL", {"d": 31 * 86400.0}))
        assert await env.app.resend_notifications([given_up["notification_id"]]) == [given_up["notification_id"]]
        (done,) = await fake.wait_for(lambda: results(env), timeout=60)
        await settled(env)
        assert photos_by_caption(fake) == {"bright": 1, "dark": 1, "sheet": 1}
        assert "could not be sent" not in done["text"]


async def test_pruning_a_run_takes_the_record_of_what_its_deliveries_sent(db_url: str, tmp_path: Path) -> None:
    async with telegram_env(tmp_path, database_url=db_url) as env:
        fake = env.fake
        await env.send(fake.message_update("/card Old news"))
        await fake.wait_for(lambda: results(env), timeout=60)
        rows = await settled(env)
        ids = [r["notification_id"] for r in rows if r["run_id"]]

        async def records() -> list[str]:
            found: list[str] = await env.app.store.read(lambda tx: [
                r.key for r in tx.all("SELECT key FROM kv WHERE namespace = 'telegram.sent'") if r.key in ids])
            return found

        assert await records()
        await env.app.prune(older_than=0.0)
        assert not [r for r in await notifications(env) if r["notification_id"] in ids]
        assert not await records()
