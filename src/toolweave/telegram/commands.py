"""Pure parts of the bot: which commands exist, how a command's message maps to inputs.

Nothing here does I/O, so it is tested directly (``tests/unit/test_telegram_commands.py``).

- ``command_table`` builds the command list from the public tools and jobs (their ``commandName``);
- ``classify`` picks the handler type (the seed's ``telegramHandlerType``) and the primary text and
  media inputs from the input schema and ``platformHints``;
- ``parse_arguments`` splits a command's text into the primary text and ``key=value`` pairs;
- ``missing_inputs`` lists the required inputs that a message did not fill.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from toolweave.inputs import check_value, visibility
from toolweave.model.definitions import InputParam, JobDefinition, ParamType, ToolDefinition

RESERVED = ("start", "help", "status", "cancel")
"""The bot's own commands; a tool or job with one of these command names is not offered."""

MAX_COMMANDS = 100
"""Telegram accepts at most 100 commands in setMyCommands."""

HANDLER_TYPES = (
    "text_only",
    "image_required_with_text",
    "image_only",
    "text_primary_media_optional",
    "video_required_with_text",
    "video_only",
    "text_primary_video_optional",
)

_TEXT_TYPES = (ParamType.STRING, ParamType.TEXT)
_PROMPT_NAMES = ("prompt", "text_prompt", "positive_prompt", "input_text", "text", "caption", "query")
_IMAGE_NAMES = ("input_image", "init_image", "image", "source_image", "image_to_upscale")
_VIDEO_NAMES = ("input_video", "video", "source_video")


@dataclass(frozen=True)
class CommandEntry:
    command: str
    target_id: str
    kind: str  # "job" | "tool"
    display_name: str
    description: str


@dataclass(frozen=True)
class CommandSpec:
    """How one command reads its inputs."""

    handler_type: str
    text_input: str | None
    media_input: str | None
    media_type: ParamType | None
    media_required: bool
    params: tuple[InputParam, ...] = field(default=())

    def param(self, name: str) -> InputParam | None:
        return next((p for p in self.params if p.name == name), None)


_MARKUP_RE = re.compile(r"\*\*|__|`+")
_LINK_RE = re.compile(r"\[([^\]]+)\]\([^)]*\)")


def plain(text: str) -> str:
    """Markdown marks taken out of a description (Telegram shows command descriptions as they are):
    backticks, ``**``/``__``, and ``[text](url)`` links, which keep their text."""
    return _MARKUP_RE.sub("", _LINK_RE.sub(r"\1", text))


def _describe(definition: ToolDefinition | JobDefinition) -> str:
    text = (definition.description or definition.display_name or definition.command_name or "").strip()
    text = " ".join(plain(text).split())
    if not text:  # Telegram wants 1-256 characters
        text = "Run it"
    return text if len(text) <= 256 else text[:255] + "…"


def command_table(
    tools: Iterable[ToolDefinition], jobs: Iterable[JobDefinition]
) -> dict[str, CommandEntry]:
    """Command name → what it runs: jobs first, then tools; the bot's own commands and duplicates
    are left out; at most ``MAX_COMMANDS - len(RESERVED)`` entries, in a stable order."""
    table: dict[str, CommandEntry] = {}
    room = MAX_COMMANDS - len(RESERVED)
    items: list[tuple[str, ToolDefinition | JobDefinition]] = [("job", j) for j in jobs]
    items += [("tool", t) for t in tools]
    for kind, definition in items:
        name = definition.command_name
        if not name or name in RESERVED or name in table or len(table) >= room:
            continue
        target = definition.job_id if isinstance(definition, JobDefinition) else definition.tool_id
        table[name] = CommandEntry(name, target, kind, definition.display_name, _describe(definition))
    return table


def _pick(params: list[InputParam], names: tuple[str, ...]) -> InputParam | None:
    for wanted in names:
        for p in params:
            if p.name.lower() == wanted:
                return p
    return None


def classify(definition: ToolDefinition | JobDefinition) -> CommandSpec:
    """The handler type and primary inputs of a tool or job.

    ``platformHints.primaryInput`` names the primary input (text or media); otherwise well-known
    names (``prompt``, ``input_image``, ...) and then the first required input of the kind are used.
    ``platformHints.handlerType`` wins when it is one of ``HANDLER_TYPES``.
    """
    params = list(definition.input_schema)
    hints = definition.platform_hints
    primary = definition.input(hints.primary_input) if hints.primary_input else None
    texts = [p for p in params if p.type in _TEXT_TYPES]
    media = [p for p in params if p.type in (ParamType.IMAGE, ParamType.VIDEO)]

    text_input = primary if primary is not None and primary.type in _TEXT_TYPES else None
    if text_input is None:
        text_input = (
            _pick(texts, _PROMPT_NAMES)
            or next((p for p in texts if p.required and p.default is None), None)
            or (texts[0] if len(texts) == 1 and not media else None)
        )
    media_input = primary if primary is not None and primary.type in (ParamType.IMAGE, ParamType.VIDEO) else None
    if media_input is None:
        media_input = (
            _pick(media, _IMAGE_NAMES)
            or _pick(media, _VIDEO_NAMES)
            or next((p for p in media if p.required), None)
            or (media[0] if media else None)
        )
    media_type = media_input.type if media_input is not None else None
    media_required = bool(media_input is not None and media_input.required and media_input.default is None)

    video = media_type is ParamType.VIDEO
    if media_input is None:
        handler = "text_only"
    elif media_required and text_input is not None:
        handler = "video_required_with_text" if video else "image_required_with_text"
    elif media_required or text_input is None:
        handler = "video_only" if video else "image_only"
    else:
        handler = "text_primary_video_optional" if video else "text_primary_media_optional"
    if hints.handler_type in HANDLER_TYPES:
        handler = hints.handler_type
    return CommandSpec(handler, text_input.name if text_input else None,
                       media_input.name if media_input else None, media_type, media_required, tuple(params))


_PAIR_RE = re.compile(
    r"""(?:(?<=\s)|^)(?P<key>[A-Za-z_][A-Za-z0-9_]*)=(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'|(?P<bare>\S*))"""
)


class ArgumentError(ValueError):
    """A command's text that cannot be read; the message is meant for the user."""


class UserFacingError(Exception):
    """A problem to tell the user in plain words (the bot replies with it)."""


def parse_arguments(text: str, spec: CommandSpec) -> tuple[dict[str, str], list[str]]:
    """Split a command's text into inputs: ``key=value`` pairs naming inputs fill those inputs
    (quotes allowed: ``style="oil paint"``), the rest fills the primary text input.

    Returns ``(inputs, notes)``; ``notes`` are plain sentences about ignored parts. Raises
    ``ArgumentError`` for a pair naming no input when there is no text input to take it, for
    text given to a command that takes none, and for an input given twice.
    """
    names = {p.name for p in spec.params}
    inputs: dict[str, str] = {}
    kept: list[str] = []
    position = 0
    for match in _PAIR_RE.finditer(text):
        key = match["key"]
        value = next(v for v in (match["dq"], match["sq"], match["bare"]) if v is not None)
        if key not in names:
            if spec.text_input is None:
                raise ArgumentError(f"{key} is not an input of this command (inputs: {', '.join(sorted(names)) or 'none'})")
            continue  # part of the prompt, e.g. "a=b"
        if key in inputs:
            raise ArgumentError(f"{key} is given twice")
        kept.append(text[position:match.start()])
        position = match.end()
        inputs[key] = value
    kept.append(text[position:])
    rest = " ".join(" ".join(kept).split())
    notes: list[str] = []
    if rest:
        if spec.text_input is None:
            raise ArgumentError(
                "this command takes no free text; give its inputs as name=value"
                + (f" (inputs: {', '.join(p.name for p in spec.params)})" if spec.params else "")
            )
        if spec.text_input in inputs:
            raise ArgumentError(f"{spec.text_input} is given twice (as text and as {spec.text_input}=)")
        inputs[spec.text_input] = rest
    return inputs, notes


def missing_inputs(spec: CommandSpec, given: Mapping[str, Any]) -> list[InputParam]:
    """Required inputs without a default that ``given`` leaves empty, media first then schema order.
    An input hidden by its ``visibleIf`` (with the answers so far) is not asked for."""
    shown = visibility(list(spec.params), given)
    out = [
        p for p in spec.params
        if p.required and p.default is None and p.type is not ParamType.SEED and shown.get(p.name, True)
        and (given.get(p.name) is None or (isinstance(given.get(p.name), str) and not str(given[p.name]).strip()))
    ]
    out.sort(key=lambda p: 0 if p.type.is_media else 1)
    return out


_ELSEWHERE_RE = re.compile(r"\b(url|urls|uri|path|paths|data:|https?|file path|local)\b", re.IGNORECASE)


def ask_hint(param: InputParam) -> str | None:
    """The description to show when asking a chat user for ``param``, or None. A media input is
    answered with a photo or a file in the chat: a description that speaks of URLs, data: URIs or
    local paths (how other front ends give it) would mislead, and is left out."""
    text = " ".join(plain(param.description or "").split())
    if not text:
        return None
    if param.type.is_media and _ELSEWHERE_RE.search(text):
        return None
    return text


OWN_COMMANDS = (("help", "List the commands"), ("status", "Your recent runs (in a group: this group's)"),
                ("cancel", "Cancel your latest run, or the question I am waiting on"))


def help_pages(entries: Iterable[CommandEntry], limit: int = 4096) -> list[str]:
    """``/help`` as pages of at most ``limit`` characters: an entry is never cut, and every page
    names the bot's own commands (``/status``, ``/cancel``) and how to reach the other pages."""
    intro = ("I run tools and jobs for you. Send a command with your text; reply with a command to a photo "
             "to use that photo. Give other inputs as name=value.")
    own = "\n".join(f"/{name} — {text}" for name, text in OWN_COMMANDS)
    lines = [f"/{e.command} — {e.description}" for e in entries] or ["(No tools or jobs are available yet.)"]
    footer_room = len("\n\nPage 999 of 999 — /help 999 for the next one.")
    pages: list[list[str]] = [[]]
    first_fixed = len(intro) + 2 + len(own) + 2
    fixed = len(own) + 2
    for line in lines:
        line = line if len(line) <= limit - first_fixed - footer_room - 1 else line[: limit - first_fixed - footer_room - 2] + "…"
        room = limit - (first_fixed if len(pages) == 1 else fixed) - footer_room
        used = sum(len(x) + 1 for x in pages[-1])
        if pages[-1] and used + len(line) + 1 > room:
            pages.append([])
        pages[-1].append(line)
    out = []
    for number, page in enumerate(pages, start=1):
        head = f"{intro}\n\n" if number == 1 else ""
        text = f"{head}{chr(10).join(page)}\n\n{own}"
        if len(pages) > 1:
            more = f" — /help {number + 1} for the next one" if number < len(pages) else ""
            text += f"\n\nPage {number} of {len(pages)}{more}."
        out.append(text)
    return out


def check_answer(param: InputParam, value: Any) -> str | None:
    """A plain sentence naming ``param`` when ``value`` does not fit it, else None."""
    if param.type.is_media:
        return None
    try:
        check_value(param, value, coerce_text=True, allow_paths=False)
    except ValueError as exc:
        return f"{param.name} {exc}"
    return None


def media_kind_ok(param_type: ParamType | None, mime_type: str) -> bool:
    """Whether a file of ``mime_type`` may fill an input of ``param_type``."""
    if param_type is ParamType.IMAGE:
        return mime_type.startswith("image/")
    if param_type is ParamType.VIDEO:
        return mime_type.startswith("video/") or mime_type == "image/gif"
    return param_type is not None


__all__ = [
    "HANDLER_TYPES",
    "OWN_COMMANDS",
    "RESERVED",
    "ArgumentError",
    "CommandEntry",
    "CommandSpec",
    "UserFacingError",
    "ask_hint",
    "check_answer",
    "classify",
    "command_table",
    "help_pages",
    "missing_inputs",
    "parse_arguments",
    "plain",
]
