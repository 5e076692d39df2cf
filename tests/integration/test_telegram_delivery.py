"""Deliveries through the outbox (retries on 429 and 5xx), long polling with malformed and
unexpected updates, the webhook route, and the token staying out of logs, the store and backends."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from PIL import Image
from tests.fakes.telegram_api import TelegramEnv, telegram_env
from tests.helpers.loopback import serve_asgi

from toolweave.telegram.webhook import SECRET_HEADER, TelegramWebhook


def jpeg(color: str = "orange") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (100, 80), color).save(buffer, "JPEG")
    return buffer.getvalue()


def results(env: TelegramEnv, chat_id: int = 42) -> list[dict[str, Any]]:
    return [m for m in env.replies(chat_id) if (m.get("text") or "").startswith(("✅", "⚠️", "❌", "🚫"))
            and "r:" in json.dumps(m.get("reply_markup") or {})]


async def settled(env: TelegramEnv, run_id: str) -> dict[str, Any]:
    for _ in range(600):
        detail = await env.app.get_run(run_id)
        if detail["notifications"] and all(n["status"] != "pending" for n in detail["notifications"]):
            return detail
        await asyncio.sleep(0.05)
    raise AssertionError("the notification is still pending")


async def only_run(env: TelegramEnv) -> str:
    (item,) = (await env.app.list_runs("telegram-42")).items
    return str(item["jobRunId"])


async def test_429_and_500_are_retried_and_recorded_without_sending_twice(tmp_path: Path) -> None:
    async with telegram_env(tmp_path) as env:
        fake = env.fake
        fake.fail("sendMediaGroup", 429, retry_after=1)
        fake.fail("sendDocument", 500)
        await env.send(fake.message_update("/variants", photo=jpeg()))
        await fake.wait_for(lambda: results(env), timeout=60)
        detail = await settled(env, await only_run(env))
        (note,) = detail["notifications"]
        assert note["channel"] == "telegram" and note["status"] == "delivered"
        assert note["attempts"] == 3  # 429, then 500, then delivered
        groups = [c for c in fake.calls if c.method == "sendMediaGroup"]
        assert [c.status for c in groups] == [429, 200]  # the group went out once
        documents = [c for c in fake.calls if c.method == "sendDocument"]
        assert [c.status for c in documents] == [500, 200]
        # the 429's retry_after was honoured
        assert groups[1].at - groups[0].at >= 1.0
        sent = await env.app.kv_get("telegram.sent", note["notificationId"])
        assert sent["done"] == sent["of"] == 3
        assert [s["method"] for s in sent["sent"]] == ["sendMediaGroup", "sendDocument", "sendMessage"]
        assert len(sent["sent"][0]["messageIds"]) == 2


async def test_a_4xx_is_not_retried_and_the_error_is_recorded(tmp_path: Path) -> None:
    async with telegram_env(tmp_path) as env:
        fake = env.fake
        fake.fail("sendPhoto", 403, description="Forbidden: bot was blocked by the user")
        await env.send(fake.message_update("/card hello", photo=jpeg()))
        detail = await settled(env, await only_run(env))
        (note,) = detail["notifications"]
        assert note["status"] == "failed" and note["attempts"] == 1
        assert "sendPhoto" in note["lastError"] and "403" in note["lastError"] and "blocked" in note["lastError"]
        assert fake.token not in note["lastError"]


async def test_long_polling_survives_malformed_and_unexpected_updates(tmp_path: Path) -> None:
    async with telegram_env(tmp_path) as env:
        fake = env.fake
        valid_before = fake.message_update("/card first")
        garbage: list[Any] = [
            {"update_id": fake.next_update_id(), "message": "not an object"},
            {"update_id": fake.next_update_id(), "message": {"message_id": "x", "chat": 5}},
            {"update_id": fake.next_update_id(), "edited_message": fake.user_message("/card edited")},
            {"update_id": fake.next_update_id(), "channel_post": {"message_id": 1, "date": 0, "chat": {"id": -100, "type": "channel"}, "text": "/card hi"}},
            {"update_id": fake.next_update_id(), "poll": {"id": "p", "question": "?", "options": [], "total_voter_count": 0,
                                                       "is_closed": False, "is_anonymous": True, "type": "regular",
                                                       "allows_multiple_answers": False}},
            {"update_id": fake.next_update_id(), "something_new": {"from": "the future"}},
            fake.message_update(None),  # no text at all
            {"update_id": fake.next_update_id(), "message": {**fake.user_message(None), "sticker": {
                "file_id": "s", "file_unique_id": "us", "type": "regular", "width": 1, "height": 1,
                "is_animated": False, "is_video": False}}},
            fake.message_update("/card@some_other_bot not for us", chat_id=-5),
            fake.callback_update("zzz", message=fake.user_message("x")),
            fake.callback_update("r:run_DOESNOTEXIST", message=fake.user_message("x")),
        ]
        valid_after = fake.message_update("/card@toolweave_test_bot second")
        fake.push(valid_before, *garbage, valid_after)
        stop = asyncio.Event()
        poller = asyncio.create_task(env.bot.poll(stop, timeout=1))
        try:
            await fake.wait_for(lambda: len(results(env)) >= 2, timeout=60)
            # everything was confirmed (offset past the last update) and the poller is still running
            await fake.wait_for(lambda: not fake.updates)
            assert not poller.done()
        finally:
            stop.set()
            await asyncio.wait_for(poller, 10)
        texts = sorted(m["text"] for m in results(env))
        assert "Card: first" in texts[0] and "Card: second" in texts[1]
        rejected = await env.app.kv_items("telegram.rejected")
        keys = {key for key, _ in rejected}
        assert {str(garbage[0]["update_id"]), str(garbage[1]["update_id"])} <= keys  # kept for inspection
        assert str(valid_after["update_id"]) not in keys
        answers = [c.params.get("text") for c in fake.calls_of("answerCallbackQuery")]
        assert "This button is no longer supported." in answers and "That run is not yours." in answers
        assert len((await env.app.list_runs("telegram-42")).items) == 2
        # a group chat's command for another bot got no answer
        assert env.replies(-5) == []


async def test_polling_delivers_an_update_again_without_running_it_twice(tmp_path: Path) -> None:
    async with telegram_env(tmp_path) as env:
        fake = env.fake
        update = fake.message_update("/card once")
        await env.send(update)
        await env.send(update)  # Telegram hands an unconfirmed update out again after a crash
        await fake.wait_for(lambda: results(env))
        assert len((await env.app.list_runs("telegram-42")).items) == 1
        assert len([m for m in env.replies() if "\nRun run_" in (m.get("text") or "")]) == 1


async def test_webhook_route_checks_the_secret_token(tmp_path: Path) -> None:
    async with telegram_env(tmp_path, start_bot=False, telegram_webhook_secret="s3cret-Token_1") as env:
        fake = env.fake
        hook = TelegramWebhook(env.app, bot=env.bot)
        api = FastAPI()
        api.include_router(hook.router)
        await hook.start()
        async with serve_asgi(api) as base, httpx.AsyncClient(base_url=base) as http:
            update = fake.message_update("/card via webhook")
            refused = await http.post("/telegram/webhook", json=update)
            wrong = await http.post("/telegram/webhook", json=update, headers={SECRET_HEADER: "nope"})
            assert refused.status_code == wrong.status_code == 403
            assert (await env.app.list_runs("telegram-42")).items == []
            bad = await http.post("/telegram/webhook", content=b"{not json", headers={SECRET_HEADER: "s3cret-Token_1"})
            assert bad.status_code == 400
            odd = await http.post("/telegram/webhook", json=[1, 2], headers={SECRET_HEADER: "s3cret-Token_1"})
            assert odd.status_code == 200 and odd.json()["handled"] is False
            ok = await http.post("/telegram/webhook", json=update, headers={SECRET_HEADER: "s3cret-Token_1"})
            assert ok.status_code == 200 and ok.json()["handled"] is True
            await fake.wait_for(lambda: results(env))
            await hook.set_webhook("https://bot.example.org/telegram/webhook")
            assert fake.webhook is not None and fake.webhook["secret_token"] == "s3cret-Token_1"
        await hook.stop()


def test_webhook_mode_needs_a_secret(tmp_path: Path) -> None:
    from toolweave.app import App
    from toolweave.settings import Settings

    app = App(Settings(home=tmp_path, telegram_token="1:abc"))
    try:
        with pytest.raises(ValueError, match="telegram_webhook_secret"):
            TelegramWebhook(app)
    finally:
        asyncio.run(app.aclose())


async def test_the_token_stays_out_of_logs_the_store_and_backends(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with telegram_env(tmp_path / "home") as env:
        fake = env.fake
        fake.fail("sendPhoto", 500)
        photo = fake.user_message(photo=jpeg())
        await env.send({"update_id": fake.next_update_id(), "message": photo})
        await env.send(fake.message_update("/stamp secret-free", reply_to=photo))
        await fake.wait_for(lambda: results(env), timeout=60)
        run_id = await only_run(env)
        detail = await settled(env, run_id)
        assert detail["notifications"][0]["attempts"] == 2
        dumped = json.dumps(detail)
        assert fake.token not in dumped
        assert "file/bot" not in dumped and "api.telegram" not in dumped
    assert fake.downloads  # the photo came through the file URL, which holds the token ...
    assert fake.token not in caplog.text  # ... but no log line shows it
    assert "<token>" in caplog.text  # (httpx and python-telegram-bot did log the URLs, redacted)
    for path in (tmp_path / "home").rglob("*"):
        if path.is_file():
            with contextlib.suppress(OSError):
                assert fake.token.encode() not in path.read_bytes(), path.name


async def test_a_worker_process_without_the_bot_redacts_the_token_too(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from toolweave.app import App
    from toolweave.settings import Settings

    token = "987654:WORKER-only-token-xyz"
    app = App(Settings(home=tmp_path, telegram_token=token))  # registers the telegram channel
    try:
        with caplog.at_level(logging.INFO):
            logging.getLogger("httpx").info("HTTP Request: POST %s", f"https://api.telegram.org/bot{token}/sendPhoto")
        assert token not in caplog.text and "bot<token>/sendPhoto" in caplog.text
    finally:
        await app.aclose()


async def test_the_http_server_mounts_the_webhook_route_when_configured(tmp_path: Path) -> None:
    from toolweave.api.server import create_app

    async with telegram_env(tmp_path, start_bot=False, worker=False, telegram_webhook_secret="s3cret-Token_1") as env:
        server = create_app(env.app, run_worker=True, slots=2)
        async with server.router.lifespan_context(server), serve_asgi(server) as base, httpx.AsyncClient(
            base_url=base
        ) as http:
            update = env.fake.message_update("/card through the server")
            assert (await http.post("/telegram/webhook", json=update)).status_code == 403
            ok = await http.post("/telegram/webhook", json=update, headers={SECRET_HEADER: "s3cret-Token_1"})
            assert ok.status_code == 200 and ok.json()["handled"] is True
            await env.fake.wait_for(lambda: results(env))
