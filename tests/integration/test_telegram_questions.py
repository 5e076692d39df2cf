"""A step that asks, in Telegram (the fake Bot API on loopback, a real App, worker and bot): the
run's chat is told the run needs it, with the candidates as photos under buttons; another user's
button press is refused; the owner's press or reply answers; callback data stays within 64 bytes
(the fake refuses more, as Telegram does)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.fakes.telegram_api import TelegramEnv, telegram_env
from tests.integration.test_telegram_bot import _buttons, finished

from toolweave.telegram import notes as notes_
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


def _keyboard(message: dict[str, Any]) -> list[dict[str, str]]:
    return [b for row in (message.get("reply_markup") or {}).get("inline_keyboard", []) for b in row]


async def test_candidates_a_group_forbids_are_named_in_the_question_and_sent_once_allowed(
        db_url: str, tmp_path: Path) -> None:
    group = -4343
    async with telegram_env(tmp_path, definitions=[EXAMPLES / "ask"], database_url=db_url) as env:
        fake = env.fake
        # the bot may write in the group but not send photos or files
        fake.restrict(group, "photos", "documents")
        sample = (EXAMPLES / "assets" / "sample.png").read_bytes()
        await env.send(fake.message_update("/pick_the_best", chat_id=group, photo=sample))
        question = (await fake.wait_for(lambda: [m for m in env.replies(group) if "needs you" in (m.get("text") or "")],
                                        timeout=60))[0]
        assert not [m for m in env.replies(group) if "photo" in m or "document" in m]
        # still asked, and the person is told which candidates are not shown, and why
        text = question["text"]
        assert "#1, #2, #3, #4" in text and "not shown" in text
        assert "may not send documents in this chat" in text and "admin" in text
        again = [b for b in _keyboard(question) if b["callback_data"].startswith("s:")]
        assert [b["text"] for b in again] == ["📥 #1", "📥 #2", "📥 #3", "📥 #4"]
        assert "(question q_" in text
        # an admin allows files: each button sends its candidate, with its own choose button
        fake.restrict(group, "photos")
        for button in again:
            await env.send(fake.callback_update(button["callback_data"], message=question))
        shown = await fake.wait_for(lambda: len([m for m in env.replies(group) if "document" in m]) == 4
                                    and [m for m in env.replies(group) if "document" in m], timeout=60)
        choose = [b["callback_data"] for m in shown for b in _keyboard(m)]
        assert sorted(choose) == sorted(questions.callback_data(choose[0].split(":")[1], f"c{i}") for i in range(4))
        # the question is brought up to date: nothing to send again, nothing said to be missing
        edited = await fake.wait_for(lambda: not [b for b in _keyboard(fake.message(group, question["message_id"]))
                                                  if b["callback_data"].startswith("s:")]
                                     and fake.message(group, question["message_id"]), timeout=30)
        assert all(f"✅ #{i}: sent again below." in edited["text"] for i in range(1, 5))
        assert "not shown" not in edited["text"] and "Tap the one you choose" in edited["text"]
        # a candidate shown since may be chosen by reply
        await env.send(fake.message_update("2", chat_id=group, reply_to=edited))
        await fake.wait_for(lambda: "Thanks! Going on." in env.texts(group))


async def test_a_candidate_telegram_refuses_is_named_in_the_question_and_the_others_are_shown(
        db_url: str, tmp_path: Path) -> None:
    async with telegram_env(tmp_path, definitions=[EXAMPLES / "ask"], database_url=db_url) as env:
        fake = env.fake
        # the third candidate is refused as a photo and as a document; the second only as a photo
        fake.fail("sendPhoto", 400, description="Bad Request: PHOTO_INVALID_DIMENSIONS", after=1)
        fake.fail("sendPhoto", 400, description="Bad Request: PHOTO_INVALID_DIMENSIONS")
        fake.fail("sendDocument", 400, description="Bad Request: file is too big", after=1)
        await start(env)
        (question,) = await asked(env)
        shown = [m for m in env.replies() if ("photo" in m or "document" in m) and m.get("reply_markup")]
        assert len(shown) == 3 and len([m for m in shown if "document" in m]) == 1
        choose = [b["text"] for m in shown for b in _keyboard(m)]
        assert choose == ["✅ Choose #1", "✅ Choose #2", "✅ Choose #4"]
        text = question["text"]
        assert "#3" in text and "not shown" in text and "file is too big" in text
        assert "#2: sent as a file" in text
        assert "(question q_" in text


def test_a_long_question_keeps_its_mark_and_names_the_candidates_not_shown() -> None:
    qid = "q_" + "0" * 26
    ref = {"kind": "artifact", "sha256": "a" * 64, "mimeType": "image/png", "size": 10}
    payload = {"questionId": qid, "question": {"kind": "choose", "text": "x" * 5000, "candidates": [ref, ref]}}
    notes = [notes_.gone("#1"), notes_.gone("#2")]
    text, keyboard = questions.question_message("Pick", payload, notes)
    assert len(text) <= 4096 and questions.MARK.search(text) is not None
    short = {**payload, "question": {**payload["question"], "text": "Which?"}}
    text, keyboard = questions.question_message("Pick", short, notes)
    assert "⚠️ #1, #2: not shown (it is no longer stored)." in text
    assert "None of the candidates could be shown here" in text and "Tap" not in text
    assert [b["text"] for row in keyboard["inline_keyboard"] for b in row] == ["✖️ None of them"]


async def test_a_reply_may_choose_only_a_candidate_that_was_shown(db_url: str, tmp_path: Path) -> None:
    async with telegram_env(tmp_path, definitions=[EXAMPLES / "ask"], database_url=db_url) as env:
        fake = env.fake
        # the third candidate is refused as a photo and as a document: it is not shown
        fake.fail("sendPhoto", 400, description="Bad Request: PHOTO_INVALID_DIMENSIONS", after=2)
        fake.fail("sendDocument", 400, description="Bad Request: file is too big")
        await start(env)
        (question,) = await asked(env)
        assert "#3: not shown (Bad Request: file is too big)" in question["text"]
        await env.send(fake.message_update("3", reply_to=question))
        refusal = await fake.wait_for(lambda: [t for t in env.texts() if "#3 was not shown" in t])
        assert "file is too big" in refusal[0] and "#1, #2, #4" in refusal[0]
        await env.send(fake.message_update("1 3", reply_to=question))  # one not shown among several
        await fake.wait_for(lambda: len([t for t in env.texts() if "#3 was not shown" in t]) == 2)
        # forged button data choosing it (its photo, and so its button, never arrived) is refused too
        found = questions.MARK.search(question["text"])
        assert found is not None
        await env.send(fake.callback_update(questions.callback_data(found.group(1), "c2"), message=question))
        await fake.wait_for(lambda: [c for c in fake.calls_of("answerCallbackQuery")
                                     if str(c.params.get("text", "")).startswith("#3 was not shown")])
        run = (await env.app.list_runs("telegram-42", limit=1)).items[0]
        assert run["status"] == "waiting_input"
        await env.send(fake.message_update("4", reply_to=question))
        await fake.wait_for(lambda: "Thanks! Going on." in env.texts())
        await finished(env)
        run = (await env.app.list_runs("telegram-42", limit=1)).items[0]
        pick = next(s for s in (await env.app.get_run(run["jobRunId"]))["stepStatuses"] if s["stepId"] == "pick")
        assert pick["outputs"]["chosenIndexes"] == [3]


async def test_pruning_a_run_that_asked_in_a_chat_takes_its_record_of_asking(db_url: str, tmp_path: Path) -> None:
    async with telegram_env(tmp_path, definitions=[EXAMPLES / "ask"], database_url=db_url) as env:
        fake = env.fake

        async def records() -> list[str]:
            keys: list[str] = await env.app.store.read(lambda tx: sorted(
                r.key for r in tx.all("SELECT key FROM kv WHERE namespace = 'telegram.asked'")))
            return keys

        # one run asks and is answered (it finishes); another asks in the same chat and waits
        await start(env)
        (first,) = await asked(env)
        await env.send(fake.message_update("#2", reply_to=first))
        await finished(env)
        await start(env)
        second = (await asked(env, 2))[-1]
        ids = [m.group(1) for m in (questions.MARK.search(q["text"]) for q in (first, second)) if m]
        assert len(ids) == 2 and await records() == sorted(f"42:{q}" for q in ids)
        report = await env.app.prune(older_than=0.0)
        assert report["runs"] >= 1
        assert await records() == [f"42:{ids[1]}"]
