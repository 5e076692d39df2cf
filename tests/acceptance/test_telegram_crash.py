"""``toolweave telegram`` killed (SIGKILL) after Telegram accepted a message and before the bot
learnt of it, then started again, on both stores: an album is not sent twice (the closing message
says it may be missing and its button sends it again), and the status message the dead process
left behind is adopted when its Cancel button is pressed (edited to the run's state)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from PIL import Image
from tests.fakes.telegram_api import DEFINITIONS, FakeTelegram
from tests.helpers.loopback import serve_asgi


def jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (160, 120), "navy").save(buffer, "JPEG")
    return buffer.getvalue()


def _buttons(message: dict[str, Any]) -> list[str]:
    rows = (message.get("reply_markup") or {}).get("inline_keyboard", [])
    return [b.get("callback_data", "") for row in rows for b in row]


@asynccontextmanager
async def bot_process(fake: FakeTelegram, url: str, home: Path, db_url: str) -> AsyncIterator[asyncio.subprocess.Process]:
    env = {
        **os.environ,
        "TOOLWEAVE_HOME": str(home),
        "TOOLWEAVE_DATABASE_URL": db_url,
        "TOOLWEAVE_DEFINITIONS": str(DEFINITIONS),
        "TOOLWEAVE_TELEGRAM_TOKEN": fake.token,
        "TOOLWEAVE_TELEGRAM_API_URL": url,
        "TOOLWEAVE_TELEGRAM_EDIT_INTERVAL_SECONDS": "0.2",
        "TOOLWEAVE_LEASE_SECONDS": "2",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "toolweave.cli", "telegram", "--slots", "2",
        cwd=home.parent, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(process.communicate(), 60)
            except TimeoutError:
                process.kill()
                await process.wait()


async def _killed(process: asyncio.subprocess.Process) -> None:
    process.send_signal(signal.SIGKILL)
    await process.wait()


async def test_a_crash_after_telegram_took_an_album_does_not_send_it_twice(db_url: str, tmp_path: Path) -> None:
    fake = FakeTelegram()
    home = tmp_path / "home"
    async with serve_asgi(fake.asgi()) as url:
        fake.hold("sendMediaGroup")
        async with bot_process(fake, url, home, db_url) as first:
            await fake.wait_for(lambda: fake.calls_of("getUpdates"), timeout=60)
            fake.push(fake.message_update("/variants", photo=jpeg()))
            await fake.wait_for(lambda: fake.held, timeout=60)  # Telegram has the album ...
            await _killed(first)  # ... and the bot dies before it hears so
        fake.release()
        assert len(fake.calls_of("sendMediaGroup")) == 1
        async with bot_process(fake, url, home, db_url):
            closing = await fake.wait_for(
                lambda: [m for m in fake.sent_to(42) if (m.get("text") or "").startswith("✅ Variants is done.")], timeout=90)
            (done,) = closing
            assert len(fake.calls_of("sendMediaGroup")) == 1  # not sent again unasked
            assert "bright, dark: sending was interrupted" in done["text"]
            (again,) = [b for b in _buttons(done) if b.startswith("s:")]
            assert any(b.startswith("r:") for b in _buttons(done))
            assert [c.files["document"][0] for c in fake.calls_of("sendDocument")] == ["sheet.png"]
            # the user says it is missing: it is sent again
            fake.push(fake.callback_update(again, message=done))
            await fake.wait_for(lambda: len(fake.calls_of("sendMediaGroup")) == 2, timeout=60)
            answers = await fake.wait_for(lambda: fake.calls_of("answerCallbackQuery"), timeout=30)
            assert answers[0].params["text"] == "Sending it again."
            # another user may not ask for it
            fake.push(fake.callback_update(again, message=done, user_id=7))
            await fake.wait_for(lambda: len(fake.calls_of("answerCallbackQuery")) == 2, timeout=30)
            assert fake.calls_of("answerCallbackQuery")[1].params["text"] == "That is not yours to ask for."
            assert len(fake.calls_of("sendMediaGroup")) == 2


async def test_a_crash_after_telegram_took_a_status_message_strands_nothing(db_url: str, tmp_path: Path) -> None:
    fake = FakeTelegram()
    home = tmp_path / "home"
    async with serve_asgi(fake.asgi()) as url:
        fake.hold("sendMessage")
        async with bot_process(fake, url, home, db_url) as first:
            await fake.wait_for(lambda: fake.calls_of("getUpdates"), timeout=60)
            fake.push(fake.message_update("/card After the crash"))
            (held,) = await fake.wait_for(lambda: fake.held, timeout=60)
            assert "\nRun run_" in held.params["text"]  # the status message, with its Cancel button
            await _killed(first)
        fake.release()
        (stranded,) = [m for m in fake.sent_to(42) if "\nRun run_" in (m.get("text") or "")]
        assert _buttons(stranded)[0].startswith("c:run_")
        async with bot_process(fake, url, home, db_url):
            await fake.wait_for(
                lambda: [m for m in fake.sent_to(42) if (m.get("text") or "").startswith("✅ Card is done.")], timeout=90)
            # the restarted bot sent the status message again (it could not know the first arrived)
            statuses = await fake.wait_for(
                lambda: len(s := [m for m in fake.sent_to(42) if "\nRun run_" in (m.get("text") or "")]) == 2 and s,
                timeout=60)
            replacement = next(m for m in statuses if m["message_id"] != stranded["message_id"])
            await fake.wait_for(lambda: (fake.message(42, replacement["message_id"]).get("text") or "").startswith("✅"),
                                timeout=60)
            # the one left behind still offers Cancel; pressing it brings it up to date
            fake.push(fake.callback_update(_buttons(stranded)[0], message=stranded))
            final = await fake.wait_for(
                lambda: (fake.message(42, stranded["message_id"]).get("text") or "").startswith("✅")
                and fake.message(42, stranded["message_id"]), timeout=60)
            assert "reply_markup" not in final
            (answer,) = fake.calls_of("answerCallbackQuery")
            assert answer.params["text"] == "It has already finished."
            assert len([m for m in fake.sent_to(42) if (m.get("text") or "").startswith("✅ Card is done.")]) == 1
            assert json.dumps(final)
