"""Messages to one chat arrive in the order they were queued, on both stores: while a chat's
message waits for a retry (a 429 for that chat), its later messages — the run's results, the next
run's status message — wait too, and another chat is served meanwhile."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

from PIL import Image
from tests.fakes.telegram_api import Call, TelegramEnv, telegram_env


def jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (120, 90), "olive").save(buffer, "JPEG")
    return buffer.getvalue()


async def rows(env: TelegramEnv) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = await env.app.store.read(
        lambda tx: [dict(r) for r in tx.all("SELECT * FROM notifications ORDER BY created_at")])
    return found


async def settled(env: TelegramEnv, count: int, timeout: float = 90.0) -> list[dict[str, Any]]:
    for _ in range(int(timeout / 0.1)):
        found = await rows(env)
        if len(found) >= count and all(r["status"] != "pending" for r in found):
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"not settled: {[(r['event_type'], r['status'], r['last_error']) for r in await rows(env)]}")


def sent(env: TelegramEnv, chat_id: int) -> list[Call]:
    """The calls that put a message into ``chat_id``, in the order Telegram took them."""
    return [c for c in env.fake.calls_of("sendMessage", "sendPhoto", "sendMediaGroup", "sendDocument", "sendVideo")
            if c.params.get("chat_id") == chat_id]


def what(call: Call) -> str:
    if call.method != "sendMessage":
        return call.method
    text = str(call.params.get("text"))
    return "status" if "\nRun run_" in text else text.split("\n")[0]


async def test_a_chat_waiting_for_a_retry_holds_back_its_later_messages_and_no_other_chat(
    db_url: str, tmp_path: Path
) -> None:
    async with telegram_env(tmp_path, database_url=db_url) as env:
        fake = env.fake
        fake.fail("sendMessage", 429, retry_after=3, chat_id=42)  # the first message to chat 42 only
        await env.send(fake.message_update("/variants", photo=jpeg()))
        # the run ends while its status message waits for its retry: its results are queued behind it
        for _ in range(600):
            if any(r["event_type"].startswith("run.") for r in await rows(env)):
                break
            await asyncio.sleep(0.1)
        await env.send(fake.message_update("/card second"))  # the next run, queued later still
        await env.send(fake.message_update("/status", user_id=43))  # another chat
        found = await settled(env, 5)
        assert {r["status"] for r in found} == {"delivered"}
        order = [what(c) for c in sent(env, 42)]
        assert order == ["status", "sendMediaGroup", "sendDocument", "✅ Variants is done.", "status",
                         "✅ Card is done."], order
        ids = [m["message_id"] for m in env.replies(42)]
        assert ids == sorted(ids) and len(ids) == 7  # the album is two messages
        (refused,) = [c for c in fake.calls if c.status == 429]
        first_ok = sent(env, 42)[0]
        assert first_ok.at - refused.at >= 3.0  # retry_after honoured
        # chat 43 was answered while chat 42 waited
        (answer,) = sent(env, 43)
        assert str(answer.params["text"]).startswith("You have no runs yet")
        assert refused.at < answer.at < first_ok.at
        # nothing was counted as an attempt while it only waited its turn
        by_kind = [(r["event_type"], r["attempts"]) for r in found if r["target"]["chatId"] == 42]
        assert sorted(by_kind) == sorted([("status", 2), ("run.completed", 1), ("status", 1), ("run.completed", 1)])
