"""``toolweave telegram`` as a real process: long polling against the fake Bot API server, with its
embedded worker; a photo answered with a command comes back processed; SIGINT stops it cleanly."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import sys
from pathlib import Path

from PIL import Image
from tests.fakes.telegram_api import DEFINITIONS, FakeTelegram
from tests.helpers.loopback import serve_asgi


def jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (200, 150), "navy").save(buffer, "JPEG")
    return buffer.getvalue()


async def test_toolweave_telegram_runs_a_job_from_a_photo_reply(tmp_path: Path) -> None:
    fake = FakeTelegram()
    async with serve_asgi(fake.asgi()) as url:
        env = {
            **os.environ,
            "TOOLWEAVE_HOME": str(tmp_path / "home"),
            "TOOLWEAVE_DEFINITIONS": str(DEFINITIONS),
            "TOOLWEAVE_TELEGRAM_TOKEN": fake.token,
            "TOOLWEAVE_TELEGRAM_API_URL": url,
            "TOOLWEAVE_TELEGRAM_EDIT_INTERVAL_SECONDS": "0.2",
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "toolweave.cli", "telegram", "--slots", "2", "--log-level", "DEBUG",
            cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        try:
            await fake.wait_for(lambda: fake.calls_of("getUpdates"), timeout=60)
            assert fake.calls_of("setMyCommands")
            photo = fake.user_message(photo=jpeg())
            fake.push({"update_id": fake.next_update_id(), "message": photo},
                      fake.message_update("/stamp Made in toolweave", reply_to=photo))
            (sent,) = await fake.wait_for(lambda: fake.calls_of("sendPhoto"), timeout=60)
            assert Image.open(io.BytesIO(sent.files["photo"][2])).size[0] == 64
            status = await fake.wait_for(
                lambda: [m for m in fake.sent_to(42) if (m.get("text") or "").startswith("✅ Stamp — done")], timeout=30
            )
            assert "stamp — done" in status[0]["text"]
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGINT)
            _out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, err.decode(errors="replace")[-2000:]
        log = err.decode(errors="replace")
        assert "polling for updates" in log
        assert fake.token not in log
