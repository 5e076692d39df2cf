"""The ``telegram`` notification channel: a finished run's results, sent to the chat it came from.

The engine writes a ``("telegram", {"chatId", "replyTo"})`` notification for every top-level run
whose ``origin.platform`` is ``telegram`` (``telegram_notification_rule``); a worker's dispatcher
calls ``TelegramChannel.deliver``. A delivery is a fixed list of parts (photos — a media group
when several —, videos, documents, then one text message with a Rerun button). Each part sent is
recorded under ``kv("telegram.sent", notification_id)``, so a retry after a 429 or a 5xx resumes
with the first part not yet sent instead of sending everything twice.

Errors: 429 → ``DeliveryError(retryable, retry_after)``, 5xx and network trouble → retryable,
other 4xx → not retryable. The dispatcher records every attempt on the notification row.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from toolweave.model.definitions import JobDefinition
from toolweave.model.records import ArtifactRef
from toolweave.model.status import RunStatus
from toolweave.notify.dispatcher import DeliveryError
from toolweave.telegram.botapi import BotAPI, BotAPIError, redact_token_in_logs

if TYPE_CHECKING:
    from toolweave.app import App

CHANNEL = "telegram"
SENT_NAMESPACE = "telegram.sent"
SENT_TTL = 30 * 86400.0
MAX_TEXT = 4096
MAX_UPLOAD = 50 * 1024 * 1024
MAX_PHOTO = 10 * 1024 * 1024
MEDIA_GROUP = 10


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


def rerun_keyboard(run_id: str) -> dict[str, Any]:
    return {"inline_keyboard": [[{"text": "🔁 Rerun", "callback_data": f"r:{run_id}"}]]}


@dataclass
class _Media:
    output: str
    kind: str  # photo | video | document
    ref: ArtifactRef
    filename: str


@dataclass
class Part:
    """One Bot API call of a delivery."""

    method: str
    media: list[_Media] = field(default_factory=list)
    text: str | None = None
    keyboard: dict[str, Any] | None = None

    def describe(self) -> str:
        names = ", ".join(m.output for m in self.media)
        return f"{self.method}({names})" if names else self.method


def _hints(definition: JobDefinition | None, output: str) -> dict[str, Any]:
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


def _ordered_outputs(outputs: Mapping[str, Any], definition: JobDefinition | None) -> list[tuple[str, Any]]:
    order = [o.name for o in definition.output_schema] if definition else []
    names = [n for n in order if n in outputs] + [n for n in outputs if n not in order]
    return [(n, outputs[n]) for n in names]


def _flatten(name: str, value: Any) -> list[tuple[str, Any]]:
    if isinstance(value, list):
        return [(f"{name}[{i}]" if len(value) > 1 else name, v) for i, v in enumerate(value)]
    return [(name, value)]


def _media_kind(ref: ArtifactRef, send_as: str | None) -> str:
    if send_as in ("document", "file"):
        return "document"
    mime = ref.mime_type or ""
    if mime.startswith("image/") and mime != "image/gif":
        too_big = ref.size > MAX_PHOTO or (ref.width or 0) + (ref.height or 0) > 10000
        return "document" if too_big else "photo"
    if mime.startswith("video/") or (send_as == "video" and mime == "image/gif"):
        return "video"
    return "document"


def _extension(mime: str) -> str:
    sub = mime.split("/", 1)[-1].split(";")[0].strip() or "bin"
    return {"jpeg": "jpg", "svg+xml": "svg", "quicktime": "mov", "octet-stream": "bin"}.get(sub, sub)


def _short(value: Any, limit: int = 600) -> str:
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


class TelegramChannel:
    """Delivers finished runs to Telegram chats through the Bot API."""

    name = CHANNEL

    def __init__(self, app: App, api: BotAPI | None = None) -> None:
        token = app.settings.telegram_token
        if not token:
            raise ValueError("the telegram channel needs settings.telegram_token")
        redact_token_in_logs(token)  # workers log request URLs (httpx), which hold the token
        self.app = app
        self.api = api or BotAPI(app.http, token, app.settings.telegram_api_url, timeout=max(60.0, app.settings.http_timeout_seconds))

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

    def plan(self, notification: Mapping[str, Any]) -> list[Part]:
        """The Bot API calls that deliver one notification, in order (deterministic)."""
        payload = notification.get("payload") or {}
        run_id = str(payload.get("runId") or notification.get("run_id") or "")
        definition = self._definition(payload.get("jobId"))
        name = definition.display_name if definition else str(payload.get("jobId") or "Your run")
        status = str(payload.get("status") or "")
        if status == RunStatus.WAITING_INPUT.value:  # a step asks the run's account (telegram.questions)
            return self._question_parts(name, payload)
        keyboard = rerun_keyboard(run_id) if run_id else None
        if status == RunStatus.FAILED.value:
            error = payload.get("error") if isinstance(payload.get("error"), Mapping) else None
            step = error.get("step_id") if error else None
            text = failure_text(name, error, definition, self._tool_name(definition, step))
            return [Part("sendMessage", text=text, keyboard=keyboard)]
        if status == RunStatus.CANCELLED.value:
            return [Part("sendMessage", text=f"🚫 {name} was cancelled.", keyboard=keyboard)]

        photos: list[_Media] = []
        parts: list[Part] = []
        lines: list[str] = []
        given = payload.get("outputs")
        outputs: Mapping[str, Any] = given if isinstance(given, Mapping) else {}
        for output, whole in _ordered_outputs(outputs, definition):
            for label, value in _flatten(output, whole):
                ref = ArtifactRef.from_value(value) if isinstance(value, dict) else None
                if ref is None:
                    if value is not None and value != "":
                        lines.append(f"{label}: {_short(value)}")
                    continue
                if ref.size > MAX_UPLOAD:
                    lines.append(f"{label}: too large for Telegram ({ref.size / 1048576:.0f} MB)")
                    continue
                hints = _hints(definition, output)
                kind = _media_kind(ref, hints.get("send_as"))
                filename = hints.get("filename") or ref.filename or f"{label}.{_extension(ref.mime_type)}"
                item = _Media(label, kind, ref, filename)
                if kind == "photo":
                    photos.append(item)
                else:
                    parts.append(Part("sendVideo" if kind == "video" else "sendDocument", media=[item]))
        groups: list[Part] = []
        for start in range(0, len(photos), MEDIA_GROUP):
            chunk = photos[start:start + MEDIA_GROUP]
            groups.append(Part("sendPhoto" if len(chunk) == 1 else "sendMediaGroup", media=chunk))
        head = f"✅ {name} is done." if status == RunStatus.COMPLETED.value else f"⚠️ {name} finished, but some steps failed and were skipped."
        if not groups and not parts and not lines:
            lines.append("It produced no outputs.")
        text = "\n".join([head, *lines])
        if len(text) > MAX_TEXT:
            text = text[: MAX_TEXT - 1] + "…"
        return [*groups, *parts, Part("sendMessage", text=text, keyboard=keyboard)]

    def _question_parts(self, name: str, payload: Mapping[str, Any]) -> list[Part]:
        """The candidates as photos, each with its button (when they are images), then the question
        with its keyboard."""
        from toolweave.telegram import questions

        question: Mapping[str, Any] = payload.get("question") or {}
        qid = str(payload.get("questionId") or "")
        single = int(question.get("maxChoices") or 1) == 1
        parts = [
            Part("sendPhoto", media=[_Media(f"#{index + 1}", "photo", ref, f"candidate-{index + 1}.{_extension(ref.mime_type)}")],
                 keyboard=questions.candidate_keyboard(qid, index, single))
            for index, ref in questions.photo_candidates(question)
        ]
        text, keyboard = questions.question_message(name, payload)
        return [*parts, Part("sendMessage", text=text, keyboard=keyboard)]

    async def deliver(self, notification: Mapping[str, Any]) -> None:
        target = notification.get("target") or {}
        chat_id = target.get("chatId") if isinstance(target, Mapping) else None
        if chat_id is None:
            raise DeliveryError("the notification names no chatId", retryable=False)
        reply_to = target.get("replyTo")
        notification_id = str(notification.get("notification_id"))
        account_id = str(notification.get("account_id"))
        parts = self.plan(notification)
        state = await self.app.kv_get(SENT_NAMESPACE, notification_id) or {}
        done = int(state.get("done", 0))
        sent: list[dict[str, Any]] = list(state.get("sent", []))
        for index in range(done, len(parts)):
            part = parts[index]
            try:
                message_ids = await self._send(part, chat_id, reply_to, account_id)
            except BotAPIError as exc:
                raise DeliveryError(
                    f"{part.describe()} (part {index + 1} of {len(parts)}): {exc}",
                    retryable=exc.retryable, retry_after=exc.retry_after,
                ) from None
            sent.append({"method": part.method, "outputs": [m.output for m in part.media], "messageIds": message_ids})
            await self.app.kv_set(SENT_NAMESPACE, notification_id, {"done": index + 1, "of": len(parts), "sent": sent}, ttl=SENT_TTL)

    async def _file(self, media: _Media, account_id: str) -> tuple[str, bytes, str]:
        from toolweave.app import NotFound

        try:
            path, _ref = await self.app.artifact(media.ref.sha256, account_id)
            data = await asyncio.to_thread(path.read_bytes)
        except (NotFound, OSError):
            raise BotAPIError(f"the output {media.output} is no longer stored", status=410) from None
        return media.filename, data, media.ref.mime_type or "application/octet-stream"

    async def _send(self, part: Part, chat_id: Any, reply_to: Any, account_id: str) -> list[int]:
        params: dict[str, Any] = {"chat_id": chat_id}
        if reply_to is not None:
            params["reply_parameters"] = {"message_id": reply_to, "allow_sending_without_reply": True}
        if part.method == "sendMessage":
            params["text"] = part.text or ""
            if part.keyboard:
                params["reply_markup"] = part.keyboard
            result = await self.api.call("sendMessage", params)
        elif part.method == "sendMediaGroup":
            files: dict[str, tuple[str, bytes, str]] = {}
            media = []
            for i, item in enumerate(part.media):
                files[f"file{i}"] = await self._file(item, account_id)
                media.append({"type": "photo", "media": f"attach://file{i}"})
            params["media"] = media
            result = await self.api.call("sendMediaGroup", params, files)
        else:
            field_name = {"sendPhoto": "photo", "sendVideo": "video", "sendDocument": "document"}[part.method]
            item = part.media[0]
            if part.keyboard:
                params["reply_markup"] = part.keyboard
            result = await self.api.call(part.method, params, {field_name: await self._file(item, account_id)})
        results = result if isinstance(result, list) else [result]
        return [int(r["message_id"]) for r in results if isinstance(r, Mapping) and "message_id" in r]
