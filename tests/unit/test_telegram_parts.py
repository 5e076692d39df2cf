"""What a Telegram delivery sends, within the Bot API's documented limits; /help pages; the words
the bot shows; the outbox's backoff."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from toolweave.model.definitions import InputParam, JobDefinition, ParamType
from toolweave.model.records import ArtifactRef
from toolweave.notify.dispatcher import backoff
from toolweave.telegram.commands import OWN_COMMANDS, CommandEntry, ask_hint, help_pages, plain
from toolweave.telegram.parts import MAX_CAPTION, MAX_TEXT, Part, photo_fits, plan_results, split_text, spread


def image(mime: str = "image/png", width: int | None = 100, height: int | None = 80, size: int = 1000, **kw: Any) -> dict[str, Any]:
    ref: dict[str, Any] = {"kind": "artifact", "sha256": "a" * 64, "mimeType": mime, "size": size, **kw}
    if width is not None:
        ref["width"] = width
    if height is not None:
        ref["height"] = height
    return ref


@pytest.mark.parametrize(
    ("value", "fits"),
    [
        (image(), True),
        (image("image/jpeg", 5000, 5000), True),  # width + height = 10,000 exactly
        (image("image/jpeg", 5000, 5001), False),  # over 10,000 together
        (image("image/png", 640, 32), True),  # ratio 20 exactly
        (image("image/png", 640, 20), False),  # ratio 32
        (image("image/png", 20, 640), False),
        (image("image/png", size=10 * 1024 * 1024), True),
        (image("image/png", size=10 * 1024 * 1024 + 1), False),  # over 10 MB
        (image("image/tiff"), False),  # a format Telegram does not take as a photo
        (image("image/svg+xml"), False),
        (image("image/webp"), True),
        (image("image/png", None, None), True),  # size unknown: tried (a 400 sends it as a document)
    ],
)
def test_photos_are_checked_against_the_documented_limits(value: dict[str, Any], fits: bool) -> None:
    ref = ArtifactRef.from_value(value)
    assert ref is not None and photo_fits(ref) is fits


@given(st.text(alphabet=st.sampled_from("ab \n"), max_size=20000), st.integers(min_value=5, max_value=5000))
def test_split_text_loses_nothing_and_keeps_every_piece_within_the_limit(text: str, limit: int) -> None:
    pieces = split_text(text, limit)
    assert pieces and all(len(p) <= limit for p in pieces)
    assert all(p.strip() for p in pieces) or len(pieces) == 1
    assert "".join(text.split()) == "".join("".join(pieces).split())  # only the cut whitespace goes


def _methods(parts: list[Part]) -> list[str]:
    return [p.method for p in parts]


def test_results_go_in_forms_telegram_takes_and_album_items_carry_their_output_names() -> None:
    outputs = {
        "a": image(), "b": image("image/jpeg"), "strip": image(width=640, height=20), "scan": image("image/tiff"),
        "story": "x" * 5000, "note": "short", "many": [image(), image()],
    }
    parts = plan_results("✅ Done.", outputs, None, {"inline_keyboard": []})
    assert _methods(parts) == ["sendMediaGroup", "sendDocument", "sendDocument", "sendDocument", "sendMessage"]
    album = parts[0]
    assert [m.caption for m in album.media] == ["a", "b", "many[0]", "many[1]"]
    documents = {m.output: m for p in parts[1:4] for m in p.media}
    assert documents["story"].text == "x" * 5000 and documents["story"].filename == "story.txt"
    assert documents["strip"].kind == documents["scan"].kind == "document"
    closing = parts[-1]
    assert closing.keyboard == {"inline_keyboard": []}
    assert "note: short" in (closing.text or "") and "story: 5,000 characters, sent as story.txt" in (closing.text or "")


def test_more_than_ten_photos_make_several_albums_and_a_single_one_a_photo() -> None:
    parts = plan_results("✅", {"pics": [image() for _ in range(11)]}, None, None)
    assert _methods(parts) == ["sendMediaGroup", "sendPhoto", "sendMessage"]
    assert len(parts[0].media) == 10


def test_a_long_closing_text_is_split_with_the_buttons_on_the_last_message() -> None:
    outputs = {f"value_{i}": "y" * 2000 for i in range(5)}
    parts = plan_results("✅ Done.", outputs, None, {"inline_keyboard": [[{"text": "r", "callback_data": "r:x"}]]})
    texts = [p for p in parts if p.method == "sendMessage"]
    assert len(texts) >= 3 and all(len(p.text or "") <= MAX_TEXT for p in texts)
    assert [p.keyboard is not None for p in texts] == [False] * (len(texts) - 1) + [True]
    assert sum((p.text or "").count("y" * 2000) for p in texts) == 5  # nothing cut


def test_a_caption_over_the_limit_goes_into_the_closing_message() -> None:
    label = "n" * (MAX_CAPTION + 1)
    parts = plan_results("✅", {label: image()}, None, None)
    assert parts[0].media[0].caption is None
    assert label in (parts[-1].text or "")


def test_help_pages_never_cut_an_entry_and_always_name_status_and_cancel() -> None:
    entries = [CommandEntry(f"tool_{i:02d}", f"t{i}", "tool", f"Tool {i}", f"Does thing number {i}. " * 10)
               for i in range(50)]
    pages = help_pages(entries)
    assert len(pages) > 1 and all(len(page) <= 4096 for page in pages)
    for number, page in enumerate(pages, start=1):
        assert "/status —" in page and "/cancel —" in page and f"Page {number} of {len(pages)}" in page
    listed = [line for page in pages for line in page.splitlines() if line.startswith("/tool_")]
    assert listed == [f"/{e.command} — {e.description}" for e in entries]  # each whole, once, in order
    assert help_pages(entries[:3])[0].count("Page") == 0


def test_descriptions_lose_their_markdown_marks() -> None:
    assert plain("Upscale with `scale=2` or **more**, see [the docs](https://x.y)") == \
        "Upscale with scale=2 or more, see the docs"
    assert [n for n, _ in OWN_COMMANDS] == ["help", "status", "cancel"]


def test_the_question_for_a_media_input_does_not_speak_of_urls_or_paths() -> None:
    media = InputParam(name="image", type=ParamType.IMAGE, description="An http(s) URL, a data: URI or a local path")
    assert ask_hint(media) is None
    assert ask_hint(InputParam(name="image", type=ParamType.IMAGE, description="The `photo` to stamp.")) == "The photo to stamp."
    assert ask_hint(InputParam(name="site", type=ParamType.STRING, description="The URL to visit")) == "The URL to visit"


def test_backoff_doubles_to_its_ceiling_and_honours_retry_after() -> None:
    delays = [backoff(n, first=2.0, ceiling=300.0) for n in range(1, 30)]
    assert all(1.0 <= d <= 300.0 for d in delays)
    assert max(delays[-10:]) <= 300.0 and min(delays[-10:]) >= 150.0  # at the ceiling
    assert backoff(1, 42.0) >= 42.0
    assert backoff(500) <= 300.0  # no overflow however many attempts


def test_the_results_plan_of_a_job_keeps_its_output_order() -> None:
    job = JobDefinition.model_validate({
        "jobId": "j", "steps": [{"stepId": "s", "toolId": "t"}],
        "outputSchema": {"second": {"type": "image", "sourceStepId": "s", "sourceOutputName": "x"},
                         "first": {"type": "image", "sourceStepId": "s", "sourceOutputName": "y"}},
    })
    parts = plan_results("✅", {"first": image(), "second": image()}, job, None)
    assert [m.output for m in parts[0].media] == ["second", "first"]


def test_the_notification_settings_are_seconds_and_a_bad_one_is_named() -> None:
    from toolweave.settings import Settings

    settings = Settings.load({"TOOLWEAVE_HOME": "/nonexistent-home", "TOOLWEAVE_NOTIFICATION_HORIZON_SECONDS": "3600",
                              "TOOLWEAVE_NOTIFICATION_MAX_BACKOFF_SECONDS": "2.5"})
    assert settings.notification_horizon_seconds == 3600.0 and settings.notification_max_backoff_seconds == 2.5
    with pytest.raises(ValueError, match=r"notification_horizon_seconds = 'abc'.*must be a number of seconds"):
        Settings.load({"TOOLWEAVE_HOME": "/nonexistent-home", "TOOLWEAVE_NOTIFICATION_HORIZON_SECONDS": "abc"})


def test_a_shorter_text_is_spread_over_as_many_messages_as_before() -> None:
    # cut where the old first message ended: it says the same
    assert spread(["head\nmore\nlast"], 2, ["head", "old\nlines"]) == ["head", "more\nlast"]
    # else at the last line end, then a space, then anywhere; never an empty message
    assert spread(["a\nb c"], 3, []) == ["a", "b", "c"]
    assert spread(["abcd"], 2, []) == ["ab", "cd"]
    assert spread(["x"], 2, []) == ["x"]
    assert spread(["a\n\n"], 2, []) == ["a\n\n"]
    assert spread(["one", "two"], 2, []) == ["one", "two"]
