"""What a delivery says about the files that went another way: the lines its closing message (or a
question) adds, kept as records in ``kv("telegram.sent", notification_id)["notes"]`` so that
whoever reads them — the closing message, a question naming its candidates not shown, an answer by
reply, a resend — reads fields, never our own phrasing. A note is a dict:

- ``kind``: ``asFile`` (sent as a document instead), ``refused`` (Telegram refused it in every
  form), ``gone`` (no longer stored), ``withheld`` (the chat does not let the bot send it: kept in
  doubt, with a 📥 button), ``interrupted`` (may or may not have arrived: kept in doubt, with a 📥
  button), ``resent`` (kept in doubt, then sent again when the 📥 button was pressed);
- ``outputs``: the outputs (``#N`` for a question's candidates) it is about;
- ``why``: Telegram's words (``refused``, ``asFile``), or what the bot may not send (``withheld``,
  ``asFile`` when ``right``);
- ``part``: the index of the delivery's part it keeps in doubt (``withheld``, ``interrupted``);
- ``text``: the line as shown.

Records written before notes had fields are plain strings: shown as they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Note = dict[str, Any]

NOT_SHOWN = ("gone", "refused", "withheld")
"""Notes of files that did not reach the chat (those in doubt, ``interrupted``, may have)."""
IN_DOUBT = ("withheld", "interrupted")
"""Notes a 📥 button goes with (a resend that delivers their files resolves them)."""


def short(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def gone(output: str) -> Note:
    return {"kind": "gone", "outputs": [output], "why": "it is no longer stored",
            "text": f"{output}: could not be sent (it is no longer stored)"}


def refused(output: str, why: str) -> Note:
    return {"kind": "refused", "outputs": [output], "why": why, "text": f"{output}: could not be sent ({why})"}


def as_file(output: str, why: str, *, right: bool, as_what: str = "photo") -> Note:
    """Sent as a document: the chat lacks the ``right`` to send ``why`` ("photos"), or Telegram
    refused it as a ``as_what`` with ``why`` (its words)."""
    text = (f"{output}: sent as a file (the bot may not send {why} in this chat)" if right
            else f"{output}: sent as a file (Telegram refused it as a {as_what}: {why})")
    return {"kind": "asFile", "outputs": [output], "why": why, "right": right, "text": text}


def withheld(outputs: Sequence[str], lacking: str, part: int) -> Note:
    labels = ", ".join(outputs)
    what = lacking or "media"
    return {"kind": "withheld", "outputs": list(outputs), "why": what, "part": part,
            "text": (f"⚠️ {labels}: not sent: the bot may not send {what} in this chat. A group admin can allow it "
                     "(the group's permissions: photos, videos, files; or make the bot an admin), then tap "
                     f"“📥 {short(labels, 40)}” below.")}


def interrupted(outputs: Sequence[str], part: int, button: Sequence[str] | None = None) -> Note:
    """``outputs`` may or may not have arrived; the 📥 button that sends them again names ``button``
    (all the part's items in doubt, when these are some of them)."""
    labels = ", ".join(outputs)
    return {"kind": "interrupted", "outputs": list(outputs), "part": part,
            "text": (f"⚠️ {labels}: sending was interrupted. If it did not arrive above, "
                     f"tap “📥 {short(', '.join(button or outputs), 40)}” below.")}


def resent(outputs: Sequence[str], part: int) -> Note:
    return {"kind": "resent", "outputs": list(outputs), "part": part,
            "text": f"✅ {', '.join(outputs)}: sent again below."}


def text(note: Any) -> str:
    return str(note.get("text") or "") if isinstance(note, Mapping) else str(note)


def texts(notes: Iterable[Any]) -> list[str]:
    return [text(n) for n in notes]


def kind(note: Any) -> str | None:
    return str(note.get("kind")) if isinstance(note, Mapping) else None


def not_shown_reason(note: Any) -> str | None:
    """Why the outputs of ``note`` did not reach the chat, or None when they did (or may have)."""
    if kind(note) not in NOT_SHOWN:
        return None
    why = str(note.get("why") or "")
    return f"the bot may not send {why} in this chat" if kind(note) == "withheld" else why


def resolve(notes: Sequence[Any], part: int, sent: Sequence[str], still: Sequence[str]) -> list[Any]:
    """``notes`` once a resend of part ``part`` delivered ``sent`` (``still`` are the part's
    outputs still in doubt): its notes in doubt name only what is still missing, and one note says
    what was sent again, where the first of them was."""
    out: list[Any] = []
    placed = False
    for note in notes:
        if kind(note) not in IN_DOUBT or note.get("part") != part or not set(note.get("outputs") or []) & set(sent):
            out.append(note)
            continue
        if not placed:
            out.append(resent(sent, part))
            placed = True
        left = [o for o in note.get("outputs") or [] if o not in sent]
        if left and kind(note) == "withheld":
            out.append(withheld(left, str(note.get("why") or ""), part))
        elif left:
            out.append(interrupted(left, part, still))
    return out
