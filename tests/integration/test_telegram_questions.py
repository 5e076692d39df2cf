"""A step that asks, in Telegram (the fake Bot API on loopback, a real App, worker and bot): the
run's chat is told the run needs it, with the candidates as photos under buttons; another user's
button press is refused; the owner's press or reply answers; callback data stays within 64 bytes
(the fake refuses more, as Telegram does)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.fakes.telegram_api import TelegramEnv, telegram_env
from tests.integration.test_telegram_bot import _buttons, finished

from toolweave.telegram import questions

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


async def asked(env: TelegramEnv, count: int = 1) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = await env.fake.wait_for(
        lambda: len([m for m in env.replies() if "needs you" in (m.get("text") or "")]) >= count
        and [m for m in env.replies() if "needs you" in (m.get("text") or "")])
    return found


async def start(env: TelegramEnv) -> None:
    photo = env.fake.user_message(photo=(EXAMPLES / "assets" / "sample.png").read_bytes())
    await env.send({"update_id": env.fake.next_update_id(), "message": photo})
    await env.send(env.fake.message_update("/pick_the_best", reply_to=photo))


async def test_the_run_asks_its_chat_and_a_button_under_a_photo_answers(tmp_path: Path) -> None:
    async with telegram_env(tmp_path, definitions=[EXAMPLES / "ask"]) as env:
        fake = env.fake
        await start(env)
        (question,) = await asked(env)
        assert "Which of the four should be upscaled?" in question["text"]
        photos = [c for c in fake.calls_of("sendPhoto") if c.params.get("reply_markup")]
        assert len(photos) == 4
        buttons = [_buttons(fake.public(fake.message(42, m["message_id"]))) for m in env.replies() if m.get("photo")]
        choose = [b for row in buttons for b in row]
        assert len(choose) == 4 and all(len(b.encode()) <= 64 for b in choose + _buttons(question))
        assert questions.parse_callback(choose[1]) is not None
        await env.send(fake.callback_update(choose[1], user_id=7, message=question))  # another user
        await fake.wait_for(lambda: [c for c in fake.calls_of("answerCallbackQuery")
                                     if c.params.get("text") == "That question is not yours to answer."])
        await env.send(fake.callback_update(choose[1], message=question))
        await fake.wait_for(lambda: [c for c in fake.calls_of("answerCallbackQuery") if c.params.get("text") == "Thanks! Going on."])
        (done,) = await finished(env)
        assert done["text"].startswith("✅ Pick the best is done.")
        run = (await env.app.list_runs("telegram-42", limit=1)).items[0]
        pick = next(s for s in (await env.app.get_run(run["jobRunId"]))["stepStatuses"] if s["stepId"] == "pick")
        assert pick["outputs"]["chosenIndexes"] == [1] and pick["outputs"]["answeredBy"] == "telegram-42"
        await env.send(fake.callback_update(choose[2], message=question))  # too late
        await fake.wait_for(lambda: [c for c in fake.calls_of("answerCallbackQuery")
                                     if str(c.params.get("text", "")).startswith("Too late")])


async def test_a_reply_to_the_question_answers_it(tmp_path: Path) -> None:
    async with telegram_env(tmp_path, definitions=[EXAMPLES / "ask"]) as env:
        fake = env.fake
        await start(env)
        (question,) = await asked(env)
        await env.send(fake.message_update("7", reply_to=question))
        await fake.wait_for(lambda: [t for t in env.texts() if t.startswith("That answer does not fit")])
        await env.send(fake.message_update("#3", reply_to=question))
        await fake.wait_for(lambda: "Thanks! Going on." in env.texts())
        await finished(env)
        run = (await env.app.list_runs("telegram-42", limit=1)).items[0]
        pick = next(s for s in (await env.app.get_run(run["jobRunId"]))["stepStatuses"] if s["stepId"] == "pick")
        assert pick["outputs"]["chosenIndexes"] == [2]


def test_replies_and_buttons_read_as_answers() -> None:
    qid = "q_" + "0" * 26
    assert questions.parse_callback(questions.callback_data(qid, "c3")) == (qid, {"chosen": [3]})
    assert questions.parse_callback(f"a:{qid}:zz") is None and questions.parse_callback("r:run_1") is None
    assert questions.parse_reply("1, 3") == {"chosen": [0, 2]}
    assert questions.parse_reply("steps=30\nprompt = a cat") == {"values": {"steps": "30", "prompt": "a cat"}}
    assert questions.parse_reply("No") == {"decision": "reject"}
    assert questions.parse_reply("whatever") == {"decision": "whatever"}  # refused by the answer's checks


async def test_an_approver_hears_in_their_own_chat_and_answers_there(tmp_path: Path) -> None:
    import yaml

    job = yaml.safe_load((EXAMPLES / "ask" / "pick_best.yaml").read_text())
    job.update(jobId="pick_reviewed", displayName="Pick reviewed")
    job["steps"][2]["ask"]["approvers"] = ["telegram-7"]
    folder = tmp_path / "defs"
    folder.mkdir()
    (folder / "pick_reviewed.yaml").write_text(yaml.safe_dump(job))
    async with telegram_env(tmp_path / "t", definitions=[folder]) as env:
        fake = env.fake
        await env.send(fake.message_update("/status", user_id=7, chat_id=7))  # the approver has met the bot
        await fake.wait_for(lambda: env.replies(7))
        photo = fake.user_message(photo=(EXAMPLES / "assets" / "sample.png").read_bytes())
        await env.send({"update_id": fake.next_update_id(), "message": photo})
        await env.send(fake.message_update("/pick_reviewed", reply_to=photo))
        await asked(env)  # the run's own chat
        theirs = await fake.wait_for(lambda: [m for m in env.replies(7) if "needs you" in (m.get("text") or "")])
        # the approver sees the candidates too (the bot sends them as the run's account holds them)
        assert len([m for m in env.replies(7) if m.get("photo")]) == 4
        await env.send(fake.message_update("4", reply_to=theirs[0], user_id=7, chat_id=7))
        await fake.wait_for(lambda: "Thanks! Going on." in env.texts(7))
        await finished(env)
        run = (await env.app.list_runs("telegram-42", limit=1)).items[0]
        pick = next(s for s in (await env.app.get_run(run["jobRunId"]))["stepStatuses"] if s["stepId"] == "pick")
        assert pick["outputs"]["chosenIndexes"] == [3] and pick["outputs"]["answeredBy"] == "telegram-7"
