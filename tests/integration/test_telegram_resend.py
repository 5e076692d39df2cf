"""The 📥 button under a delivery whose file could not be sent, on both stores: a press sends the
file again once (two quick presses are one: the press is deduplicated in the outbox, not in a
process's memory), then the message that carried the button is edited — the button goes, and the
text says the file was sent — so a later press cannot send it again and the chat does not say a
file is missing that arrived. Another user's press, or forged data, sends nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.fakes.telegram_api import DEFINITIONS, TelegramEnv
from tests.fakes.telegram_api import telegram_env as env_on
from tests.integration.test_telegram_hostile import jpeg, notifications, photos_by_caption, results, settled

from toolweave.telegram import notes as notes_

LONG_JOB = """
- jobId: tg_long
  displayName: Long
  commandName: long
  description: Two long texts and a contact sheet sent as a file.
  inputSchema:
    image: {type: image, required: true}
    text: {type: text, required: true}
  outputSchema:
    a: {type: text, sourceStepId: a, sourceOutputName: text}
    b: {type: text, sourceStepId: b, sourceOutputName: text}
    sheet: {type: image, sourceStepId: sheet, sourceOutputName: image}
  deliveryHints:
    telegram:
      outputs:
        sheet: {send-as: document, filename: sheet.png}
  steps:
    - stepId: a
      toolId: text.template
      inputMappings:
        - {template: "{{ job.text }}{{ job.text }}{{ job.text }}", targetInputName: template}
    - stepId: b
      toolId: text.template
      inputMappings:
        - {template: "{{ job.text }}{{ job.text }}", targetInputName: template}
    - stepId: sheet
      toolId: image.resize
      inputMappings:
        - {sourceJobInput: image, targetInputName: image}
        - {value: 32, targetInputName: width}
"""


def again_buttons(message: dict[str, Any]) -> list[dict[str, str]]:
    rows = (message.get("reply_markup") or {}).get("inline_keyboard", [])
    return [b for row in rows for b in row if b["callback_data"].startswith("s:")]


def answers(env: TelegramEnv) -> list[str]:
    return [str(c.params.get("text")) for c in env.fake.calls_of("answerCallbackQuery")]


async def test_a_file_sent_again_on_request_is_sent_once_and_its_button_goes(db_url: str, tmp_path: Path) -> None:
    group = -7171
    async with env_on(tmp_path, database_url=db_url) as env:
        fake = env.fake
        fake.restrict(group, "photos", "videos", "documents")
        await env.send(fake.message_update("/variants", chat_id=group, photo=jpeg()))
        (done,) = await fake.wait_for(lambda: results(env, group), timeout=60)
        await settled(env)
        album, sheet = again_buttons(done)
        assert [album["text"], sheet["text"]] == ["📥 bright, dark", "📥 sheet"]
        # an admin allows files; the owner presses "📥 sheet" twice at once
        fake.restrict(group, "photos")
        await asyncio.gather(*(env.send(fake.callback_update(sheet["callback_data"], message=done)) for _ in range(2)))
        await fake.wait_for(lambda: photos_by_caption(fake, group).get("sheet"), timeout=60)
        await settled(env)
        # another user's press, and the owner's forged press of a part that was sent, send nothing
        await env.send(fake.callback_update(album["callback_data"], user_id=77, message=done))
        await env.send(fake.callback_update(sheet["callback_data"], message=done))
        await settled(env)
        assert photos_by_caption(fake, group) == {"sheet": 1}
        resends = [r for r in await notifications(env) if r["event_type"] == "resend"]
        assert len(resends) == 1
        assert answers(env)[-2:] == ["That is not yours to ask for.", "Nothing of that is missing: it was all sent."]
        # the message no longer offers the file, nor says it is missing
        edited = fake.message(group, done["message_id"])
        assert [b["text"] for b in again_buttons(edited)] == ["📥 bright, dark"]
        assert "sheet: sent again below" in edited["text"] and "“📥 sheet”" not in edited["text"]
        assert "“📥 bright, dark”" in edited["text"]
        assert any(b["callback_data"].startswith("r:") for row in edited["reply_markup"]["inline_keyboard"] for b in row)
        # the album's button: its files arrive once, and the message offers nothing more
        await env.send(fake.callback_update(album["callback_data"], message=done))
        await fake.wait_for(lambda: len(photos_by_caption(fake, group)) == 3, timeout=60)
        await settled(env)
        await fake.wait_for(lambda: not again_buttons(fake.message(group, done["message_id"])), timeout=30)
        edited = fake.message(group, done["message_id"])
        assert photos_by_caption(fake, group) == {"bright": 1, "dark": 1, "sheet": 1}
        assert "bright, dark: sent again below" in edited["text"] and "not sent" not in edited["text"]


async def test_a_press_while_the_chat_still_forbids_the_file_leaves_the_button(db_url: str, tmp_path: Path) -> None:
    group = -7272
    async with env_on(tmp_path, database_url=db_url) as env:
        fake = env.fake
        fake.restrict(group, "photos", "videos", "documents")
        await env.send(fake.message_update("/variants", chat_id=group, photo=jpeg()))
        (done,) = await fake.wait_for(lambda: results(env, group), timeout=60)
        await settled(env)
        _album, sheet = again_buttons(done)
        await env.send(fake.callback_update(sheet["callback_data"], message=done))
        await fake.wait_for(lambda: [m for m in fake.sent_to(group) if "still not sent" in (m.get("text") or "")],
                            timeout=30)
        await settled(env)
        assert fake.message(group, done["message_id"])["text"] == done["text"]
        # pressed again once the admin allows files: a new resend, not the one already made
        fake.restrict(group, "photos")
        await env.send(fake.callback_update(sheet["callback_data"], message=done))
        await fake.wait_for(lambda: photos_by_caption(fake, group).get("sheet"), timeout=60)
        await settled(env)
        assert photos_by_caption(fake, group) == {"sheet": 1}
        assert [b["text"] for b in again_buttons(fake.message(group, done["message_id"]))] == ["📥 bright, dark"]


async def test_a_press_after_a_resend_was_given_up_sends_it_again(db_url: str, tmp_path: Path) -> None:
    group = -7373
    # a notification is retried for half a second: a 429 asking for 5 s gives the resend up at once
    async with env_on(tmp_path, database_url=db_url, notification_horizon_seconds=0.5) as env:
        fake = env.fake
        fake.restrict(group, "photos", "videos", "documents")
        await env.send(fake.message_update("/variants", chat_id=group, photo=jpeg()))
        (done,) = await fake.wait_for(lambda: results(env, group), timeout=60)
        await settled(env)
        _album, sheet = again_buttons(done)
        fake.restrict(group, "photos")
        fake.fail("sendDocument", 429, retry_after=5, chat_id=group)
        await env.send(fake.callback_update(sheet["callback_data"], message=done))
        await settled(env)
        (given_up,) = [r for r in await notifications(env) if r["event_type"] == "resend"]
        assert given_up["status"] == "failed" and "429" in given_up["last_error"]
        assert "sheet" not in photos_by_caption(fake, group)
        assert [b["text"] for b in again_buttons(fake.message(group, done["message_id"]))] == ["📥 bright, dark", "📥 sheet"]
        # pressed again (twice at once): one new resend, and the file arrives once
        await asyncio.gather(*(env.send(fake.callback_update(sheet["callback_data"], message=done)) for _ in range(2)))
        await fake.wait_for(lambda: photos_by_caption(fake, group).get("sheet"), timeout=30)
        await settled(env)
        assert sorted(answers(env)[-2:]) == ["It is being sent again already.", "Sending it again."]
        rows = [r for r in await notifications(env) if r["event_type"] == "resend"]
        assert sorted(r["status"] for r in rows) == ["delivered", "failed"]
        assert [b["text"] for b in again_buttons(fake.message(group, done["message_id"]))] == ["📥 bright, dark"]
        # an operator sends the given-up row again: the file is no longer in doubt, nothing is sent
        assert await env.app.resend_notifications([given_up["notification_id"]]) == [given_up["notification_id"]]
        await settled(env)
        assert photos_by_caption(fake, group) == {"sheet": 1}
        assert {r["notification_id"]: r["status"] for r in await notifications(env)}[given_up["notification_id"]] == "delivered"


async def test_a_closing_text_that_takes_fewer_messages_after_a_resend_no_longer_says_the_file_is_missing(
        db_url: str, tmp_path: Path) -> None:
    group = -7474
    defs = tmp_path / "defs"
    defs.mkdir()
    (defs / "jobs.yaml").write_text(LONG_JOB)
    # a text whose closing message takes two messages while it says the sheet is missing, one once
    # it says the sheet was sent again
    head, missing = "✅ Long is done.", notes_.withheld(["sheet"], "documents", 0)["text"]
    sent_again = notes_.resent(["sheet"], 0)["text"]
    fixed = len(f"{head}\na: \nb: \n{sent_again}")
    text = "x" * ((4096 - fixed) // 5)
    assert fixed + 5 * len(text) <= 4096 < fixed + 5 * len(text) - len(sent_again) + len(missing)
    async with env_on(tmp_path / "home", database_url=db_url, definitions=[DEFINITIONS, defs]) as env:
        fake = env.fake
        fake.restrict(group, "documents")
        await env.send(fake.message_update(f"/long {text}", chat_id=group, photo=jpeg()))
        (done,) = await fake.wait_for(lambda: results(env, group), timeout=60)
        await settled(env)
        first, last = [m for m in fake.sent_to(group) if m.get("text")][-2:]
        assert last["message_id"] == done["message_id"] and first["text"].startswith(head)
        assert missing in last["text"]
        (sheet,) = again_buttons(done)
        fake.restrict(group)
        edits = len(fake.edits)
        await env.send(fake.callback_update(sheet["callback_data"], message=done))
        await fake.wait_for(lambda: photos_by_caption(fake, group).get("sheet"), timeout=60)
        await settled(env)
        shown = [fake.message(group, m["message_id"]) for m in (first, last)]
        assert "not sent" not in shown[0]["text"] + shown[1]["text"]
        assert sent_again in shown[1]["text"] and not again_buttons(shown[1])
        # the text is spread over the same two messages: the first, which says the same, is not edited
        assert {e["message_id"] for e in fake.edits[edits:]} == {last["message_id"]}
        assert "\n".join(m["text"] for m in shown) == f"{head}\na: {text * 3}\nb: {text * 2}\n{sent_again}"
        assert any(b["callback_data"].startswith("r:") for row in shown[1]["reply_markup"]["inline_keyboard"] for b in row)
