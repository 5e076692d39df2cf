"""A part of an earlier delivery sent again because the user pressed its 📥 button (an outbox row
of ``event_type`` ``resend``, payload ``{"of": <notification>, "part": <index>}``), then the
message that carried the button brought up to date.

The button is under a delivery's closing message (or a question) when a file of it may be missing:
sending was interrupted, or the chat does not let the bot send it. A resend sends what is still
missing of that part, then records in the original delivery's ``kv("telegram.sent")`` state what
arrived — out of its ``doubts`` (and ``itemDoubts``), its notes saying "sent again below" — and
edits its closing message to match: the button of what arrived goes, so a later press cannot send
it again, and the text no longer says it is missing. Each step is recorded in the resend's own
state, so a retry (a 429 on the edit) sends nothing twice.

Presses are deduplicated in the outbox (``buttons.send_again``): the row's ``dedupe_key`` is
``tg:resend:<notification>:<part>:<n>``, ``n`` the part's resends finished so far
(``resends`` in the original's state), so two presses before the resend is done queue one row,
and a press after a resend that could not send (the admin has not allowed it yet) queues a new one.
A resend row given up before it finished (its horizon passed on 429s or network errors, or an
error retrying cannot cure) lets go of its key when the part is asked for again
(``again_if_given_up``): that press queues a new row, in the same transaction, so two presses at
once still queue one. Should the given-up row be sent again later (``toolweave notifications
resend``) after the part arrived, it sends nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from toolweave.notify.dispatcher import DeliveryError
from toolweave.telegram import notes as notes_
from toolweave.telegram import reconcile
from toolweave.telegram.botapi import BotAPIError
from toolweave.telegram.parts import Part, spread
from toolweave.telegram.rights import ChatRights
from toolweave.telegram.sending import PartSending, failure, ids_of

if TYPE_CHECKING:
    from toolweave.model.definitions import JobDefinition

log = logging.getLogger("toolweave.telegram")

SENT_NAMESPACE = "telegram.sent"
DOUBT_FIELDS = ("notes", "doubts", "itemDoubts", "resends")
"""What a resend changes in the original delivery's state."""


def resend_key(notification_id: str, part: int, state: Mapping[str, Any]) -> str:
    """The outbox ``dedupe_key`` of a press asking for part ``part`` again (see the module)."""
    done = int((state.get("resends") or {}).get(str(part), 0))
    return f"tg:resend:{notification_id}:{part}:{done}"


def resend_buttons(notification_id: str, doubts: list[int], state: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A 📥 button per part in doubt, naming its files (of an album, only those in doubt)."""
    buttons = []
    sent = list(state.get("sent", []))
    items = state.get("itemDoubts") or {}
    for index in doubts:
        outputs = sent[index].get("outputs", []) if index < len(sent) else []
        if isinstance(items.get(str(index)), Mapping):  # only some items of an album
            outputs = list(items[str(index)].get("outputs", []))
        label = notes_.short(", ".join(outputs) or f"part {index + 1}", 40)
        buttons.append({"text": f"📥 {label}", "callback_data": f"s:{notification_id}:{index}"})
    return buttons


def still_withheld_text(outputs: list[str], lacking: str) -> str:
    return (f"⚠️ {', '.join(outputs)}: still not sent: the bot may not send {lacking or 'media'} in this chat yet. "
            "A group admin can allow it (the group's permissions: photos, videos, files; or make the bot an admin), "
            "then tap the button again.")


def resolved(before: Mapping[str, Any], index: int, part: Part, items: list[int], delivered: list[str]) -> dict[str, Any]:
    """The doubt fields of the original's state once a resend of part ``index`` (its ``items``,
    indexes into ``part.media``) delivered ``delivered``; its count of resends one more."""
    doubts = [int(d) for d in before.get("doubts") or []]
    in_doubt: dict[str, Any] = dict(before.get("itemDoubts") or {})
    left = [i for i in items if part.media[i].output not in delivered]
    still = [part.media[i].output for i in left]
    if not left:
        doubts = [d for d in doubts if d != index]
        in_doubt.pop(str(index), None)
    elif part.method == "sendMediaGroup":
        in_doubt[str(index)] = {"items": left, "outputs": still}
    notes = notes_.resolve(list(before.get("notes") or []), index, delivered, still) if delivered else list(
        before.get("notes") or [])
    resends = dict(before.get("resends") or {})
    resends[str(index)] = int(resends.get(str(index), 0)) + 1
    return {"notes": notes, "doubts": doubts, "itemDoubts": in_doubt, "resends": resends}


def as_many_messages(old: list[Part], new: list[Part]) -> list[Part]:
    """The plan ``new`` with its closing text in as many messages as in ``old`` (the same parts
    before it), when it takes fewer: edited into the messages sent, the text no longer says
    anywhere what it said before (``parts.spread``). ``new`` as it is when that cannot be done."""

    def closing_count(parts: list[Part]) -> int:
        count = 0
        while count < len(parts) and parts[-1 - count].method == "sendMessage" and not parts[-1 - count].media:
            count += 1
        return count

    was, now = closing_count(old), closing_count(new)
    if not 0 < now < was or len(old) - was != len(new) - now:
        return new
    pieces = spread([p.text or "" for p in new[-now:]], was, [p.text or "" for p in old[-was:]])
    if len(pieces) != was:
        return new
    closing = [Part("sendMessage", text=piece) for piece in pieces]
    closing[-1].keyboard = new[-1].keyboard
    return [*new[:-now], *closing]


class Resending(PartSending):
    """``TelegramChannel``'s resends (it provides ``plan``, ``pinned_definition``, ``_current_chat``)."""

    if TYPE_CHECKING:
        def plan(self, notification: Mapping[str, Any], notes: list[Any] | None = None,
                 buttons: list[dict[str, Any]] | None = None, pinned: JobDefinition | None = None) -> list[Part]: ...

        async def pinned_definition(self, notification: Mapping[str, Any]) -> JobDefinition | None: ...

        async def _current_chat(self, chat_id: Any) -> Any: ...

    def _resend_buttons(self, notification_id: str, doubts: list[int], state: Mapping[str, Any]) -> list[dict[str, Any]]:
        return resend_buttons(notification_id, doubts, state)

    async def _deliver_again(self, notification: Mapping[str, Any], chat_id: Any) -> None:
        """One part of an earlier delivery, sent again because the user asked (its button), then
        the original brought up to date (see the module)."""
        payload = notification.get("payload") or {}
        original = await self.app.notification(str(payload.get("of") or ""))
        if original is None:
            raise DeliveryError("the delivery to send again is gone", retryable=False)
        original_id = str(original["notification_id"])
        state: dict[str, Any] = await self.app.kv_get(SENT_NAMESPACE, original_id) or {}
        pinned = await self.pinned_definition(original)
        parts = self.plan(original, list(state.get("notes", [])), None, pinned)
        index = int(payload.get("part") or 0)
        if not 0 <= index < len(parts):
            raise DeliveryError(f"delivery {original_id} has no part {index + 1}", retryable=False)
        whole = parts[index]
        doubted = (state.get("itemDoubts") or {}).get(str(index))
        items = list(range(len(whole.media)))
        if isinstance(doubted, Mapping):  # only these items of an album may be missing
            items = [int(i) for i in doubted.get("items", []) if 0 <= int(i) < len(whole.media)]
        again_id = str(notification.get("notification_id"))
        again: dict[str, Any] = await self.app.kv_get(SENT_NAMESPACE, again_id) or {}
        if not again.get("finished") and index not in [int(d) for d in state.get("doubts") or []]:
            # a resend given up, sent again by an operator after a later press's resend delivered it
            log.info("notification %s: part %d is no longer in doubt; nothing to send again", original_id, index + 1)
            return
        try:
            if not again.get("finished"):
                again = await self._send_missing(again_id, again, original, whole, items, index, chat_id, state)
            if not again.get("edited"):
                # recorded before the edit: a retry (a 429 on the edit) edits from the same ``before``
                before = again.get("before") or {}
                after = resolved(before, index, whole, items, list(again.get("delivered") or []))
                await self.app.kv_set(SENT_NAMESPACE, original_id, {**state, **after})
                await self._edit_closing(original, state, before, after, pinned)
                again["edited"] = True
                await self.app.kv_set(SENT_NAMESPACE, again_id, again)
            if again.get("tell"):  # the admin has not allowed it yet: say so rather than nothing
                await reconcile.seen(self.app, chat_id, ids_of(await self.api.call(
                    "sendMessage", {"chat_id": chat_id, "text": again["tell"]})))
                again["tell"] = None
                await self.app.kv_set(SENT_NAMESPACE, again_id, again)
        except BotAPIError as exc:
            # given up (now, or at the horizon), this row lets a later press queue a new one
            raise failure(f"{whole.describe()} sent again: {exc}", exc) from None

    async def _send_missing(self, again_id: str, again: dict[str, Any], original: Mapping[str, Any], whole: Part,
                            items: list[int], index: int, chat_id: Any, state: Mapping[str, Any]) -> dict[str, Any]:
        """Send the ``items`` of part ``index`` still missing; record what arrived, and the doubt
        fields of the original as they were (``before``: a retry resolves from them again)."""
        part = Part(whole.method, media=[whole.media[i] for i in items], keyboard=whole.keyboard) \
            if len(items) != len(whole.media) else whole
        recorded = again.get("partial")

        async def progress(done_so_far: dict[str, Any]) -> None:
            # an album that goes item by item records how far it got: a retry goes on from there
            again["partial"] = {"part": index, **done_so_far}
            await self.app.kv_set(SENT_NAMESPACE, again_id, again)

        rights = await ChatRights.of(self.app, chat_id, trusted=False)  # the user asks: every form is tried
        message_ids, more_notes, withheld, lacking = await self._send(
            part, chat_id, None, str(original.get("account_id")), recorded if isinstance(recorded, dict) else None,
            progress, rights)
        await reconcile.seen(self.app, chat_id, message_ids)
        missing = {o for n in more_notes if notes_.not_shown_reason(n) is not None for o in n.get("outputs") or []}
        missing |= {part.media[i].output for i in withheld}
        again.update(
            finished=True, partial=None, messageIds=message_ids,
            delivered=[m.output for m in part.media if m.output not in missing],
            tell=still_withheld_text([part.media[i].output for i in withheld], lacking) if withheld else None,
            before={k: state.get(k) for k in DOUBT_FIELDS})
        await self.app.kv_set(SENT_NAMESPACE, again_id, again)
        return again

    async def _edit_closing(self, original: Mapping[str, Any], state: Mapping[str, Any], before: Mapping[str, Any],
                            after: Mapping[str, Any], pinned: JobDefinition | None) -> None:
        """Edit the original's closing messages (or question) from what they said ``before`` to
        what they say ``after``: only the messages that change. When the closing text now takes
        fewer messages it is spread over as many as before (``as_many_messages``); should it take
        more, only the buttons under its last one are brought up to date."""
        original_id = str(original["notification_id"])
        sent = list(state.get("sent") or [])
        old = self.plan(original, list(before.get("notes") or []),
                        resend_buttons(original_id, list(before.get("doubts") or []), {**state, **before}), pinned)
        new = as_many_messages(old, self.plan(
            original, list(after.get("notes") or []),
            resend_buttons(original_id, list(after.get("doubts") or []), {**state, **after}), pinned))
        target = original.get("target") or {}
        chat_id = await self._current_chat(state.get("chat", target.get("chatId") if isinstance(target, Mapping) else None))
        if chat_id is None or not sent:
            return
        edits: list[tuple[str, dict[str, Any]]] = []
        if len(old) == len(new) == len(sent):
            for index, (was, now) in enumerate(zip(old, new, strict=True)):
                ids = sent[index].get("messageIds") or []
                if now.method == "sendMessage" and ids and (was.text, was.keyboard) != (now.text, now.keyboard):
                    edits.append(("editMessageText", {"chat_id": chat_id, "message_id": ids[-1], "text": now.text or "…",
                                                      "reply_markup": now.keyboard}))
        elif sent[-1].get("messageIds") and new and old[-1].keyboard != new[-1].keyboard:
            edits.append(("editMessageReplyMarkup", {"chat_id": chat_id, "message_id": sent[-1]["messageIds"][-1],
                                                     "reply_markup": new[-1].keyboard}))
        for method, params in edits:
            try:
                await self.api.call(method, params)
            except BotAPIError as exc:
                if exc.retryable:
                    raise
                # deleted meanwhile, already as it should be ("not modified"), too old: the file
                # was sent all the same
                log.info("notification %s: could not bring its message up to date after a resend: %s", original_id, exc)
