"""Messages to one chat arrive in the order they were queued, on both stores: while a chat's
message waits for a retry (a 429 for that chat), its later messages — the run's results, the next
run's status message — wait too, and another chat is served meanwhile. A run's status message is
queued with the run, so it comes before the run's result however fast the run ends."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from tests.fakes.telegram_api import DEFINITIONS, Call, TelegramEnv, telegram_env

from toolweave.model.status import RunStatus


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


async def test_a_run_that_ends_before_the_bot_goes_on_still_has_its_status_message_first(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with telegram_env(tmp_path, database_url=db_url) as env:
        fake = env.fake
        submit = env.app.submit
        ended: list[str] = []

        async def submit_and_let_it_end(target_id: str, inputs: Any = None, **options: Any) -> str:
            # the interleaving a fast run (or a busy bot) makes: the run ends, and its result is
            # queued, before the bot's submit goes on
            run_id = await submit(target_id, inputs, **options)
            for _ in range(1200):
                run = await env.app.get_run(run_id)
                if RunStatus(run["status"]).terminal:
                    ended.append(run_id)
                    return run_id
                await asyncio.sleep(0.05)
            raise AssertionError(f"{run_id} did not end")

        monkeypatch.setattr(env.app, "submit", submit_and_let_it_end)
        await env.send(fake.message_update("/card Fast"))
        assert ended
        found = await settled(env, 2)
        assert [r["event_type"] for r in found] == ["status", "run.completed"]  # queued in that order
        assert {r["status"] for r in found} == {"delivered"}
        assert [what(c) for c in sent(env, 42)] == ["status", "✅ Card is done."]
        # and the tracker brings the status message to the run's end
        (status,) = [m for m in env.replies(42) if "\nRun run_" in (m.get("text") or "")]
        await fake.wait_for(lambda: (fake.message(42, status["message_id"]).get("text") or "").startswith("✅"))


async def test_a_run_that_ends_in_its_submit_transaction_has_its_status_message_first(
    db_url: str, tmp_path: Path
) -> None:
    extra = tmp_path / "defs"
    extra.mkdir()
    (extra / "maybe.yaml").write_text(MAYBE)
    async with telegram_env(tmp_path, database_url=db_url, definitions=[DEFINITIONS, extra]) as env:
        fake = env.fake
        await env.send(fake.message_update("/maybe not now"))
        found = await settled(env, 2)
        run_id = (await env.run_of("telegram-42"))["jobRunId"]
        made = await env.app.store.read(lambda tx: tx.one("SELECT created_at FROM runs WHERE run_id = :id", {"id": run_id}))
        status, result = found
        assert (status["event_type"], result["event_type"]) == ("status", "run.completed")
        assert result["created_at"] == made["created_at"]  # the run ended in the transaction that made it
        assert status["created_at"] < result["created_at"]
        assert [what(c) for c in sent(env, 42)] == ["status", "✅ Maybe is done."]


MAYBE = """
- jobId: tg_maybe
  displayName: Maybe
  commandName: maybe
  description: Writes a card only when asked to write.
  inputSchema:
    prompt: {type: text, required: true, description: "write (or anything else: nothing is written)"}
  outputSchema:
    text: {type: text, sourceStepId: write, sourceOutputName: text}
  steps:
    - stepId: write
      toolId: text.template
      condition: "job.prompt == 'write'"
      inputMappings:
        - {template: "Card: {{ job.prompt }}", targetInputName: template}
"""
