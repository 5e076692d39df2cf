"""Sending one part of a delivery (``parts.Part``) through the Bot API, another way when Telegram
refuses it: a photo or video as a document, an album item by item (each item recorded as it goes,
through ``Progress``, so a retry sends none twice), a document refused too named in the closing
message. What the chat refused for lack of a right is remembered (``rights.py``): later files go
straight to the form that works. ``TelegramChannel`` (``channel.py``) decides which part goes
when and records it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from toolweave.notify.dispatcher import DeliveryError
from toolweave.telegram import notes as notes_
from toolweave.telegram.botapi import BotAPI, BotAPIError
from toolweave.telegram.notes import Note
from toolweave.telegram.parts import Media, Part
from toolweave.telegram.rights import ChatRights, NoRights

if TYPE_CHECKING:
    from toolweave.app import App

log = logging.getLogger("toolweave.telegram")

Progress = Callable[[dict[str, Any]], Awaitable[None]]
"""Records how far a part sent in pieces got (``PartSending._send``)."""


class Sent(NamedTuple):
    """What sending one part did: its message ids, notes for the closing message about what went
    another way (``notes.py``), and the indexes of its files the chat does not let the bot send
    (``withheld``: Telegram said "not enough rights to send …": kept for a resend once an admin
    allows it)."""

    ids: list[int]
    notes: list[Note]
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
                    rights: ChatRights | None = None) -> Sent:
        """Send one part; returns its message ids and lines for the closing message about what went
        another way. A refusal (400) of a media part is met by sending it another way; a file the
        chat does not let the bot send in any form is ``withheld`` (not sent). ``partial``
        is what an earlier attempt recorded (through ``progress``) of an album it was sending item
        by item: this attempt goes on from there. ``rights``: what the chat is known to refuse
        (not tried again) and where what it refuses now is remembered."""
        rights = rights or NoRights()
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
                    [int(i) for i in partial.get("ids", [])], list(partial.get("notes", [])),
                    [int(i) for i in partial.get("withheld", [])], str(partial.get("lacking") or ""), rights)
            files: dict[str, tuple[str, bytes, str]] = {}
            media = []
            gone: list[Note] = []
            for i, item in enumerate(part.media):
                try:
                    files[f"file{i}"] = await self._file(item, account_id)
                except BotAPIError:
                    gone.append(notes_.gone(item.output))
                    continue
                entry = {"type": "photo", "media": f"attach://file{i}"}
                if item.caption:
                    entry["caption"] = item.caption
                media.append(entry)
            params["media"] = media
            if len(media) >= 2 and not rights.refuses("photos"):
                try:
                    ids = _ids(await self.api.call("sendMediaGroup", params, files))
                except BotAPIError as exc:
                    if not exc.refused:
                        raise
                    log.warning("Telegram refused the album %s (%s); sending its items one by one", part.describe(), exc)
                    if exc.lacks_right:
                        await rights.was_refused(exc.lacks_right)
                else:
                    await rights.worked("photos")
                    return Sent(ids, gone, [])
            items = [i for i in range(len(part.media)) if f"file{i}" in files]
            if progress is not None:
                await progress({"items": items, "ids": [], "notes": gone})
            return await self._items_one_by_one(part, items, chat_id, reply_to, account_id, progress, [], gone, [], "",
                                                rights)
        try:
            ids, notes = await self._send_one(part.media[0], chat_id, reply_to, account_id, rights, part.keyboard)
        except Withheld as exc:
            return Sent([], [], [0], exc.lacking)
        return Sent(ids, notes, [])

    async def _items_one_by_one(self, part: Part, items: list[int], chat_id: Any, reply_to: Any, account_id: str,
                                progress: Progress | None, ids: list[int], notes: list[Note],
                                withheld: list[int], lacking: str, rights: ChatRights) -> Sent:
        """An album's ``items`` (their indexes) sent one by one, after ``ids``, ``notes`` and
        ``withheld`` of the items before. After each item ``progress`` records what went, so an
        attempt that stops half way (a 429, a 5xx, a crash) goes on with the next item and sends
        none twice."""
        ids, notes, withheld = list(ids), list(notes), list(withheld)
        for k, index in enumerate(items):
            try:
                more, extra = await self._send_one(part.media[index], chat_id, reply_to, account_id, rights)
            except Withheld as exc:
                more, extra, lacking = [], [], exc.lacking
                withheld.append(index)
            ids += more
            notes += extra
            if progress is not None:
                await progress({"items": items[k + 1:], "ids": ids, "notes": notes, "withheld": withheld,
                                "lacking": lacking})
        return Sent(ids, notes, withheld, lacking)

    async def _send_one(self, item: Media, chat_id: Any, reply_to: Any, account_id: str, rights: ChatRights,
                        keyboard: dict[str, Any] | None = None) -> tuple[list[int], list[Note]]:
        """One file as a photo, video or document; a photo or video Telegram refuses goes as a
        document, a document it refuses is named in the closing message. ``Withheld`` when the
        chat does not let the bot send it as a document either (it lacks the right). A form the
        chat is known to refuse (``rights``) is not tried."""
        try:
            file = await self._file(item, account_id)
        except BotAPIError:
            return [], [notes_.gone(item.output)]
        method = {"photo": "sendPhoto", "video": "sendVideo"}.get(item.kind, "sendDocument")
        params = self._base(chat_id, reply_to)
        if item.caption:
            params["caption"] = item.caption
        if keyboard:
            params["reply_markup"] = keyboard
        note: Note | None = None
        if method != "sendDocument":
            field_name = "photo" if method == "sendPhoto" else "video"
            kind = f"{field_name}s"
            if rights.refuses(kind):
                note = notes_.as_file(item.output, kind, right=True)
            else:
                try:
                    ids = _ids(await self.api.call(method, params, {field_name: file}))
                except BotAPIError as exc:
                    if not exc.refused:
                        raise
                    log.warning("Telegram refused %s as a %s (%s); sending it as a document", item.output, field_name, exc)
                    if exc.lacks_right:
                        await rights.was_refused(exc.lacks_right)
                    note = (notes_.as_file(item.output, exc.lacks_right, right=True) if exc.lacks_right
                            else notes_.as_file(item.output, exc.description, right=False, as_what=field_name))
                else:
                    await rights.worked(kind)
                    return ids, []
        if rights.refuses("documents"):
            log.info("the chat %s does not let the bot send documents (it said so before): %s is kept for a resend",
                     chat_id, item.output)
            raise Withheld("documents")
        try:
            ids = _ids(await self.api.call("sendDocument", params, {"document": file}))
        except BotAPIError as exc:
            if not exc.refused:
                raise
            if exc.lacks_right:
                log.warning("the chat %s does not let the bot send %s (%s): %s is kept for a resend", chat_id,
                            exc.lacks_right, exc.description, item.output)
                await rights.was_refused(exc.lacks_right)
                raise Withheld(exc.lacks_right) from None
            log.warning("Telegram refused %s as a document too (%s); naming it in the closing message", item.output, exc)
            return [], [notes_.refused(item.output, exc.description or str(exc))]
        await rights.worked("documents")
        return ids, [note] if note else []


def _ids(result: Any) -> list[int]:
    results = result if isinstance(result, list) else [result]
    return [int(r["message_id"]) for r in results if isinstance(r, Mapping) and "message_id" in r]


def ids_of(result: Any) -> list[int]:
    return [int(result["message_id"])] if isinstance(result, Mapping) and "message_id" in result else []


def failure(text: str, exc: BotAPIError) -> DeliveryError:
    """What the dispatcher hears of ``exc``: retried when Telegram says the group moved (the next
    attempt sends to the supergroup it became, see ``TelegramChannel.deliver``)."""
    error = DeliveryError(text, retryable=exc.retryable or exc.migrate_to is not None,
                          retry_after=0.0 if exc.migrate_to is not None else exc.retry_after)
    error.migrate_to = exc.migrate_to  # type: ignore[attr-defined]
    return error
