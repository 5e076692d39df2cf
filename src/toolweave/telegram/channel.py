"""The ``telegram`` notification channel: every message the bot sends to a chat goes through here.

Outbox rows of the ``telegram`` channel, by ``event_type``:

- ``run.completed|failed|cancelled`` — a finished run's results, written by the engine in the
  transaction that finishes a run whose ``origin.platform`` is ``telegram``
  (``telegram_notification_rule``);
- ``message`` — an answer to a command, a question, an error (``TelegramBot`` queues them);
- ``status`` — the status message of a run (the bot's ``StatusTracker`` edits it afterwards);
- ``resend`` — a part of an earlier delivery sent again at the user's request (its 📥 button), after
  which the message that carried the button is edited (``resending.py``).

A delivery is a fixed list of parts (``parts.py``). Before each part is sent its index is recorded
as *being sent* under ``kv("telegram.sent", notification_id)``, and after Telegram's answer as
sent, with its message ids. A retry (after a 429, a 5xx, a crash) resumes with the first part not
sent. A part that was being sent when the process died (or whose answer was lost) may or may not
have reached Telegram, so it is *in doubt*: the next attempt looks for it above the chat's
watermark (``reconcile.py``) and, when found, records it and goes on; when not, a text is sent
again, a photo, album, video or document is not: the closing message says so and carries a button
that sends it again. A status message in doubt that is found becomes the run's status message.

Each part stands alone: a photo Telegram refuses (400) goes as a document, an album refused as a
whole goes item by item, a file Telegram refuses is named in the closing message, and the rest of
the delivery still goes out. A file the chat does not let the bot send in any form ("not enough
rights to send documents") is kept in doubt: the closing message says how an admin allows it, and
its button sends it then. What the chat refused for lack of a right is remembered for a day
(``rights.py``): later files go straight to the form that works. What went another way is kept
as notes with fields (``notes.py``), which a question reads to name its candidates not shown and
an answer by reply to refuse one of them. 429, 5xx and network trouble retry the delivery (``DeliveryError``
with ``retry_after``); a 403 (the user blocked the bot) or another 4xx of a text gives it up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from toolweave.model.definitions import JobDefinition
from toolweave.model.status import RunStatus
from toolweave.notify.dispatcher import DeliveryError
from toolweave.telegram import notes as notes_
from toolweave.telegram import reconcile
from toolweave.telegram.botapi import BotAPI, BotAPIError, redact_token_in_logs
from toolweave.telegram.parts import Media, Part, closing, extension, plan_results, split_text
from toolweave.telegram.resending import SENT_NAMESPACE, Resending
from toolweave.telegram.rights import ChatRights, NoRights
from toolweave.telegram.sending import failure

if TYPE_CHECKING:
    from toolweave.app import App

log = logging.getLogger("toolweave.telegram")

CHANNEL = "telegram"
STATUS_NAMESPACE = "telegram.status"
PENDING_NAMESPACE = "telegram.pending"
ASKED_NAMESPACE = "telegram.asked"
"""``<chat>:<question id>`` → the notification that asked it there (an answer by reply reads what
that delivery could not show: ``questions.unseen``)."""
MIGRATED_NAMESPACE = "telegram.migrated"
"""A basic group's id → the supergroup Telegram upgraded it to (``migrate_to_chat_id``)."""
# ``telegram.sent`` never expires: a given-up delivery may be sent again at any time, and a part
# kept in doubt asked for at any time, as long as its notification row exists; it goes with that
# row when the run is pruned (``store.prune.NOTIFICATION_STATE``).



def telegram_notification_rule(run: Any, status: RunStatus) -> list[tuple[str, dict[str, Any]]]:
    """Runs started from Telegram report back to their chat (replying to the command)."""
    origin = getattr(run, "origin", None) or {}
    if not isinstance(origin, Mapping) or origin.get("platform") != "telegram" or origin.get("chatId") is None:
        return []
    return [(CHANNEL, {"chatId": origin["chatId"], "replyTo": origin.get("messageId")})]


def telegram_approver_rule(tx: Any, run: Any, approvers: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """Approvers an ask step names hear of its question in their private chat with the bot, when
    their account is linked to a Telegram user (they wrote to the bot once)."""
    from toolweave.store import accounts as accounts_q

    return [(CHANNEL, {"chatId": int(row.external_id)}) for row in accounts_q.links_of(tx, "telegram", approvers)
            if str(row.external_id).lstrip("-").isdigit()]


def rerun_keyboard(run_id: str, extra: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    rows = [[{"text": "🔁 Rerun", "callback_data": f"r:{run_id}"}]]
    rows += [[button] for button in extra or []]
    return {"inline_keyboard": rows}


def _short(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def failure_text(name: str, error: Mapping[str, Any] | None, definition: JobDefinition | None,
                 tool_name: str | None = None) -> str:
    """A failed run in plain words, naming the step that failed."""
    error = error or {}
    message = str(error.get("message") or "it stopped without a message")
    step = error.get("step_id")
    if step:
        prefix = f"step {step} failed: "
        if message.startswith(prefix):
            message = message[len(prefix):]
        label = f"“{step}”" + (f" ({tool_name})" if tool_name and tool_name != step else "")
        only_step = definition is not None and len(definition.steps) == 1
        head = f"❌ {name} failed." if only_step else f"❌ {name} failed at the step {label}."
        return f"{head}\nWhat went wrong: {_short(message, 1500)}"
    if error.get("code") == "deadline":
        return f"❌ {name} failed: it ran past its time limit."
    return f"❌ {name} failed: {_short(message, 1500)}"


class TelegramChannel(Resending):
    """Delivers outbox rows of the ``telegram`` channel through the Bot API."""

    name = CHANNEL
    in_chat_order = True
    """Messages to one chat arrive in the order they were queued (``Notifier`` holds a row back
    while an older row to its chat is pending)."""

    def __init__(self, app: App, api: BotAPI | None = None) -> None:
        token = app.settings.telegram_token
        if not token:
            raise ValueError("the telegram channel needs settings.telegram_token")
        redact_token_in_logs(token)  # workers log request URLs (httpx), which hold the token
        self.app = app
        self.api = api or BotAPI(app.http, token, app.settings.telegram_api_url, timeout=max(60.0, app.settings.http_timeout_seconds))

    # --- planning -----------------------------------------------------------------------------------

    def _definition(self, job_id: str | None) -> JobDefinition | None:
        if not job_id:
            return None
        from toolweave.app import UnknownDefinition

        try:
            return self.app.job_for(job_id)
        except (UnknownDefinition, KeyError):
            return None

    def _tool_name(self, definition: JobDefinition | None, step_id: str | None) -> str | None:
        if definition is None or not step_id:
            return None
        step = definition.step(step_id)
        if step is None or not step.tool_id:
            return None
        try:
            return self.app.definition(step.tool_id).display_name
        except Exception:
            return None

    def plan(self, notification: Mapping[str, Any], notes: list[Any] | None = None,
             buttons: list[dict[str, Any]] | None = None, pinned: JobDefinition | None = None) -> list[Part]:
        """The Bot API calls that deliver one notification, in order (deterministic). ``notes`` are
        added to the closing message (``notes.py``), ``buttons`` buttons under it (what sending found).
        ``pinned`` is the definition version the run ran (``pinned_definition``): the plan does
        not change when the job does between two attempts."""
        payload = notification.get("payload") or {}
        kind = notification.get("event_type")
        if kind == "message":
            pieces = split_text(str(payload.get("text") or "…"))
            parts = [Part("sendMessage", text=piece) for piece in pieces]
            parts[-1].keyboard = payload.get("markup")
            return parts
        run_id = str(payload.get("runId") or notification.get("run_id") or "")
        definition = pinned or self._definition(payload.get("jobId"))
        name = definition.display_name if definition else str(payload.get("jobId") or "Your run")
        status = str(payload.get("status") or "")
        if status == RunStatus.WAITING_INPUT.value:  # a step asks the run's account (telegram.questions)
            return self._question_parts(name, payload, notes or [], buttons or [])
        keyboard = rerun_keyboard(run_id, buttons) if run_id else None
        if status == RunStatus.FAILED.value:
            error = payload.get("error") if isinstance(payload.get("error"), Mapping) else None
            step = error.get("step_id") if error else None
            text = failure_text(name, error, definition, self._tool_name(definition, step))
            return closing(text, notes_.texts(notes or []), keyboard)
        if status == RunStatus.CANCELLED.value:
            return closing(f"🚫 {name} was cancelled.", notes_.texts(notes or []), keyboard)
        head = (f"✅ {name} is done." if status == RunStatus.COMPLETED.value
                else f"⚠️ {name} finished, but some steps failed and were skipped.")
        given = payload.get("outputs")
        outputs: Mapping[str, Any] = given if isinstance(given, Mapping) else {}
        return plan_results(head, outputs, definition, keyboard, notes_.texts(notes or []))

    async def pinned_definition(self, notification: Mapping[str, Any]) -> JobDefinition | None:
        """The definition version the notification's run ran, or None (no run, or pruned): a
        delivery is planned from it, not from the job as it is now."""
        payload = notification.get("payload") or {}
        run_id = notification.get("run_id") or payload.get("runId")
        if not run_id or notification.get("event_type") == "message":
            return None
        from toolweave.app import NotFound

        try:
            return await self.app.run_definition(str(run_id))
        except NotFound:
            return None

    def _question_parts(self, name: str, payload: Mapping[str, Any], notes: list[Any],
                        buttons: list[dict[str, Any]]) -> list[Part]:
        """The candidates as photos, each with its button (when they are images), then the question
        with its keyboard. Each candidate is sent like a result's file (a photo refused goes as a
        document; one refused stops no other); ``notes`` and ``buttons`` (what sending found: the
        candidates not shown, and why; "send again" buttons) go into the question."""
        from toolweave.telegram import questions

        question: Mapping[str, Any] = payload.get("question") or {}
        qid = str(payload.get("questionId") or "")
        single = int(question.get("maxChoices") or 1) == 1
        parts = [
            Part("sendPhoto", media=[Media(f"#{index + 1}", "photo", f"candidate-{index + 1}.{extension(ref.mime_type)}", ref=ref)],
                 keyboard=questions.candidate_keyboard(qid, index, single))
            for index, ref in questions.photo_candidates(question)
        ]
        text, keyboard = questions.question_message(name, payload, notes, buttons)
        return [*parts, Part("sendMessage", text=text, keyboard=keyboard)]

    # --- delivering -------------------------------------------------------------------------------

    async def deliver(self, notification: Mapping[str, Any]) -> None:
        target = notification.get("target") or {}
        chat_id = target.get("chatId") if isinstance(target, Mapping) else None
        if chat_id is None:
            raise DeliveryError("the notification names no chatId", retryable=False)
        addressed = chat_id
        chat_id = await self._current_chat(chat_id)
        # the message a delivery answers is one of the chat it was addressed to: in the supergroup
        # a group became, that id is another message (or none), and no watermark
        reply_to = target.get("replyTo") if chat_id == addressed else None
        kind = notification.get("event_type")
        try:
            if kind == "status":
                await self._deliver_status(notification, chat_id, reply_to)
            elif kind == "resend":
                await self._deliver_again(notification, chat_id)
            else:
                await self._deliver_parts(notification, chat_id, reply_to)
        except DeliveryError as exc:
            moved = getattr(exc, "migrate_to", None)
            if moved is not None and moved != chat_id:
                log.warning("Telegram says the group %s is now the supergroup %s: sending there", chat_id, moved)
                await self.app.kv_set(MIGRATED_NAMESPACE, str(chat_id), {"to": moved})
                # the supergroup counts its own message ids from 1, and every message of the bot's
                # there goes through here from now on: all of them are recorded above 0
                await reconcile.moved(self.app, moved)
            raise

    async def _current_chat(self, chat_id: Any) -> Any:
        """The chat a message to ``chat_id`` goes to: a group Telegram upgraded to a supergroup has
        a new id (it said so with ``migrate_to_chat_id``), which every message to it takes from then."""
        for _ in range(3):
            moved = await self.app.kv_get(MIGRATED_NAMESPACE, str(chat_id))
            if not isinstance(moved, dict) or not isinstance(moved.get("to"), int):
                break
            chat_id = moved["to"]
        return chat_id

    async def _deliver_parts(self, notification: Mapping[str, Any], chat_id: Any, reply_to: Any) -> None:
        notification_id = str(notification.get("notification_id"))
        account_id = str(notification.get("account_id"))
        state: dict[str, Any] = await self.app.kv_get(SENT_NAMESPACE, notification_id) or {}
        done = int(state.get("done", 0))
        sent: list[dict[str, Any]] = list(state.get("sent", []))
        notes: list[Any] = list(state.get("notes", []))
        doubts: list[int] = list(state.get("doubts", []))
        pinned = await self.pinned_definition(notification)
        parts = self.plan(notification, notes, self._resend_buttons(notification_id, doubts, state), pinned)
        if done < len(parts):
            await self._remember_question(notification, chat_id)  # before the question is out: a reply may come at once
        rights = await ChatRights.of(self.app, chat_id) if any(p.is_media for p in parts[done:]) else NoRights()
        recorded = state.get("partial")
        partial = recorded if isinstance(recorded, dict) and recorded.get("part") == done else None
        if (state.get("sending") is not None and int(state["sending"]) == done and done < len(parts)
                and partial is not None and partial.get("items")):
            # the last attempt was sending an album item by item when it stopped: only the item it
            # was sending may have arrived; the items before it are recorded, those after it go now
            state = await self._item_in_doubt(notification_id, parts[done], partial, state, chat_id)
            notes, doubts = list(state.get("notes", [])), list(state.get("doubts", []))
        elif state.get("sending") is not None and int(state["sending"]) == done and done < len(parts):
            # the last attempt was sending this part when it stopped: Telegram may have it already
            part = parts[done]
            found = await self._look_for(part, chat_id, _after(state, chat_id), notification_id)
            if found:
                sent.append({"method": part.method, "outputs": [m.output for m in part.media], "messageIds": found,
                             "found": True})
                done += 1
                state = {**state, "done": done, "sending": None, "sent": sent}
                await self.app.kv_set(SENT_NAMESPACE, notification_id, state)
                await reconcile.seen(self.app, chat_id, found)
                if notification.get("event_type") == "message" and done == len(parts):
                    await self._remember_prompt(notification, found[-1])
            elif part.is_media:
                log.warning("notification %s: %s may or may not have been sent before an interruption; "
                            "not sending it again unasked", notification_id, part.describe())
                notes.append(notes_.interrupted([m.output for m in part.media], done))
                doubts.append(done)
                sent.append({"method": part.method, "outputs": [m.output for m in part.media], "messageIds": [],
                             "doubt": True})
                done += 1
                state = {**state, "done": done, "sending": None, "sent": sent, "notes": notes, "doubts": doubts}
                await self.app.kv_set(SENT_NAMESPACE, notification_id, state)
                parts = self.plan(notification, notes, self._resend_buttons(notification_id, doubts, state), pinned)
            else:
                log.warning("notification %s: %s may have been sent before an interruption; sending it again",
                            notification_id, part.describe())
        index = done
        while index < len(parts):
            part = parts[index]
            state = {**state, "done": index, "of": len(parts), "sending": index, "sent": sent, "notes": notes,
                     "doubts": doubts, "after": await reconcile.watermark(self.app, chat_id, reply_to),
                     "chat": chat_id}
            await self.app.kv_set(SENT_NAMESPACE, notification_id, state)
            recorded = state.get("partial")
            partial = recorded if isinstance(recorded, dict) and recorded.get("part") == index else None

            async def progress(done_so_far: dict[str, Any], index: int = index, state: dict[str, Any] = state) -> None:
                state["partial"] = {"part": index, **done_so_far}
                await self.app.kv_set(SENT_NAMESPACE, notification_id, state)

            try:
                message_ids, more_notes, withheld, lacking = await self._send(
                    part, chat_id, reply_to, account_id, partial, progress, rights)
            except BotAPIError as exc:
                if not exc.sent_maybe:
                    state["sending"] = None
                    await self.app.kv_set(SENT_NAMESPACE, notification_id, state)
                raise failure(f"{part.describe()} (part {index + 1} of {len(parts)}): {exc}", exc) from None
            sent.append({"method": part.method, "outputs": [m.output for m in part.media], "messageIds": message_ids})
            await reconcile.seen(self.app, chat_id, message_ids)
            if withheld:
                # the chat does not let the bot send these files: kept in doubt, with a button that
                # sends them once an admin allows it
                more_notes = [*more_notes, notes_.withheld([part.media[i].output for i in withheld], lacking, index)]
                state = _keep_withheld(state, index, part, withheld)
                doubts = list(state["doubts"])
            index += 1
            if more_notes:
                notes.extend(more_notes)
                # the closing message says what went another way: plan its (not yet sent) parts again
                again = self.plan(notification, notes, self._resend_buttons(notification_id, doubts, state), pinned)
                parts = [*parts[:index], *again[index:]]
            state = {**state, "done": index, "of": len(parts), "sending": None, "sent": sent, "notes": notes,
                     "partial": None}
            await self.app.kv_set(SENT_NAMESPACE, notification_id, state)
            if notification.get("event_type") == "message" and index == len(parts) and message_ids:
                await self._remember_prompt(notification, message_ids[-1])

    async def _item_in_doubt(self, notification_id: str, part: Part, partial: Mapping[str, Any],
                             state: dict[str, Any], chat_id: Any) -> dict[str, Any]:
        """The item of an album being sent item by item that an interrupted attempt may have sent:
        found (by its caption), it is recorded as sent; not found, it is not sent again unasked —
        the closing message says so, with the album's "send again" button — and the rest of the
        album goes on."""
        items = [int(i) for i in partial.get("items", [])]
        item = part.media[items[0]]
        found = await self._look_for(Part("sendDocument", media=[item]), chat_id, _after(state, chat_id), notification_id)
        ids = [*partial.get("ids", []), *found]
        notes = list(partial.get("notes", []))
        doubts = list(state.get("doubts", []))
        in_doubt: dict[str, Any] = dict(state.get("itemDoubts") or {})
        if found:
            await reconcile.seen(self.app, chat_id, found)
        else:
            log.warning("notification %s: %s of %s may or may not have been sent before an interruption; "
                        "not sending it again unasked", notification_id, item.output, part.describe())
            key = str(partial["part"])
            mine = in_doubt.get(key) or {"items": [], "outputs": []}
            in_doubt[key] = {"items": [*mine["items"], items[0]], "outputs": [*mine["outputs"], item.output]}
            notes.append(notes_.interrupted([item.output], int(partial["part"]), in_doubt[key]["outputs"]))
            if int(partial["part"]) not in doubts:
                doubts.append(int(partial["part"]))
        state = {**state, "doubts": doubts, "itemDoubts": in_doubt,
                 "partial": {**partial, "items": items[1:], "ids": ids, "notes": notes}}
        await self.app.kv_set(SENT_NAMESPACE, notification_id, state)
        return state

    async def _look_for(self, part: Part, chat_id: Any, after: Any, notification_id: str) -> list[int]:
        """The messages an interrupted attempt left of ``part``, when probes prove that all of it
        arrived: a text by its text and buttons, files by their captions one by one (an album's
        items, or the items sent one by one when Telegram refused the album, in order), a single
        file without a caption by its buttons. Anything else cannot be told apart: []."""
        what = f"{part.describe()} of notification {notification_id}"
        if part.method == "sendMessage":
            probes = [reconcile.text_probe(part.text or "…", part.keyboard)]
        elif part.media and all(m.caption for m in part.media):
            probes = [reconcile.caption_probe(m.caption or "", part.keyboard) for m in part.media]
        elif len(part.media) == 1 and reconcile.inline(part.keyboard):
            probes = [reconcile.markup_probe(part.keyboard or {})]
        else:
            return []
        try:
            found = await reconcile.find(self.api, chat_id, after if isinstance(after, int) else None, probes, what)
        except BotAPIError as exc:
            raise failure(f"{part.describe()}: looking for what an interrupted attempt sent: {exc}", exc) from None
        return found if len(found) == len(probes) else []

    async def _remember_question(self, notification: Mapping[str, Any], chat_id: Any) -> None:
        """A step's question is being delivered to ``chat_id``: an answer by reply there finds this
        delivery (what it could not show) by the question's id."""
        payload = notification.get("payload") or {}
        question_id = payload.get("questionId")
        if payload.get("status") != RunStatus.WAITING_INPUT.value or not question_id:
            return
        expires = payload.get("expiresAt")
        left = float(expires) - time.time() if isinstance(expires, int | float) else 0.0
        await self.app.kv_set(ASKED_NAMESPACE, f"{chat_id}:{question_id}",
                              {"notification": str(notification.get("notification_id"))},
                              ttl=max(left, 0.0) + 86400.0 if left > 0 else 30 * 86400.0)

    async def _remember_prompt(self, notification: Mapping[str, Any], message_id: int) -> None:
        """A question was delivered: the pending input it asks for now knows its message (in a
        group, only a reply to it answers it)."""
        payload = notification.get("payload") or {}
        key = payload.get("pending")
        if not key:
            return
        pending = await self.app.kv_get(PENDING_NAMESPACE, str(key))
        if isinstance(pending, dict) and pending.get("promptKey") == notification.get("dedupe_key"):
            pending["promptMessageId"] = message_id
            ttl = float(pending.get("expiresAt") or 0) - time.time()
            if ttl > 0:
                await self.app.kv_set(PENDING_NAMESPACE, str(key), pending, ttl=ttl)

    async def _deliver_status(self, notification: Mapping[str, Any], chat_id: Any, reply_to: Any) -> None:
        """A run's status message; ``kv("telegram.status", run_id)`` records it (the bot's tracker
        edits it from there). When the last attempt was interrupted after sending it, the message
        it left is looked for first (``reconcile``) and, when found, becomes the run's status
        message — the tracker brings it up to date — instead of sending another."""
        from toolweave.app import NotFound
        from toolweave.telegram.status import cancel_markup, render_status

        payload = notification.get("payload") or {}
        run_id = str(payload.get("runId"))
        account_id = str(notification.get("account_id"))
        state: dict[str, Any] = await self.app.kv_get(STATUS_NAMESPACE, run_id) or {}
        if state.get("messageId"):
            return
        if state.get("sending"):
            sent = state.get("sent") or {}
            probe = (reconcile.markup_probe(cancel_markup(run_id)) if sent.get("cancel")
                     else reconcile.text_probe(str(sent.get("text") or "")))
            try:
                found = None if not sent.get("text") else next(iter(await reconcile.find(
                    self.api, chat_id, state.get("after") if state.get("chatId", chat_id) == chat_id else None, [probe],
                    f"the status message of {run_id}")), None)
            except BotAPIError as exc:
                raise failure(f"status message: looking for the one sent before an interruption: {exc}", exc) from None
            if found is not None:
                # adopted: the tracker edits it to the run's state at its next pass
                state.update(messageId=found, text=None, editedAt=0.0, final=False, sending=False)
                await self.app.kv_set(STATUS_NAMESPACE, run_id, state)
                await reconcile.seen(self.app, chat_id, [found])
                return
            log.warning("the status message of %s may have been sent before an interruption; sending another", run_id)
            state["lost"] = int(state.get("lost", 0)) + 1
        try:
            run = await self.app.get_run(run_id, account_id)
        except NotFound:
            return
        name = str(payload.get("name") or run.get("jobDefinitionId"))
        terminal = RunStatus(run["status"]).terminal
        text = render_status(run, name)
        if not state.get("sending"):
            # where to look should this send be interrupted (after a first interruption, the
            # first watermark stays: every message left behind lies above it)
            state["after"] = await reconcile.watermark(self.app, chat_id, reply_to)
        state.update(chatId=chat_id, accountId=account_id, name=name, sending=True,
                     sent={"text": text, "cancel": not terminal})
        await self.app.kv_set(STATUS_NAMESPACE, run_id, state)
        params: dict[str, Any] = {"chat_id": chat_id, "text": text}
        if reply_to is not None:
            params["reply_parameters"] = {"message_id": reply_to, "allow_sending_without_reply": True}
        if not terminal:
            params["reply_markup"] = cancel_markup(run_id)
        try:
            result = await self.api.call("sendMessage", params)
        except BotAPIError as exc:
            if not exc.sent_maybe:
                state["sending"] = False
                await self.app.kv_set(STATUS_NAMESPACE, run_id, state)
            raise failure(f"status message: {exc}", exc) from None
        state.update(messageId=int(result["message_id"]), text=text, editedAt=time.time(), final=terminal, sending=False)
        await self.app.kv_set(STATUS_NAMESPACE, run_id, state, ttl=86400.0 if terminal else None)
        await reconcile.seen(self.app, chat_id, [int(result["message_id"])])


def _after(state: Mapping[str, Any], chat_id: Any) -> Any:
    """The watermark an interrupted attempt recorded, when it was sending to ``chat_id`` (an attempt
    to a group that then turned out to be a supergroup left a mark of another chat)."""
    return state.get("after") if state.get("chat", chat_id) == chat_id else None


def _keep_withheld(state: dict[str, Any], index: int, part: Part, withheld: list[int]) -> dict[str, Any]:
    """``state`` with the files ``withheld`` of part ``index`` in doubt (a resend sends them)."""
    doubts = list(state.get("doubts") or [])
    if index not in doubts:
        doubts.append(index)
    in_doubt: dict[str, Any] = dict(state.get("itemDoubts") or {})
    if part.method == "sendMediaGroup":
        mine = in_doubt.get(str(index)) or {"items": [], "outputs": []}
        items = [*mine["items"], *[i for i in withheld if i not in mine["items"]]]
        in_doubt[str(index)] = {"items": items, "outputs": [part.media[i].output for i in items]}
    return {**state, "doubts": doubts, "itemDoubts": in_doubt}


__all__ = ["CHANNEL", "TelegramChannel", "failure_text", "rerun_keyboard", "telegram_approver_rule", "telegram_notification_rule"]
