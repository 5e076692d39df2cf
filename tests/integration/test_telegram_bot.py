"""The Telegram bot against a fake Bot API server on loopback (real HTTP), a real App and worker.

The jobs used are in ``telegram_defs/jobs.yaml`` (builtin tools only), one per handler type.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

from PIL import Image
from tests.fakes.telegram_api import TelegramEnv, telegram_env

FINAL_MARKS = ("✅", "⚠️", "❌", "🚫")
VIDEO = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00" * 200


def jpeg(width: int = 120, height: int = 90, color: str = "teal") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, "JPEG")
    return buffer.getvalue()


def _buttons(message: dict[str, Any]) -> list[str]:
    rows = (message.get("reply_markup") or {}).get("inline_keyboard", [])
    return [b.get("callback_data", "") for row in rows for b in row]


def results(env: TelegramEnv, chat_id: int = 42) -> list[dict[str, Any]]:
    """The final result messages (the text with a Rerun button) sent to a chat."""
    return [m for m in env.replies(chat_id) if (m.get("text") or "").startswith(FINAL_MARKS)
            and any(b.startswith("r:") for b in _buttons(m))]


def status_messages(env: TelegramEnv, chat_id: int = 42) -> list[dict[str, Any]]:
    return [m for m in env.replies(chat_id) if "\nRun run_" in (m.get("text") or "")]


async def finished(env: TelegramEnv, count: int = 1, chat_id: int = 42) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = await env.fake.wait_for(lambda: len(results(env, chat_id)) >= count and results(env, chat_id))
    return found


async def runs(env: TelegramEnv, account: str = "telegram-42") -> list[dict[str, Any]]:
    return (await env.app.list_runs(account, limit=20)).items


# --- handler types ---------------------------------------------------------------------------------


async def test_image_required_with_text_reply_to_a_photo(tmp_path: Path) -> None:
    async with telegram_env(tmp_path) as env:
        fake = env.fake
        photo_msg = fake.user_message(photo=jpeg())
        await env.send({"update_id": fake.next_update_id(), "message": photo_msg})
        command = fake.message_update("/stamp Hello there", reply_to=photo_msg)
        await env.send(command)
        (done,) = await finished(env)
        assert done["text"].startswith("✅ Stamp is done.")
        assert fake.downloads and fake.downloads[0].startswith("photos/")
        # one status message, replying to the command, with a Cancel button at first, edited to the end
        (status,) = status_messages(env)
        assert status["_reply_to"] == command["message"]["message_id"]
        first = next(c for c in fake.calls_of("sendMessage") if "\nRun run_" in c.params.get("text", ""))
        assert first.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"].startswith("c:run_")
        final = await fake.wait_for(lambda: (fake.message(42, status["message_id"]).get("text") or "").startswith("✅")
                                    and fake.message(42, status["message_id"]))
        assert "shrink — done" in final["text"] and "stamp — done" in final["text"]
        assert "reply_markup" not in final  # no Cancel button once finished
        assert fake.edits and all(e["message_id"] == status["message_id"] for e in fake.edits)
        # the result: one photo, replying to the command
        (photo_call,) = fake.calls_of("sendPhoto")
        _name, ctype, data = photo_call.files["photo"]
        assert ctype.startswith("image/") and Image.open(io.BytesIO(data)).size[0] == 64
        assert photo_call.params["reply_parameters"]["message_id"] == command["message"]["message_id"]
        (run,) = await runs(env)
        detail = await env.app.get_run(run["jobRunId"])
        assert detail["status"] == "completed"
        assert detail["origin"] == {"platform": "telegram", "chatId": 42, "userId": 42,
                                    "messageId": command["message"]["message_id"]}
        assert detail["jobInputs"]["text"] == "Hello there"
        assert detail["jobInputs"]["image"]["kind"] == "artifact"
        detail = await _delivered(env, run["jobRunId"])
        assert [n["status"] for n in detail["notifications"]] == ["delivered"]


async def _delivered(env: TelegramEnv, run_id: str) -> dict[str, Any]:
    for _ in range(200):
        detail = await env.app.get_run(run_id)
        if detail["notifications"] and all(n["status"] != "pending" for n in detail["notifications"]):
            return detail
        await asyncio.sleep(0.05)
    raise AssertionError(f"the notifications of {run_id} are still pending")


async def test_image_only_photo_with_caption_sends_a_media_group_and_a_document(tmp_path: Path) -> None:
    async with telegram_env(tmp_path) as env:
        fake = env.fake
        await env.send(fake.message_update("/variants", photo=jpeg()))
        (done,) = await finished(env)
        (group,) = fake.calls_of("sendMediaGroup")
        assert [m["type"] for m in group.params["media"]] == ["photo", "photo"]
        assert sorted(group.files) == ["file0", "file1"]
        (document,) = fake.calls_of("sendDocument")
        assert document.files["document"][0] == "sheet.png"  # deliveryHints: send-as=document, filename
        assert not fake.calls_of("sendPhoto")
        assert done["text"].startswith("✅ Variants is done.")
        grouped = [m for m in env.replies() if m.get("media_group_id")]
        assert len(grouped) == 2 and len({m["media_group_id"] for m in grouped}) == 1


async def test_text_only_command_with_key_value_pairs(tmp_path: Path) -> None:
    async with telegram_env(tmp_path) as env:
        fake = env.fake
        await env.send(fake.message_update('/text_template Hello {{ who }}! variables={"who":"Bo"} strip=yes'))
        (done,) = await finished(env)
        assert "text: Hello Bo!" in done["text"]
        (run,) = await runs(env)
        detail = await env.app.get_run(run["jobRunId"])
        assert detail["jobInputs"]["variables"] == {"who": "Bo"}
        assert detail["jobInputs"]["strip"] is True


async def test_text_primary_media_optional_without_and_with_a_photo(tmp_path: Path) -> None:
    async with telegram_env(tmp_path) as env:
        fake = env.fake
        await env.send(fake.message_update("/card Happy birthday"))
        (first,) = await finished(env)
        assert "Card: Happy birthday #" in first["text"]
        assert not fake.calls_of("sendPhoto")
        await env.send(fake.message_update("/card With a picture", photo=jpeg()))
        await finished(env, 2)
        (photo,) = fake.calls_of("sendPhoto")
        assert Image.open(io.BytesIO(photo.files["photo"][2])).size[0] == 16


async def test_video_required_with_text_and_video_only(tmp_path: Path) -> None:
    async with telegram_env(tmp_path) as env:
        fake = env.fake
        await env.send(fake.message_update("/clip My holiday", video=VIDEO))
        (done,) = await finished(env)
        assert "title: My holiday" in done["text"]
        (video,) = fake.calls_of("sendVideo")
        assert video.files["video"][2] == VIDEO and video.files["video"][1] == "video/mp4"
        # video_only: a reply to a video message
        clip = fake.user_message(video=VIDEO)
        await env.send(fake.message_update("/keep", reply_to=clip))
        await finished(env, 2)
        assert len(fake.calls_of("sendVideo")) == 2


async def test_text_primary_video_optional_and_a_wrong_kind_of_media(tmp_path: Path) -> None:
    async with telegram_env(tmp_path) as env:
        fake = env.fake
        await env.send(fake.message_update("/reel Summer"))
        (done,) = await finished(env)
        assert "text: Reel: Summer" in done["text"]
        # a photo where a video is wanted: a plain message naming the input, no run
        await env.send(fake.message_update("/keep", photo=jpeg()))
        reply = await fake.wait_for(lambda: [t for t in env.texts() if t.startswith("clip needs a video")])
        assert "you sent a photo" in reply[0]
        assert len(await runs(env)) == 1


# --- commands, help, status ---------------------------------------------------------------------------


async def test_commands_are_registered_and_listed_without_hidden_ones(tmp_path: Path) -> None:
    async with telegram_env(tmp_path) as env:
        fake = env.fake
        (call,) = fake.calls_of("setMyCommands")
        names = [c["command"] for c in call.params["commands"]]
        assert names[:4] == ["start", "help", "status", "cancel"]
        assert {"stamp", "variants", "card", "clip", "keep", "reel", "resize_image", "text_template"} <= set(names)
        assert "secret" not in names  # hidden job
        assert all(1 <= len(c["description"]) <= 256 for c in call.params["commands"])
        await env.send(fake.message_update("/help"))
        await env.send(fake.message_update("/start"))
        helps = await fake.wait_for(lambda: len(h := [t for t in env.texts() if "/stamp — Shrinks a photo" in t]) == 2 and h)
        assert "/secret" not in helps[0] and "/status" in helps[0] and "/cancel" in helps[0]
        await env.send(fake.message_update("/secret hi"))
        await env.send(fake.message_update("/nonsense"))
        await fake.wait_for(lambda: [t for t in env.texts() if "I don't know /nonsense" in t])
        assert [t for t in env.texts() if "I don't know /secret" in t]
        assert await runs(env) == []


async def test_status_lists_recent_runs(tmp_path: Path) -> None:
    async with telegram_env(tmp_path) as env:
        fake = env.fake
        await env.send(fake.message_update("/status"))
        await fake.wait_for(lambda: [t for t in env.texts() if t.startswith("You have no runs yet")])
        await env.send(fake.message_update("/card One"))
        await finished(env)
        await env.send(fake.message_update("/status"))
        (listing,) = await fake.wait_for(lambda: [t for t in env.texts() if t.startswith("Your recent runs")])
        assert "Card — completed" in listing


async def test_status_in_a_group_lists_that_groups_runs_only(tmp_path: Path) -> None:
    async with telegram_env(tmp_path) as env:
        fake = env.fake
        await env.send(fake.message_update("/card In private"))
        await finished(env)
        await env.send(fake.message_update("/card In the group", chat_id=-5))
        await finished(env, chat_id=-5)
        await env.send(fake.message_update("/status", chat_id=-5))
        (listing,) = await fake.wait_for(lambda: [t for t in env.texts(-5) if t.startswith("Your recent runs")])
        private_run, group_run = sorted((await runs(env)), key=lambda r: r["createdAt"])
        assert group_run["jobRunId"] in listing and private_run["jobRunId"] not in listing
        await env.send(fake.message_update("/status"))
        (mine,) = await fake.wait_for(lambda: [t for t in env.texts() if t.startswith("Your recent runs")])
        assert group_run["jobRunId"] in mine and private_run["jobRunId"] in mine


# --- missing and bad inputs -----------------------------------------------------------------------------


async def test_missing_inputs_are_asked_for_in_turn(tmp_path: Path) -> None:
    async with telegram_env(tmp_path) as env:
        fake = env.fake
        command = fake.message_update("/stamp")
        await env.send(command)
        (ask_image,) = await fake.wait_for(lambda: [m for m in env.replies() if "needs image" in (m.get("text") or "")])
        assert ask_image["_reply_to"] == command["message"]["message_id"]
        assert ask_image["reply_markup"].get("force_reply") is True
        # a text where a photo is wanted: asked again, nothing run
        await env.send(fake.message_update("here you go"))
        await fake.wait_for(lambda: [t for t in env.texts() if t.startswith("image needs a photo")])
        await env.send(fake.message_update(photo=jpeg(), reply_to=fake.public(ask_image)))
        await fake.wait_for(lambda: [m for m in env.replies() if "needs text" in (m.get("text") or "")])
        await env.send(fake.message_update("Stamped!"))
        await finished(env)
        (run,) = await runs(env)
        detail = await env.app.get_run(run["jobRunId"])
        assert detail["jobInputs"]["text"] == "Stamped!"
        assert detail["origin"]["messageId"] == command["message"]["message_id"]
        assert await env.app.kv_get("telegram.pending", "42:42") is None


async def test_a_question_expires(tmp_path: Path) -> None:
    async with telegram_env(tmp_path, telegram_prompt_timeout_seconds=0.3) as env:
        fake = env.fake
        await env.send(fake.message_update("/card"))
        (ask,) = await fake.wait_for(lambda: [m for m in env.replies() if "needs prompt" in (m.get("text") or "")])
        await asyncio.sleep(0.5)
        await env.send(fake.message_update("Too late", reply_to=fake.public(ask)))
        await fake.wait_for(lambda: [t for t in env.texts() if t.startswith("That question has expired")])
        assert await runs(env) == []


async def test_cancel_drops_a_pending_question(tmp_path: Path) -> None:
    async with telegram_env(tmp_path) as env:
        fake = env.fake
        await env.send(fake.message_update("/card"))
        await fake.wait_for(lambda: [m for m in env.replies() if "needs prompt" in (m.get("text") or "")])
        await env.send(fake.message_update("/cancel"))
        await fake.wait_for(lambda: [t for t in env.texts() if t.startswith("OK, I stopped waiting")])
        await env.send(fake.message_update("some words"))
        await fake.wait_for(lambda: [t for t in env.texts() if t.startswith("Send a command to run something")])
        assert await runs(env) == []


async def test_bad_values_get_a_plain_message_naming_the_input(tmp_path: Path) -> None:
    async with telegram_env(tmp_path) as env:
        fake = env.fake
        await env.send(fake.message_update("/stamp hi width=abc", photo=jpeg()))
        await env.send(fake.message_update("/stamp hi width=9999", photo=jpeg()))
        await env.send(fake.message_update("/variants some words", photo=jpeg()))
        await env.send(fake.message_update("/variants colour=red", photo=jpeg()))
        texts = await fake.wait_for(lambda: len(env.texts()) >= 4 and env.texts())
        assert "/stamp: width must be a whole number (got 'abc')." in texts
        assert "/stamp: width must be at most 512 (got 9999)." in texts
        assert any(t.startswith("/variants: this command takes no free text") for t in texts)
        assert any(t.startswith("/variants: colour is not an input of this command") for t in texts)
        assert await runs(env) == []
        assert not fake.downloads  # refused before anything was downloaded


async def test_failed_run_is_explained_naming_the_step(tmp_path: Path) -> None:
    async with telegram_env(tmp_path) as env:
        fake = env.fake
        await env.send(fake.message_update("/stamp hi color=notacolour", photo=jpeg()))
        (done,) = await finished(env)
        assert done["text"].startswith("❌ Stamp failed at the step “stamp” (Watermark image).")
        assert "What went wrong:" in done["text"] and "colo" in done["text"]
        (status,) = status_messages(env)
        final = await fake.wait_for(lambda: (fake.message(42, status["message_id"]).get("text") or "").startswith("❌")
                                    and fake.message(42, status["message_id"]))
        assert "failed at the step “stamp”" in final["text"]
        assert "shrink — done" in final["text"] and "stamp — failed" in final["text"]


# --- limits, cancel, rerun ------------------------------------------------------------------------------


async def test_runs_in_flight_are_limited_per_user(tmp_path: Path) -> None:
    async with telegram_env(tmp_path, worker=False, telegram_max_runs_in_flight=1) as env:
        fake = env.fake
        await env.send(fake.message_update("/card one"))
        await fake.wait_for(lambda: status_messages(env))
        await env.send(fake.message_update("/card two"))
        (refusal,) = await fake.wait_for(lambda: [t for t in env.texts() if t.startswith("You already have 1 run")])
        assert "the limit is 1" in refusal and "/cancel" in refusal
        assert len(await runs(env)) == 1
        # another user has their own allowance
        await env.send(fake.message_update("/card three", user_id=7))
        await fake.wait_for(lambda: status_messages(env, 7))


async def test_cancel_command_and_cancel_button(tmp_path: Path) -> None:
    async with telegram_env(tmp_path, worker=False) as env:
        fake = env.fake
        await env.send(fake.message_update("/card first"))
        await env.send(fake.message_update("/card second"))
        statuses = await fake.wait_for(lambda: len(status_messages(env)) == 2 and status_messages(env))
        second_run, first_run = await runs(env)  # newest first
        # /cancel cancels the latest run
        await env.send(fake.message_update("/cancel"))
        # its answer is queued after the run's end ("🚫 Card was cancelled.", which a worker
        # delivers): messages to one chat keep their order, so it comes once a worker runs
        # the Cancel button of the first run: another user may not press it
        first_status = next(m for m in statuses if first_run["jobRunId"] in m["text"])
        await env.send(fake.callback_update(f"c:{first_run['jobRunId']}", user_id=7, message=first_status))
        answer = await fake.wait_for(lambda: fake.calls_of("answerCallbackQuery"))
        assert answer[0].params["text"] == "That run is not yours."
        await env.send(fake.callback_update(f"c:{first_run['jobRunId']}", message=first_status))
        await fake.wait_for(lambda: len(fake.calls_of("answerCallbackQuery")) == 2)
        # a queued run is cancelled at once: the press says so (not "It has already finished.")
        assert fake.calls_of("answerCallbackQuery")[1].params["text"] == "Cancelled."
        await env.send(fake.callback_update(f"c:{first_run['jobRunId']}", message=first_status))
        await fake.wait_for(lambda: len(fake.calls_of("answerCallbackQuery")) == 3)
        assert fake.calls_of("answerCallbackQuery")[2].params["text"] == "It has already finished."
        worker = env.app.make_worker(2)
        await worker.run_until_idle(30)
        for item in (first_run, second_run):
            assert (await env.app.get_run(item["jobRunId"]))["status"] == "cancelled"
        done = await finished(env, 2)
        assert all(m["text"].startswith("🚫 Card was cancelled.") for m in done)
        (cancelling,) = await fake.wait_for(lambda: [m for m in env.replies() if m["text"].startswith("Cancelling Card")])
        assert done[0]["message_id"] < cancelling["message_id"] < done[1]["message_id"]
        for status in statuses:
            final = await fake.wait_for(lambda s=status: (fake.message(42, s["message_id"]).get("text") or "").startswith("🚫")
                                        and fake.message(42, s["message_id"]))
            assert "reply_markup" not in final


async def test_rerun_button_runs_the_same_inputs_with_a_new_seed(tmp_path: Path) -> None:
    async with telegram_env(tmp_path) as env:
        fake = env.fake
        await env.send(fake.message_update("/card Again", photo=jpeg()))
        (done,) = await finished(env)
        (rerun,) = [b for b in _buttons(done) if b.startswith("r:")]
        await env.send(fake.callback_update(rerun, user_id=7, message=done))  # not the owner
        await fake.wait_for(lambda: [c for c in fake.calls_of("answerCallbackQuery") if c.params.get("text") == "That run is not yours."])
        await env.send(fake.callback_update(rerun, message=done))
        await finished(env, 2)
        second, first = await runs(env)
        a = (await env.app.get_run(first["jobRunId"]))["jobInputs"]
        b = (await env.app.get_run(second["jobRunId"]))["jobInputs"]
        assert a["prompt"] == b["prompt"] == "Again" and a["image"]["sha256"] == b["image"]["sha256"]
        assert a["seed"] != b["seed"]
        assert len(status_messages(env)) == 2
        assert len(fake.downloads) == 1  # the photo is reused, not downloaded again


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


async def test_the_example_job_from_a_reply_to_a_photo(tmp_path: Path) -> None:
    """The acceptance path: reply to a photo with the example job's command, watch the status
    message move through the steps, receive the images."""
    demo = EXAMPLES / "demo"
    if not (demo / "variants.yaml").is_file():
        import pytest

        pytest.skip("examples/demo is not there")
    async with telegram_env(tmp_path, definitions=[demo]) as env:
        fake = env.fake
        photo = fake.user_message(photo=(EXAMPLES / "assets" / "sample.png").read_bytes())
        await env.send({"update_id": fake.next_update_id(), "message": photo})
        await env.send(fake.message_update("/demo_variants label=Hi min_width=8", reply_to=photo))
        (done,) = await finished(env)
        assert done["text"].startswith("✅ Demo variants is done.")
        (group,) = fake.calls_of("sendMediaGroup")
        assert len(group.params["media"]) == 5  # contact sheet, thumbnail, vivid, mono, stamped (no upscale)
        (status,) = status_messages(env)
        final = await fake.wait_for(lambda: (fake.message(42, status["message_id"]).get("text") or "").startswith("✅")
                                    and fake.message(42, status["message_id"])["text"])
        for step in ("source", "thumbnail", "vivid", "mono", "stamped", "contact_sheet"):
            assert f"{step} — done" in final
        assert "upscale — skipped" in final
