"""What a delivery sends, as Bot API calls within Telegram's documented limits (pure; no I/O).

A finished run's results become a list of ``Part``s: photos (albums of 2-10, each item captioned
with its output's name), videos, documents, long texts as ``.txt`` documents, then the closing
text — split into messages of at most 4,096 characters, the last with the Rerun button. Each part
is planned so that Telegram can take it:

- a photo only when the Bot API's photo limits allow it: JPEG, PNG, WebP or BMP, at most 10 MB,
  width + height at most 10,000, width/height ratio at most 20 (an image whose size is not known
  is tried as a photo: a 400 sends it as a document, see ``channel.py``); anything else as a document;
- a caption of at most 1,024 characters (a longer one goes into the closing message instead);
- a text output longer than ``TEXT_AS_FILE`` characters as a ``.txt`` document, shorter ones in
  the closing message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from toolweave.model.definitions import JobDefinition
from toolweave.model.records import ArtifactRef

MAX_TEXT = 4096
MAX_CAPTION = 1024
MAX_UPLOAD = 50 * 1024 * 1024
MAX_PHOTO = 10 * 1024 * 1024
MAX_PHOTO_SIDES = 10000
MAX_PHOTO_RATIO = 20
MEDIA_GROUP = 10
TEXT_AS_FILE = 3000
"""A text output longer than this goes as a ``.txt`` document rather than into the closing message."""
PHOTO_TYPES = ("image/jpeg", "image/png", "image/webp", "image/bmp")


@dataclass
class Media:
    output: str
    kind: str  # photo | video | document
    filename: str
    ref: ArtifactRef | None = None
    text: str | None = None
    """The content of a text output sent as a ``.txt`` document (instead of ``ref``)."""
    caption: str | None = None


@dataclass
class Part:
    """One Bot API call of a delivery."""

    method: str
    media: list[Media] = field(default_factory=list)
    text: str | None = None
    keyboard: dict[str, Any] | None = None

    def describe(self) -> str:
        names = ", ".join(m.output for m in self.media)
        return f"{self.method}({names})" if names else self.method

    @property
    def is_media(self) -> bool:
        return bool(self.media)


def photo_fits(ref: ArtifactRef) -> bool:
    """Whether the Bot API takes this image as a photo (the documented limits of ``sendPhoto``)."""
    mime = (ref.mime_type or "").split(";")[0].strip().lower()
    if mime not in PHOTO_TYPES or ref.size > MAX_PHOTO:
        return False
    width, height = ref.width or 0, ref.height or 0
    if width and height:
        if width + height > MAX_PHOTO_SIDES:
            return False
        if max(width, height) > MAX_PHOTO_RATIO * min(width, height):
            return False
    return True


def media_kind(ref: ArtifactRef, send_as: str | None) -> str:
    if send_as in ("document", "file"):
        return "document"
    mime = (ref.mime_type or "").lower()
    if mime.startswith("image/") and mime != "image/gif":
        return "photo" if photo_fits(ref) else "document"
    if mime.startswith("video/") or (send_as == "video" and mime == "image/gif"):
        return "video"
    return "document"


def split_text(text: str, limit: int = MAX_TEXT) -> list[str]:
    """``text`` in pieces of at most ``limit`` characters, cut at line ends where it can be, else at
    spaces, else anywhere; nothing is lost and no piece is empty."""
    pieces: list[str] = []
    rest = text
    while len(rest) > limit:
        cut = rest.rfind("\n", 0, limit + 1)
        if cut <= 0:
            cut = rest.rfind(" ", 0, limit + 1)
        if cut <= 0:
            cut = limit
        head, rest = rest[:cut], rest[cut:]
        if rest[:1] in ("\n", " "):
            rest = rest[1:]
        if head.strip():
            pieces.append(head)
    if rest.strip() or not pieces:
        pieces.append(rest)
    return pieces


def spread(pieces: list[str], count: int, like: list[str]) -> list[str]:
    """``split_text``'s ``pieces`` of a text in ``count`` messages when they are fewer (the text of
    messages sent before got shorter, and is edited into them): the last piece is cut in two until
    there are ``count`` — where the piece ``like[i]`` at its place ended (it starts the same: that
    message says the same and needs no edit), else at its last line end, else its last space, else
    in the middle. Fewer than ``count`` when no piece is left to cut."""
    out = list(pieces)
    while 0 < len(out) < count:
        index = len(out) - 1
        piece = out[index]
        cuts = [len(like[index])] if index < len(like) and piece.startswith(like[index]) else []
        cuts += [piece.rfind("\n"), piece.rfind(" "), len(piece) // 2]
        for cut in (c for c in cuts if c > 0):
            head, tail = piece[:cut], piece[cut:]
            tail = tail[1:] if tail[:1] in ("\n", " ") else tail
            if head.strip() and tail.strip():
                out[index:] = [head, tail]
                break
        else:
            break
    return out


def hints(definition: JobDefinition | None, output: str) -> dict[str, Any]:
    """Delivery hints for one output: ``deliveryHints.telegram`` (``send-as``, ``filename``), then
    ``deliveryHints.telegram.outputs.<name>``; ``sendAs``/``send_as`` spellings accepted."""
    if definition is None:
        return {}
    raw = definition.delivery_hints or {}
    found = raw.get("telegram")
    base: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    merged: dict[str, Any] = {k: v for k, v in base.items() if k != "outputs"}
    listed = base.get("outputs")
    per: Mapping[str, Any] = listed if isinstance(listed, Mapping) else {}
    if isinstance(per.get(output), Mapping):
        merged.update(per[output])
    out: dict[str, Any] = {}
    for key, value in merged.items():
        norm = key.replace("-", "").replace("_", "").lower()
        if norm == "sendas":
            out["send_as"] = str(value).lower()
        elif norm == "filename":
            out["filename"] = str(value)
    return out


def ordered_outputs(outputs: Mapping[str, Any], definition: JobDefinition | None) -> list[tuple[str, Any]]:
    order = [o.name for o in definition.output_schema] if definition else []
    names = [n for n in order if n in outputs] + [n for n in outputs if n not in order]
    return [(n, outputs[n]) for n in names]


def flatten(name: str, value: Any) -> list[tuple[str, Any]]:
    if isinstance(value, list):
        return [(f"{name}[{i}]" if len(value) > 1 else name, v) for i, v in enumerate(value)]
    return [(name, value)]


def extension(mime: str) -> str:
    sub = mime.split("/", 1)[-1].split(";")[0].strip() or "bin"
    return {"jpeg": "jpg", "svg+xml": "svg", "quicktime": "mov", "octet-stream": "bin", "plain": "txt"}.get(sub, sub)


def caption_for(label: str) -> str | None:
    """An output's name as a caption, or None when it would be over Telegram's caption limit."""
    return label if len(label) <= MAX_CAPTION else None


def _text_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    import json

    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def plan_results(head: str, outputs: Mapping[str, Any], definition: JobDefinition | None,
                 keyboard: dict[str, Any] | None, notes: list[str] | None = None) -> list[Part]:
    """The parts of a finished run's results: media first (photos as albums), then the closing
    text (``head``, the short values and ``notes``) with ``keyboard`` on its last message."""
    photos: list[Media] = []
    parts: list[Part] = []
    lines: list[str] = []
    for output, whole in ordered_outputs(outputs, definition):
        for label, value in flatten(output, whole):
            ref = ArtifactRef.from_value(value) if isinstance(value, dict) else None
            if ref is None:
                if value is None or value == "":
                    continue
                text = _text_value(value)
                if len(text) > TEXT_AS_FILE or len(f"{label}: {text}") > MAX_TEXT:
                    name = f"{label}.txt".replace("[", "_").replace("]", "")
                    parts.append(Part("sendDocument", media=[Media(label, "document", name, text=text,
                                                                   caption=caption_for(label))]))
                    lines.append(f"{label}: {len(text):,} characters, sent as {name}")
                else:
                    lines.append(f"{label}: {text}")
                continue
            if ref.size > MAX_UPLOAD:
                lines.append(f"{label}: too large for Telegram ({ref.size / 1048576:.0f} MB; bots may send 50 MB)")
                continue
            hint = hints(definition, output)
            kind = media_kind(ref, hint.get("send_as"))
            filename = hint.get("filename") or ref.filename or f"{label}.{extension(ref.mime_type)}"
            caption = caption_for(label)
            if caption is None:
                lines.append(f"(the file {filename} above is the output {label})")
            item = Media(label, kind, filename, ref=ref, caption=caption)
            if kind == "photo":
                photos.append(item)
            else:
                parts.append(Part("sendVideo" if kind == "video" else "sendDocument", media=[item]))
    groups: list[Part] = []
    for start in range(0, len(photos), MEDIA_GROUP):
        chunk = photos[start:start + MEDIA_GROUP]
        groups.append(Part("sendPhoto" if len(chunk) == 1 else "sendMediaGroup", media=chunk))
    if not groups and not parts and not lines:
        lines.append("It produced no outputs.")
    return [*groups, *parts, *closing(head, [*lines, *(notes or [])], keyboard)]


def closing(head: str, lines: list[str], keyboard: dict[str, Any] | None) -> list[Part]:
    """The closing text as messages of at most 4,096 characters; the keyboard goes on the last."""
    pieces = split_text("\n".join([head, *lines]))
    out = [Part("sendMessage", text=piece) for piece in pieces]
    out[-1].keyboard = keyboard
    return out
