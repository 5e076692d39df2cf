"""``toolweave telegram`` killed (SIGKILL) after Telegram accepted a message and before the bot
learnt of it, then started again, on both stores: the restarted bot finds what the dead one left
(probing edits that change nothing): the album is not sent again nor said to be missing, and the
status message left behind becomes the run's status message, edited to its final state — one
status message, no live Cancel button on a stale one."""

from __future__ import annotations

import asyncio
import io
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
async def bot_process(fake: FakeTelegram, url: str, home: Path, db_url: str, *,
                      worker: bool = True) -> AsyncIterator[asyncio.subprocess.Process]:
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
        sys.executable, "-m", "toolweave.cli", "telegram", *(["--slots", "2"] if worker else ["--no-worker"]),
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
        album = [m for m in fake.sent_to(42) if m.get("photo")]
        async with bot_process(fake, url, home, db_url):
            closing = await fake.wait_for(
                lambda: [m for m in fake.sent_to(42) if (m.get("text") or "").startswith("✅ Variants is done.")], timeout=90)
            (done,) = closing
            # the restarted bot found the album (probing its captions) and went on after it
            assert len(fake.calls_of("sendMediaGroup")) == 1
            assert [m for m in fake.sent_to(42) if m.get("photo")] == album
            assert [m["caption"] for m in album] == ["bright", "dark"]
            assert "interrupted" not in done["text"]
            assert [b for b in _buttons(done) if not b.startswith("r:")] == []  # nothing to send again
            assert [c.files["document"][0] for c in fake.calls_of("sendDocument")] == ["sheet.png"]
            # the documents and the closing message came after the album, in order
            ids = [m["message_id"] for m in fake.sent_to(42)]
            assert ids == sorted(ids) and done["message_id"] == ids[-1]


async def test_a_crash_while_an_album_goes_item_by_item_sends_no_item_twice_and_loses_none(
        db_url: str, tmp_path: Path) -> None:
    fake = FakeTelegram()
    home = tmp_path / "home"
    async with serve_asgi(fake.asgi()) as url:
        # Telegram refuses the album as a whole (every time), so its photos go one by one; it takes
        # the first one and the bot dies before it hears so
        fake.fail("sendMediaGroup", 400, times=10, description="Bad Request: IMAGE_PROCESS_FAILED")
        fake.hold("sendPhoto")
        async with bot_process(fake, url, home, db_url) as first:
            await fake.wait_for(lambda: fake.calls_of("getUpdates"), timeout=60)
            fake.push(fake.message_update("/variants", photo=jpeg()))
            (held,) = await fake.wait_for(lambda: fake.held, timeout=60)
            assert held.params.get("caption") == "bright"
            await _killed(first)
        fake.release()
        async with bot_process(fake, url, home, db_url):
            (done,) = await fake.wait_for(
                lambda: [m for m in fake.sent_to(42) if (m.get("text") or "").startswith("✅ Variants is done.")], timeout=90)
            # the restarted bot found the photo the dead one sent, and sent the other one
            assert [m.get("caption") for m in fake.sent_to(42) if m.get("photo")] == ["bright", "dark"]
            assert "interrupted" not in done["text"]
            assert [b for b in _buttons(done) if not b.startswith("r:")] == []
            assert [c.files["document"][0] for c in fake.calls_of("sendDocument")] == ["sheet.png"]


async def test_a_crash_after_telegram_took_a_status_message_strands_nothing(db_url: str, tmp_path: Path) -> None:
    fake = FakeTelegram()
    home = tmp_path / "home"
    async with serve_asgi(fake.asgi()) as url:
        fake.hold("sendMessage")
        # no worker in the first bot: the run is unfinished when its status message is sent (with
        # its Cancel button), however fast the run is once the restarted bot's worker takes it
        async with bot_process(fake, url, home, db_url, worker=False) as first:
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
            # the restarted bot found the message the dead one left and made it the run's status
            # message: one status message, in the run's final state, with no Cancel button
            final = await fake.wait_for(
                lambda: (fake.message(42, stranded["message_id"]).get("text") or "").startswith("✅")
                and fake.message(42, stranded["message_id"]), timeout=60)
            assert "reply_markup" not in final
            assert [m for m in fake.sent_to(42) if "\nRun run_" in (m.get("text") or "")] == [final]
            assert len([c for c in fake.calls_of("sendMessage") if "\nRun run_" in str(c.params.get("text"))]) == 1
            assert len([m for m in fake.sent_to(42) if (m.get("text") or "").startswith("✅ Card is done.")]) == 1
