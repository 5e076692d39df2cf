"""Sending one part of a delivery (``parts.Part``) through the Bot API, another way when Telegram
refuses it: a photo or video as a document, an album item by item (each item recorded as it goes,
through ``Progress``, so a retry sends none twice), a document refused too named in the closing
message. ``TelegramChannel`` (``channel.py``) decides which part goes when and records it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from toolweave.telegram.botapi import BotAPI, BotAPIError
from toolweave.telegram.parts import Media, Part

if TYPE_CHECKING:
    from toolweave.app import App

log = logging.getLogger("toolweave.telegram")

Progress = Callable[[dict[str, Any]], Awaitable[None]]
"""Records how far a part sent in pieces got (``PartSending._send``)."""


class Sent(NamedTuple):
    """What sending one part did: its message ids, lines for the closing message about what went
    another way, and the indexes of its files the chat does not let the bot send (``withheld``:
    Telegram said "not enough rights to send …": kept for a resend once an admin allows it).
    A note is ``<output>: …``; a question reads "<output>: could not be sent (<why>)" to name its
    candidates not shown (``questions._unshown``)."""

    ids: list[int]
    notes: list[str]
    withheld: list[int]
    lacking: str = ""
    """Telegram's word for what the bot may not send there ("documents")."""


class Withheld(Exception):
    """A file the chat does not let the bot send in any form (it lacks the right)."""

    def __init__(self, lacking: str) -> None:
        super().__init__(lacking)
        self.lacking = lacking


class PartSending:
    """What ``TelegramChannel`` sends one part with (its ``app`` and ``api``)."""

    app: App
    api: BotAPI

    async def _file(self, media: Media, account_id: str) -> tuple[str, bytes, str]:
        from toolweave.app import NotFound

        if media.text is not None:
            return media.filename, media.text.encode("utf-8"), "text/plain"
        assert media.ref is not None
        try:
            path, _ref = await self.app.artifact(media.ref.sha256, account_id)
            data = await asyncio.to_thread(path.read_bytes)
        except (NotFound, OSError):
            raise BotAPIError(f"the output {media.output} is no longer stored", status=410) from None
        return media.filename, data, media.ref.mime_type or "application/octet-stream"

    def _base(self, chat_id: Any, reply_to: Any) -> dict[str, Any]:
        params: dict[str, Any] = {"chat_id": chat_id}
        if reply_to is not None:
            params["reply_parameters"] = {"message_id": reply_to, "allow_sending_without_reply": True}
        return params

    async def _send(self, part: Part, chat_id: Any, reply_to: Any, account_id: str,
                    partial: Mapping[str, Any] | None = None, progress: Progress | None = None,
                    ) -> Sent:
        """Send one part; returns its message ids and lines for the closing message about what went
        another way. A refusal (400) of a media part is met by sending it another way; a file the
        chat does not let the bot send in any form is ``withheld`` (not sent). ``partial``
        is what an earlier attempt recorded (through ``progress``) of an album it was sending item
        by item: this attempt goes on from there."""
        params = self._base(chat_id, reply_to)
        if part.method == "sendMessage":
            params["text"] = part.text or "…"
            if part.keyboard:
                params["reply_markup"] = part.keyboard
            return Sent(_ids(await self.api.call("sendMessage", params)), [], [])
        if part.method == "sendMediaGroup":
            if partial is not None:
                return await self._items_one_by_one(
                    part, [int(i) for i in partial.get("items", [])], chat_id, reply_to, account_id, progress,
                    [int(i) for i in partial.get("ids", [])], [str(n) for n in partial.get("notes", [])],
                    [int(i) for i in partial.get("withheld", [])], str(partial.get("lacking") or ""))
            files: dict[str, tuple[str, bytes, str]] = {}
            media = []
            gone: list[str] = []
            for i, item in enumerate(part.media):
                try:
                    files[f"file{i}"] = await self._file(item, account_id)
                except BotAPIError:
                    gone.append(f"{item.output}: could not be sent (it is no longer stored)")
                    continue
                entry = {"type": "photo", "media": f"attach://file{i}"}
                if item.caption:
                    entry["caption"] = item.caption
                media.append(entry)
            params["media"] = media
            if len(media) >= 2:
                try:
                    return Sent(_ids(await self.api.call("sendMediaGroup", params, files)), gone, [])
                except BotAPIError as exc:
                    if not exc.refused:
                        raise
                    log.warning("Telegram refused the album %s (%s); sending its items one by one", part.describe(), exc)
            items = [i for i in range(len(part.media)) if f"file{i}" in files]
            if progress is not None:
                await progress({"items": items, "ids": [], "notes": gone})
            return await self._items_one_by_one(part, items, chat_id, reply_to, account_id, progress, [], gone, [], "")
        try:
            ids, notes = await self._send_one(part.media[0], chat_id, reply_to, account_id, part.keyboard)
        except Withheld as exc:
            return Sent([], [], [0], exc.lacking)
        return Sent(ids, notes, [])

    async def _items_one_by_one(self, part: Part, items: list[int], chat_id: Any, reply_to: Any, account_id: str,
                                progress: Progress | None, ids: list[int], notes: list[str],
                                withheld: list[int], lacking: str) -> Sent:
        """An album's ``items`` (their indexes) sent one by one, after ``ids``, ``notes`` and
        ``withheld`` of the items before. After each item ``progress`` records what went, so an
        attempt that stops half way (a 429, a 5xx, a crash) goes on with the next item and sends
        none twice."""
        ids, notes, withheld = list(ids), list(notes), list(withheld)
        for k, index in enumerate(items):
            try:
                more, extra = await self._send_one(part.media[index], chat_id, reply_to, account_id)
            except Withheld as exc:
                more, extra, lacking = [], [], exc.lacking
                withheld.append(index)
            ids += more
            notes += extra
            if progress is not None:
                await progress({"items": items[k + 1:], "ids": ids, "notes": notes, "withheld": withheld,
                                "lacking": lacking})
        return Sent(ids, notes, withheld, lacking)

    async def _send_one(self, item: Media, chat_id: Any, reply_to: Any, account_id: str,
                        keyboard: dict[str, Any] | None = None) -> tuple[list[int], list[str]]:
        """One file as a photo, video or document; a photo or video Telegram refuses goes as a
        document, a document it refuses is named in the closing message. ``Withheld`` when the
        chat does not let the bot send it as a document either (it lacks the right)."""
        try:
            file = await self._file(item, account_id)
        except BotAPIError:
            return [], [f"{item.output}: could not be sent (it is no longer stored)"]
        method = {"photo": "sendPhoto", "video": "sendVideo"}.get(item.kind, "sendDocument")
        params = self._base(chat_id, reply_to)
        if item.caption:
            params["caption"] = item.caption
        if keyboard:
            params["reply_markup"] = keyboard
        if method != "sendDocument":
            field_name = "photo" if method == "sendPhoto" else "video"
            try:
                return _ids(await self.api.call(method, params, {field_name: file})), []
            except BotAPIError as exc:
                if not exc.refused:
                    raise
                log.warning("Telegram refused %s as a %s (%s); sending it as a document", item.output, field_name, exc)
                note = (f"{item.output}: sent as a file (the bot may not send {exc.lacks_right} in this chat)"
                        if exc.lacks_right else
                        f"{item.output}: sent as a file (Telegram refused it as a {field_name}: {exc.description})")
        else:
            note = ""
        try:
            ids = _ids(await self.api.call("sendDocument", params, {"document": file}))
        except BotAPIError as exc:
            if not exc.refused:
                raise
            if exc.lacks_right:
                log.warning("the chat %s does not let the bot send %s (%s): %s is kept for a resend", chat_id,
                            exc.lacks_right, exc.description, item.output)
                raise Withheld(exc.lacks_right) from None
            log.warning("Telegram refused %s as a document too (%s); naming it in the closing message", item.output, exc)
            return [], [f"{item.output}: could not be sent ({exc.description or exc})"]
        return ids, [note] if note else []


def _ids(result: Any) -> list[int]:
    results = result if isinstance(result, list) else [result]
    return [int(r["message_id"]) for r in results if isinstance(r, Mapping) and "message_id" in r]
