"""The pure parts of the Telegram bot: command table, handler types, argument parsing, status text."""

from __future__ import annotations

import pytest

from toolweave.model.definitions import (
    InputParam,
    JobDefinition,
    ParamType,
    PlatformHints,
    ToolDefinition,
    VisibleIf,
)
from toolweave.telegram.channel import failure_text, telegram_notification_rule
from toolweave.telegram.commands import (
    ArgumentError,
    check_answer,
    classify,
    command_table,
    missing_inputs,
    parse_arguments,
)
from toolweave.telegram.status import render_status


def tool(tool_id: str, *params: InputParam, hints: PlatformHints | None = None, **kw: object) -> ToolDefinition:
    return ToolDefinition(tool_id=tool_id, service="builtin", input_schema=list(params),
                          platform_hints=hints or PlatformHints(), **kw)  # type: ignore[arg-type]


def p(name: str, kind: str, required: bool = False, **kw: object) -> InputParam:
    return InputParam(name=name, type=ParamType(kind), required=required, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("params", "hints", "expected"),
    [
        ([p("prompt", "text", True), p("steps", "integer")], None, "text_only"),
        ([p("input_image", "image", True), p("prompt", "text", True)], None, "image_required_with_text"),
        ([p("image", "image", True), p("scale", "number")], None, "image_only"),
        ([p("prompt", "text", True), p("init_image", "image")], None, "text_primary_media_optional"),
        ([p("video", "video", True), p("prompt", "string", True)], None, "video_required_with_text"),
        ([p("clip", "video", True)], None, "video_only"),
        ([p("prompt", "text", True), p("clip", "video")], None, "text_primary_video_optional"),
        ([p("prompt", "text", True), p("image", "image")], PlatformHints(handler_type="text_only"), "text_only"),
        ([p("prompt", "text", True)], PlatformHints(handler_type="sync"), "text_only"),  # not a Telegram type
    ],
)
def test_handler_types(params: list[InputParam], hints: PlatformHints | None, expected: str) -> None:
    assert classify(tool("t", *params, hints=hints)).handler_type == expected


def test_primary_input_hint_wins() -> None:
    spec = classify(tool("t", p("prompt", "text", True), p("caption", "text"), p("a", "image"), p("b", "image"),
                         hints=PlatformHints(primary_input="b")))
    assert spec.media_input == "b" and spec.text_input == "prompt"
    spec = classify(tool("t", p("prompt", "text", True), p("style", "text", True), hints=PlatformHints(primary_input="style")))
    assert spec.text_input == "style"


def test_command_table_skips_hidden_reserved_and_duplicates() -> None:
    tools = [tool("a", command_name="shared"), tool("b", command_name="help"), tool("c", command_name="only_tool")]
    job = JobDefinition(job_id="j", command_name="shared", steps=[{"stepId": "s", "toolId": "a"}])  # type: ignore[list-item]
    table = command_table(tools, [job])
    assert list(table) == ["shared", "only_tool"]
    assert table["shared"].target_id == "j" and table["shared"].kind == "job"
    many = [tool(f"t{i}", command_name=f"cmd{i}") for i in range(150)]
    assert len(command_table(many, [])) == 96  # 100 minus /start /help /status /cancel
    assert all(1 <= len(e.description) <= 256 for e in command_table(many, []).values())


def test_parse_arguments() -> None:
    spec = classify(tool("t", p("prompt", "text", True), p("steps", "integer"), p("style", "string")))
    assert parse_arguments('a cat steps=20 style="oil paint" on a mat', spec) == (
        {"steps": "20", "style": "oil paint", "prompt": "a cat on a mat"}, [])
    assert parse_arguments("x=1 and y=2", spec)[0] == {"prompt": "x=1 and y=2"}  # not inputs: part of the prompt
    assert parse_arguments("", spec) == ({}, [])
    with pytest.raises(ArgumentError, match="steps is given twice"):
        parse_arguments("steps=1 steps=2", spec)
    with pytest.raises(ArgumentError, match="prompt is given twice"):
        parse_arguments("cat prompt=dog", spec)
    image_only = classify(tool("u", p("image", "image", True), p("scale", "number")))
    assert parse_arguments("scale=2", image_only)[0] == {"scale": "2"}
    with pytest.raises(ArgumentError, match="takes no free text"):
        parse_arguments("make it big", image_only)
    with pytest.raises(ArgumentError, match="sharpness is not an input"):
        parse_arguments("sharpness=2", image_only)


def test_missing_inputs_and_answers() -> None:
    spec = classify(tool("t", p("prompt", "text", True), p("image", "image", True), p("seed", "seed", True),
                         p("n", "integer", True, default=1)))
    assert [x.name for x in missing_inputs(spec, {})] == ["image", "prompt"]  # media first; seeds and defaults never
    assert missing_inputs(spec, {"prompt": "  ", "image": {"kind": "artifact"}})[0].name == "prompt"
    n = p("n", "integer", maximum=4)
    assert check_answer(n, "3") is None
    assert check_answer(n, "seven") == "n must be a whole number (got 'seven')"
    assert check_answer(n, "9") == "n must be at most 4 (got 9)"


def test_a_question_is_asked_only_for_a_visible_input() -> None:
    """The predecessor's string tool: append is asked for after 'concat', search after 'replace'."""
    operation = p("operation", "enum", True, enum=["concat", "replace"])
    append = p("append", "string", True, visible_if=VisibleIf(field="operation", values=["concat"]))
    search = p("search", "string", True, visible_if=VisibleIf(field="operation", values=["replace"]))
    spec = classify(tool("s", operation, p("text", "string", True), append, search))
    assert [x.name for x in missing_inputs(spec, {})] == ["operation", "text"]
    assert [x.name for x in missing_inputs(spec, {"operation": "Replace", "text": "a"})] == ["search"]
    assert [x.name for x in missing_inputs(spec, {"operation": "concat", "text": "a"})] == ["append"]


def test_notification_rule() -> None:
    class Run:
        def __init__(self, origin: dict[str, object]) -> None:
            self.origin = origin

    rule = telegram_notification_rule
    assert rule(Run({"platform": "telegram", "chatId": 5, "messageId": 9}), None) == [  # type: ignore[arg-type]
        ("telegram", {"chatId": 5, "replyTo": 9})]
    assert rule(Run({"platform": "http"}), None) == []  # type: ignore[arg-type]


def test_failure_and_status_texts() -> None:
    job = JobDefinition(job_id="j", display_name="Make", steps=[{"stepId": "a", "toolId": "x"}, {"stepId": "b", "toolId": "y"}])  # type: ignore[list-item]
    text = failure_text("Make", {"message": "step b failed: the GPU fell over", "step_id": "b"}, job, "Upscaler")
    assert text == "❌ Make failed at the step “b” (Upscaler).\nWhat went wrong: the GPU fell over"
    assert failure_text("Make", {"message": "late", "code": "deadline"}, job) == "❌ Make failed: it ran past its time limit."
    run = {"jobRunId": "run_1", "status": "running", "stepStatuses": [
        {"stepId": "a", "status": "succeeded", "durationMs": 1500},
        {"stepId": "b", "status": "running", "progress": 0.4},
        {"stepId": "c", "status": "pending"}]}
    assert render_status(run, "Make") == (
        "🔄 Make — running\n✅ a — done in 1.5 s\n🔄 b — running 40%\n⏳ c — waiting\nRun run_1")
    held = {"jobRunId": "run_3", "status": "running", "stepStatuses": [{"stepId": "a", "status": "running"}],
            "statusDetail": "step a is waiting for a free slot of comfyui:local (1 of 1 in use)"}
    assert render_status(held, "Make") == (
        "🔄 Make — running (step a is waiting for a free slot of comfyui:local (1 of 1 in use))\nRun run_3")
    run = {"jobRunId": "run_2", "status": "completed", "durationMs": 2000, "stepStatuses": [{"stepId": "a", "status": "succeeded"}]}
    assert render_status(run, "One") == "✅ One — done in 2.0 s\nRun run_2"
