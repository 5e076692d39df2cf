"""The bot under faults, against the strict fake Bot API, on both stores: an outage longer than the
old give-up time, 429 periods, a part Telegram refuses, outputs at Telegram's limits, giving up
(logged at ERROR, listed, sent again), an update handed out twice."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from tests.fakes.telegram_api import TelegramEnv, telegram_env

FINAL_MARKS = ("✅", "⚠️", "❌", "🚫")


def jpeg(width: int = 800, height: int = 600, color: str = "teal") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, "JPEG")
    return buffer.getvalue()


def results(env: TelegramEnv, chat_id: int = 42) -> list[dict[str, Any]]:
    return [m for m in env.replies(chat_id) if (m.get("text") or "").startswith(FINAL_MARKS)
            and "r:" in json.dumps(m.get("reply_markup") or {})]


def status_messages(env: TelegramEnv, chat_id: int = 42) -> list[dict[str, Any]]:
    return [m for m in env.replies(chat_id) if "\nRun run_" in (m.get("text") or "")]


async def notifications(env: TelegramEnv) -> list[dict[str, Any]]:
    """Every outbox row (chat messages included), oldest first."""
    rows: list[dict[str, Any]] = await env.app.store.read(
        lambda tx: [dict(r) for r in tx.all("SELECT * FROM notifications ORDER BY created_at")])
    return rows


async def settled(env: TelegramEnv, timeout: float = 60.0) -> list[dict[str, Any]]:
    """The outbox once nothing in it is pending any more."""
    for _ in range(int(timeout / 0.1)):
        rows = await notifications(env)
        if rows and all(r["status"] != "pending" for r in rows):
            return rows
        await asyncio.sleep(0.1)
    raise AssertionError(f"still pending: {[(r['event_type'], r['status'], r['last_error']) for r in await notifications(env)]}")


async def test_an_outage_longer_than_the_old_give_up_time_loses_nothing(db_url: str, tmp_path: Path) -> None:
    # the old dispatcher gave up after 8 attempts (127-254 s): the outage lasts until every message
    # has failed more often than that (the backoff's ceiling is 0.2 s here instead of 300 s)
    async with telegram_env(tmp_path, database_url=db_url, notification_max_backoff_seconds=0.2) as env:
        fake = env.fake
        fake.outage(600.0)
        await env.send(fake.message_update("/card Through the storm"))
        await env.send(fake.message_update("/status"))
        for _ in range(1200):
            rows = await notifications(env)
            if len(rows) == 3 and all(r["attempts"] > 8 for r in rows if r["event_type"] == "status"):
                break
            await asyncio.sleep(0.1)
        # the chat's first message (the status message) is tried again and again; the ones queued
        # after it (the answer to /status, the result) wait their turn: messages to one chat keep
        # their order
        assert all(r["status"] == "pending" for r in rows)
        assert [r["event_type"] for r in rows if r["attempts"]] == ["status"] and "502" in rows[0]["last_error"]
        assert not env.replies()
        fake.outage(0)
        (done,) = await fake.wait_for(lambda: results(env), timeout=90)
        assert done["text"].startswith("✅ Card is done.") and "Card: Through the storm" in done["text"]
        rows = await settled(env)
        assert {r["status"] for r in rows} == {"delivered"}
        by_kind = {r["event_type"]: r for r in rows}
        assert by_kind["status"]["attempts"] > 8  # outlasted the old give-up time
        delivered = sorted(rows, key=lambda r: r["delivered_at"])
        assert [r["notification_id"] for r in delivered] == [r["notification_id"] for r in rows]  # in order
        # everything arrived once: the status message, the answer to /status, the result
        (status,) = status_messages(env)
        assert [t for t in env.texts() if t.startswith("Your recent runs")] != []
        assert len([t for t in env.texts() if t.startswith("Your recent runs")]) == 1
        final = await fake.wait_for(lambda: (fake.message(42, status["message_id"]).get("text") or "").startswith("✅")
                                    and fake.message(42, status["message_id"]))
        assert "reply_markup" not in final


async def test_a_429_period_delays_replies_and_status_messages_but_drops_none(db_url: str, tmp_path: Path) -> None:
    async with telegram_env(tmp_path, database_url=db_url) as env:
        fake = env.fake
        fake.limit_rate(3.0, retry_after=1)
        await env.send(fake.message_update("/status"))
        await env.send(fake.message_update("/card During the limit"))
        await fake.wait_for(lambda: results(env), timeout=90)
        rows = await settled(env)
        assert {r["status"] for r in rows} == {"delivered"}
        assert rows[0]["attempts"] >= 2  # the chat's first message met the 429 and was retried
        (answer,) = [t for t in env.texts() if t.startswith(("You have no runs yet", "Your recent runs"))]
        assert answer.startswith("You have no runs yet")  # /status came before /card
        (status,) = status_messages(env)
        first = next(c for c in fake.calls if c.method == "sendMessage" and "\nRun run_" in str(c.params.get("text")))
        # sent after the answer to /status (queued before it): with a Cancel button, or in its final
        # state when the run finished meanwhile
        if str(first.params["text"]).startswith("✅"):
            assert "reply_markup" not in first.params
        else:
            assert first.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"].startswith("c:run_")
        # every retry came after the retry_after Telegram asked for
        refused = [c for c in fake.calls if c.status == 429]
        assert refused
        for call in refused:
            again = [c for c in fake.calls if c.method == call.method and c.at > call.at
                     and c.params.get("text") == call.params.get("text") and c.params.get("chat_id") == call.params.get("chat_id")]
            if again:
                assert again[0].at - call.at >= 1.0
        assert not [t for t in env.texts() if t.startswith("Sorry")]
        assert status["text"].endswith(f"Run {(await env.app.list_runs('telegram-42')).items[0]['jobRunId']}")


async def test_outputs_at_telegrams_limits_all_arrive_each_in_a_form_it_takes(db_url: str, tmp_path: Path) -> None:
    story = "Once upon a time. " * 150  # 2,700 characters; the job doubles it
    async with telegram_env(tmp_path, database_url=db_url) as env:
        fake = env.fake
        await env.send(fake.message_update(f"/edges {story.strip()}", photo=jpeg()))
        (done,) = await fake.wait_for(lambda: results(env), timeout=60)
        assert not [c for c in fake.calls if c.status != 200]  # the strict fake refused nothing
        (album,) = fake.calls_of("sendMediaGroup")
        assert [m.get("caption") for m in album.params["media"]] == ["small", "smaller"]  # captioned by output
        documents = {c.files["document"][0]: c for c in fake.calls_of("sendDocument")}
        assert set(documents) == {"cropped.jpg", "converted.tiff", "story.txt"}
        assert documents["cropped.jpg"].params["caption"] == "strip"  # 640x20: over the ratio, so a document
        assert documents["converted.tiff"].params["caption"] == "tiff"  # no photo format: a document
        text = documents["story.txt"].files["document"][2].decode()
        assert text == story.strip() + story.strip()  # the whole text, not cut at 600 characters
        assert "story: 5,398 characters, sent as story.txt" in done["text"]
        assert not fake.calls_of("sendPhoto")


async def test_a_part_telegram_refuses_goes_another_way_and_the_rest_still_arrives(db_url: str, tmp_path: Path) -> None:
    async with telegram_env(tmp_path, database_url=db_url) as env:
        fake = env.fake
        fake.fail("sendMediaGroup", 400, description="Bad Request: IMAGE_PROCESS_FAILED")
        fake.fail("sendPhoto", 400, description="Bad Request: PHOTO_INVALID_DIMENSIONS")
        await env.send(fake.message_update("/variants", photo=jpeg(120, 90)))
        (done,) = await fake.wait_for(lambda: results(env), timeout=60)
        # the album went item by item; the first photo was refused and went as a document
        assert [c.status for c in fake.calls if c.method == "sendMediaGroup"] == [400]
        assert [c.status for c in fake.calls if c.method == "sendPhoto"] == [400, 200]
        names = sorted(c.files["document"][0] for c in fake.calls_of("sendDocument"))
        assert names == ["adjusted.jpg", "sheet.png"]
        assert "bright: sent as a file (Telegram refused it as a photo: Bad Request: PHOTO_INVALID_DIMENSIONS)" in done["text"]
        (row,) = [r for r in await settled(env) if r["event_type"].startswith("run.")]
        assert row["status"] == "delivered" and row["attempts"] == 1


async def test_given_up_notifications_are_logged_listed_and_sent_again(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="toolweave")
    async with telegram_env(tmp_path, database_url=db_url, notification_horizon_seconds=1.0,
                            notification_max_backoff_seconds=0.2) as env:
        fake = env.fake
        fake.outage(600.0)  # until the test ends it
        await env.send(fake.message_update("/card Lost at first"))
        for _ in range(600):  # the status message and the result, both given up
            rows = await notifications(env)
            if len(rows) == 2 and all(r["status"] != "pending" for r in rows):
                break
            await asyncio.sleep(0.1)
        assert {r["status"] for r in rows} == {"failed"}
        undelivered = await env.app.undelivered_notifications(channel="telegram")
        assert {r["event_type"] for r in undelivered} == {"status", "run.completed"}
        errors = [r for r in caplog.records if r.levelno == logging.ERROR and "giving up notification" in r.getMessage()]
        assert len(errors) == 2 and "502" in errors[0].getMessage()
        assert fake.token not in caplog.text
        listed = json.loads(await _cli(env, db_url, tmp_path, "notifications", "undelivered", "--json"))
        assert sorted(r["notificationId"] for r in listed) == sorted(r["notification_id"] for r in undelivered)
        assert all(r["to"] == 42 and "502" in r["lastError"] for r in listed)
        fake.outage(0)
        out = await _cli(env, db_url, tmp_path, "notifications", "resend", *[r["notificationId"] for r in listed])
        assert "Queued 2 notifications again" in out
        (done,) = await fake.wait_for(lambda: results(env), timeout=60)
        assert "Card: Lost at first" in done["text"]
        await fake.wait_for(lambda: status_messages(env))
        await settled(env)
        assert len(status_messages(env)) == 1
        assert await env.app.undelivered_notifications() == []


async def _cli(env: TelegramEnv, db_url: str, tmp_path: Path, *args: str) -> str:
    """``toolweave ARGS`` as a process on the test's store; its standard output."""
    environ = {**os.environ, "TOOLWEAVE_HOME": str(tmp_path), "TOOLWEAVE_DATABASE_URL": db_url,
               "TOOLWEAVE_TELEGRAM_TOKEN": env.fake.token}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "toolweave.cli", *args, env=environ, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_an_update_handed_out_twice_is_handled_once(db_url: str, tmp_path: Path) -> None:
    async with telegram_env(tmp_path, database_url=db_url) as env:
        fake = env.fake
        help_update = fake.message_update("/help")
        card = fake.message_update("/card once")
        for update in (help_update, card, help_update, card):
            await env.send(update)
        await fake.wait_for(lambda: results(env))
        await settled(env)
        assert len([t for t in env.texts() if "/status —" in t]) == 1
        assert len(status_messages(env)) == 1 and len(results(env)) == 1
        assert len((await env.app.list_runs("telegram-42")).items) == 1
        assert await env.app.kv_get("telegram.updates", str(help_update["update_id"])) is not None


async def test_an_update_whose_replies_cannot_be_queued_is_handed_out_again(db_url: str, tmp_path: Path) -> None:
    import httpx
    from fastapi import FastAPI
    from tests.helpers.loopback import serve_asgi

    from toolweave.telegram.webhook import SECRET_HEADER, TelegramWebhook

    async with telegram_env(tmp_path, database_url=db_url, telegram_webhook_secret="s3cret") as env:
        fake = env.fake
        # the outbox cannot be written (a broken store): nothing can be queued
        await env.app.store.tx(lambda tx: tx.q("ALTER TABLE notifications RENAME TO notifications_away"))
        hook = TelegramWebhook(env.app, bot=env.bot)
        api = FastAPI()
        api.include_router(hook.router)
        async with serve_asgi(api) as base, httpx.AsyncClient(base_url=base) as http:
            hooked = fake.message_update("/help")
            refused = await http.post("/telegram/webhook", json=hooked, headers={SECRET_HEADER: "s3cret"})
            assert refused.status_code == 500  # Telegram sends it again
            polled = fake.message_update("/status")
            fake.push(polled)
            stop = asyncio.Event()
            poller = asyncio.create_task(env.bot.poll(stop, timeout=1))
            try:
                await fake.wait_for(lambda: len(fake.calls_of("getUpdates")) >= 2, timeout=30)
                # the store comes back only while the poller waits for Telegram, never while it
                # handles the update: a store that came back between the failed reply and the
                # "Sorry" would have the update answered with "Sorry" (a reply that could be queued)
                fake.hold("getUpdates")
                (asked,) = await fake.wait_for(lambda: [c for c in fake.held if c.method == "getUpdates"], timeout=30)
                assert asked.params.get("offset") is None  # handed out twice, confirmed by neither call
                assert fake.updates == [polled]
                assert not fake.calls_of("sendMessage")
                assert await env.app.kv_get("telegram.updates", str(polled["update_id"])) is None
                await env.app.store.tx(lambda tx: tx.q("ALTER TABLE notifications_away RENAME TO notifications"))
                again = await http.post("/telegram/webhook", json=hooked, headers={SECRET_HEADER: "s3cret"})
                assert again.status_code == 200 and again.json()["handled"] is True
                fake.release()  # the held call hands the update out a third time, to the same poller
                await fake.wait_for(lambda: not fake.updates, timeout=60)  # confirmed once handled
                await fake.wait_for(lambda: len(env.texts()) == 2, timeout=30)
            finally:
                fake.release()
                stop.set()
                await asyncio.wait_for(poller, 30)
        texts = env.texts()
        assert len(texts) == 2
        assert len([t for t in texts if "/status —" in t]) == 1
        assert len([t for t in texts if t.startswith("You have no runs yet")]) == 1
