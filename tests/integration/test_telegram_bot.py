"""The Telegram bot against a fake Bot API server on loopback (real HTTP), a real App and worker."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from PIL import Image
from tests.fakes.telegram_api import TelegramEnv, telegram_env


def jpeg(width: int = 120, height: int = 90, color: str = "teal") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, "JPEG")
    return buffer.getvalue()


def is_done(env: TelegramEnv, chat_id: int = 42) -> Any:
    return [m for m in env.replies(chat_id) if (m.get("text") or "").startswith(("✅", "⚠️", "❌", "🚫"))
            and any("r:" in b.get("callback_data", "") for row in (m.get("reply_markup") or {}).get("inline_keyboard", []) for b in row)]


async def test_reply_to_photo_runs_the_job_shows_steps_and_delivers_the_image(tmp_path: Path) -> None:
    async with telegram_env(tmp_path) as env:
        fake = env.fake
        photo_msg = fake.user_message(photo=jpeg())
        await env.send({"update_id": fake.next_update_id(), "message": photo_msg})
        command = fake.message_update("/stamp Hello there", reply_to=photo_msg)
        await env.send(command)
        await fake.wait_for(lambda: fake.calls_of("sendPhoto"))
        await fake.wait_for(lambda: is_done(env))
        # the photo was downloaded through the Bot API file route
        assert fake.downloads and fake.downloads[0].startswith("photos/")
        # one status message, replying to the command, with a Cancel button, edited to the end
        statuses = [m for m in env.replies() if "Run run_" in (m.get("text") or "")]
        assert len(statuses) == 1
        status = statuses[0]
        assert status["_reply_to"] == command["message"]["message_id"]
        final = await fake.wait_for(lambda: "done" in (fake.message(42, status["message_id"]).get("text") or "") and fake.message(42, status["message_id"]))
        assert "shrink — done" in final["text"] and "stamp — done" in final["text"]
        assert "reply_markup" not in final  # no Cancel button once finished
        first = next(c for c in fake.calls_of("sendMessage") if "Run run_" in c.params.get("text", ""))
        assert first.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"].startswith("c:run_")
        # the result: one photo replying to the command
        (photo_call,) = fake.calls_of("sendPhoto")
        _filename, ctype, data = photo_call.files["photo"]
        assert ctype.startswith("image/") and Image.open(io.BytesIO(data)).size[0] == 64
        run = await env.run_of("telegram-42")
        detail = await env.app.get_run(run["jobRunId"])
        assert detail["status"] == "completed"
        assert detail["origin"]["platform"] == "telegram" and detail["origin"]["chatId"] == 42
        await fake.wait_for(lambda: _notes_delivered(env, run["jobRunId"]))


def _notes_delivered(env: TelegramEnv, run_id: str) -> bool:
    return True
