"""A workflow's Note nodes: the tool's description, and delivery hints from ``@bot`` lines.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from toolweave.comfy.convert import NOTE_TYPES

_BOT_LINE = re.compile(r"^\s*@bot\s+(?P<platform>[A-Za-z0-9_-]+)\s*(?P<params>.*)$")


def parse_bot_line(line: str) -> tuple[str, dict[str, Any]] | None:
    """``@bot telegram send-as=document,filename=x.png`` → ``("telegram", {"send-as": …, …})``."""
    match = _BOT_LINE.match(line)
    if match is None:
        return None
    params: dict[str, Any] = {}
    for part in re.split(r"[,\s]+", match["params"].strip()):
        if not part:
            continue
        key, sep, value = part.partition("=")
        params[key] = value if sep else True
    return match["platform"].lower(), params


def _note_position(node: Mapping[str, Any]) -> tuple[float, float]:
    pos = node.get("pos")
    try:
        if isinstance(pos, Mapping):
            return float(pos.get("1", 0)), float(pos.get("0", 0))
        if isinstance(pos, list | tuple) and len(pos) >= 2:
            return float(pos[1]), float(pos[0])
    except (TypeError, ValueError):
        pass
    return 0.0, 0.0


def notes_of(workflow: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The text of the top-level Note and MarkdownNote nodes (top to bottom) and the ``@bot`` hints."""
    if not isinstance(workflow.get("nodes"), list):
        return "", {}
    notes = [n for n in workflow["nodes"] if isinstance(n, Mapping) and n.get("type") in NOTE_TYPES]
    notes.sort(key=_note_position)
    texts: list[str] = []
    hints: dict[str, Any] = {}
    for note in notes:
        values = note.get("widgets_values")
        text = values[0] if isinstance(values, list) and values and isinstance(values[0], str) else ""
        kept: list[str] = []
        for line in text.splitlines():
            parsed = parse_bot_line(line)
            if parsed is None:
                kept.append(line)
            else:
                platform, params = parsed
                hints.setdefault(platform, {}).update(params)
        body = "\n".join(kept).strip()
        if body:
            texts.append(body)
    return "\n\n".join(texts), hints
