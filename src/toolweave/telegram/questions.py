"""Steps that ask a person, in Telegram: the message that says the run needs you (the candidates as
photos, each with its own button; an inline keyboard under the question), the buttons' answers
(``callback_data`` ``a:<question id>:<what>``, at most 64 bytes) and answers by reply to the
question message (which names its question), both checked like any answer (``App.answer``).

Candidates are numbered from 1 here (``#1`` is index 0 of the API).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from toolweave.model.records import ArtifactRef
from toolweave.telegram import notes as notes_

if TYPE_CHECKING:
    from toolweave.app import App

PREFIX = "a"
CALLBACK_LIMIT = 64
"""Telegram's limit on ``callback_data``, in bytes."""
MARK = re.compile(r"\(question (q_[0-9a-z]{26})\)")
"""How a question message names its question (answers by reply find it there)."""
MAX_PHOTO_CANDIDATES = 10
TEXT_LIMIT = 4000
APPROVE, REJECT = "y", "n"


def callback_data(question_id: str, what: str) -> str:
    data = f"{PREFIX}:{question_id}:{what}"
    if len(data.encode()) > CALLBACK_LIMIT:
        raise ValueError(f"callback data {data!r} is longer than {CALLBACK_LIMIT} bytes")
    return data


def _button(text: str, question_id: str, what: str) -> dict[str, str]:
    return {"text": text, "callback_data": callback_data(question_id, what)}


def photo_candidates(question: Mapping[str, Any]) -> list[tuple[int, ArtifactRef]]:
    """The candidates that are images small enough to send as photos (all of them, or none)."""
    found: list[tuple[int, ArtifactRef]] = []
    for index, candidate in enumerate(question.get("candidates") or []):
        ref = ArtifactRef.from_value(candidate) if isinstance(candidate, dict) else None
        if ref is None or not (ref.mime_type or "").startswith("image/") or ref.mime_type == "image/gif":
            return []
        found.append((index, ref))
    return found if len(found) <= MAX_PHOTO_CANDIDATES else []


def candidate_keyboard(question_id: str, index: int, single: bool) -> dict[str, Any] | None:
    """The button under one candidate's photo (choosing one of many is done by reply)."""
    if not single:
        return None
    return {"inline_keyboard": [[_button(f"✅ Choose #{index + 1}", question_id, f"c{index}")]]}


def question_message(name: str, payload: Mapping[str, Any], notes: Sequence[Any] = (),
                     buttons: Sequence[dict[str, Any]] = ()) -> tuple[str, dict[str, Any]]:
    """The text of the question message and its inline keyboard. ``notes`` are what sending the
    candidates found (``notes.py``, about outputs ``#N``): the candidates that could not be shown
    are named, with why; ``buttons`` send again the ones the chat did not let the bot send."""
    question: Mapping[str, Any] = payload.get("question") or {}
    qid = str(payload.get("questionId") or "")
    kind = question.get("kind")
    lines = [f"🙋 {name} needs you: {question.get('text', '')}"]
    rows: list[list[dict[str, str]]] = []
    candidates = list(question.get("candidates") or [])
    single = int(question.get("maxChoices") or 1) == 1
    if kind == "choose":
        photos = photo_candidates(question)
        if not photos:
            for index, candidate in enumerate(candidates):
                lines.append(f"#{index + 1}: {_short(candidate)}")
            if single:
                listed = [_button(f"#{i + 1}", qid, f"c{i}") for i in range(len(candidates))]
                rows += [listed[i:i + 5] for i in range(0, len(listed), 5)]
        # still asked when none could be shown: the run waits for an answer either way, and the
        # person learns why (and may answer, or have an admin allow media and see them, 📥)
        none_shown = bool(photos) and len(_unshown(notes, lines)) >= len(photos)
        if none_shown:
            lines.append("None of the candidates could be shown here: you may still answer without seeing them.")
        if single:
            lines.append("Reply with the number of the one you choose." if none_shown
                         else "Tap the one you choose, or reply with its number.")
        else:
            low, high = question.get("minChoices"), question.get("maxChoices")
            lines.append(f"Reply to this message with the numbers of {low} to {high} of them, e.g. “1 3”.")
        rows.append([_button("✖️ None of them", qid, REJECT)])
    elif kind == "edit":
        for field, value in (question.get("values") or {}).items():
            lines.append(f"{field} = {_short(value)}")
        lines.append("Reply to this message with name=value lines to change values, or:")
        rows.append([_button("✅ Go on as is", qid, APPROVE), _button("✖️ Reject", qid, REJECT)])
    else:
        rows.append([_button("✅ Approve", qid, APPROVE), _button("✖️ Reject", qid, REJECT)])
    again = list(buttons)  # under the answers' buttons, above the last row (None of them, Reject)
    rows[-1:-1] = [again[i:i + 5] for i in range(0, len(again), 5)]
    mark = f"(question {qid})"  # answers by reply find their question by it: never cut off
    return "\n".join(lines)[:TEXT_LIMIT - len(mark) - 1] + "\n" + mark, {"inline_keyboard": rows}


def _unshown(notes: Sequence[Any], lines: list[str]) -> list[str]:
    """The candidates ``notes`` say did not reach the chat, named in ``lines`` by number with why
    (grouped by the reason); the other notes (``#2: sent as a file …``) as they are. Returns the
    numbers not shown."""
    reasons: dict[str, list[str]] = {}
    withheld = False
    for note in notes:
        reason = notes_.not_shown_reason(note)
        if reason is None:
            lines.append(notes_.text(note))
            continue
        withheld = withheld or notes_.kind(note) == "withheld"
        reasons.setdefault(reason, []).extend(str(o) for o in note.get("outputs") or [])
    for reason, labels in reasons.items():
        lines.append(f"⚠️ {', '.join(labels)}: not shown ({reason}).")
    if withheld:
        lines.append("A group admin can allow it (the group's permissions: photos, files; or make the bot an "
                     "admin), then tap 📥 below to see them.")
    return [label for labels in reasons.values() for label in labels]


def unseen(notes: Sequence[Any]) -> dict[int, str]:
    """The candidates (their indexes, from 0) that ``notes`` say did not reach the chat, with why."""
    found: dict[int, str] = {}
    for note in notes:
        reason = notes_.not_shown_reason(note)
        for label in (note.get("outputs") or []) if reason is not None else []:
            number = str(label).removeprefix("#")
            if number.isascii() and number.isdigit():
                found[int(number) - 1] = reason or "it could not be sent"
    return found


def unseen_refusal(chosen: Sequence[Any], unseen_here: Mapping[int, str], candidates: int) -> str | None:
    """What to answer a reply that chooses a candidate the chat was not shown; None when it chose
    only shown ones."""
    picked = [i for i in chosen if isinstance(i, int) and i in unseen_here]
    if not picked:
        return None
    first = picked[0]
    shown = [f"#{i + 1}" for i in range(candidates) if i not in unseen_here]
    among = f"choose among {', '.join(shown)}" if shown else "none was shown here"
    return f"#{first + 1} was not shown here ({unseen_here[first]}): {among}, or tap “None of them”."[:4000]


def parse_callback(data: str) -> tuple[str, dict[str, Any]] | None:
    """``(question id, answer)`` from a button's ``callback_data``; None when it is not an answer."""
    parts = data.split(":")
    if len(parts) != 3 or parts[0] != PREFIX or not parts[1].startswith("q_"):
        return None
    what = parts[2]
    if what == APPROVE:
        return parts[1], {"decision": "approve"}
    if what == REJECT:
        return parts[1], {"decision": "reject"}
    if what.startswith("c") and what[1:].isascii() and what[1:].isdigit() and len(what) <= 7:
        return parts[1], {"chosen": [int(what[1:])]}
    return None


def parse_reply(text: str) -> dict[str, Any]:
    """An answer from a reply to the question message: numbers (``2``, ``1 3``: candidates, from 1),
    ``name=value`` lines (values to edit), or yes / no."""
    text = text.strip()
    lowered = text.lower()
    if lowered in ("yes", "y", "ok", "approve", "✅"):
        return {"decision": "approve"}
    if lowered in ("no", "n", "reject", "none", "✖️"):
        return {"decision": "reject"}
    numbers = re.findall(r"\d+", text)
    if numbers and re.fullmatch(r"[\d\s,#;]+", text):
        return {"chosen": [int(n) - 1 for n in numbers]}
    values: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip():
            values[name.strip()] = value.strip()
    if values:
        return {"values": values}
    return {"decision": text[:100]}  # refused by the answer's checks, with their message


async def answer(app: App, question_id: str, account: str, body: dict[str, Any]) -> str:
    """Answer as ``account``; the sentence to show the person."""
    from toolweave.app import AnswerError, Conflict, NotFound

    try:
        done = await app.answer_question(question_id, account, body)
    except NotFound:
        return "That question is not yours to answer."
    except Conflict as exc:
        return f"Too late: {exc}"[:200]
    except AnswerError as exc:
        if any(p.field.startswith("chosen") for p in exc.problems):
            return "That answer does not fit: choose by the numbers shown (#1, #2, …)."
        problems = "; ".join(f"{p.field}: {p.message}" for p in exc.problems)
        return f"That answer does not fit: {problems}"[:200]
    if done["repeated"]:
        return "You had answered that already."
    return "Thanks! Going on."


def _short(value: Any, limit: int = 200) -> str:
    ref = ArtifactRef.from_value(value) if isinstance(value, dict) else None
    if ref is not None:
        return f"{ref.mime_type} file"
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
