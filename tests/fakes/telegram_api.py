"""A fake Telegram Bot API server for tests (real HTTP on loopback, via ``serve_asgi``).

    fake = FakeTelegram(token="123:abc")
    async with serve_asgi(fake.asgi()) as url:
        # python-telegram-bot: .base_url(f"{url}/bot").base_file_url(f"{url}/file/bot")
        # toolweave: Settings(telegram_api_url=url, telegram_token=fake.token)

It answers the methods the bot uses (getMe, setMyCommands, deleteWebhook, setWebhook, getUpdates,
sendMessage, editMessageText, editMessageReplyMarkup, editMessageCaption, deleteMessage,
sendPhoto, sendMediaGroup, sendVideo, sendDocument, getFile and the file download,
answerCallbackQuery, sendChatAction), in JSON,
url-encoded or multipart form (values of nested fields as JSON text, as the real API takes them).
Every call is recorded in ``calls``; every message the bot sent lives in ``messages`` with its
current text and buttons, and edits are appended to ``edits``. ``fail(method, status, times,
retry_after)`` scripts failures (429 with ``parameters.retry_after``, 500, 400 ...);
``limit_rate(seconds, retry_after)`` answers every sending call 429 for a while, ``outage(seconds)``
answers every call 502; ``hold(method)`` accepts the next such call (the message exists) and keeps
its answer back until ``release()`` — the moment a bot can die between "sent" and "recorded";
``lose(method)`` swallows the next such call (no message, no answer), which the bot cannot tell
from a held one.

Message ids are counted as Telegram counts them: a supergroup (an id starting with -100) counts its
own messages one by one, users' and the bot's alike; private chats and basic groups take the bot
account's counter, which every message the bot sends or receives in any of them moves on — so ids
in one private chat grow with gaps. Users' messages (``user_message``) are kept in ``incoming``.
Edits and deletion follow the documented rules and answer Telegram's errors: only the bot's own
messages can be edited ("message can't be edited"), an id with no message is "message to edit not
found" / "message to delete not found", an edit that changes nothing (text or caption and inline
keyboard as they are) is "message is not modified", and ``deleteMessage`` takes a message younger
than 48 hours that is the bot's own, a user's in a private chat, or anyone's in a group where the
bot is an administrator (``admin_in``), else "message can't be deleted".

It is strict about the limits the Bot API documents, and refuses what Telegram refuses, with
Telegram's descriptions: a text of 1-4096 characters, a caption of at most 1024, a media group of
2-10 items, ``callback_data`` of 1-64 bytes, at most 100 commands (1-32 of ``a-z0-9_``, a
description of 1-256 characters), an upload of at most 50 MB, and a photo that is an image
Telegram can process (JPEG, PNG, WebP, BMP, GIF: else ``IMAGE_PROCESS_FAILED``) of at most 10 MB,
whose width and height are at most 10000 together and whose ratio is at most 20 (else
``PHOTO_INVALID_DIMENSIONS``).
Updates for the bot are built with ``message_update`` / ``callback_update`` and either queued for
``getUpdates`` with ``push`` or handed to the bot directly.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

BOT_USER = {"id": 7000001, "is_bot": True, "first_name": "Toolweave", "username": "toolweave_test_bot",
            "can_join_groups": True, "can_read_all_group_messages": False, "supports_inline_queries": False}

MAX_TEXT = 4096
MAX_CAPTION = 1024
MAX_PHOTO_BYTES = 10 * 1024 * 1024
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
PHOTO_FORMATS = {"JPEG", "PNG", "WEBP", "BMP", "GIF"}
SENDING = {"sendMessage", "sendPhoto", "sendVideo", "sendDocument", "sendMediaGroup", "editMessageText",
           "editMessageReplyMarkup", "editMessageCaption", "deleteMessage"}
_COMMAND_RE = re.compile(r"^[a-z0-9_]{1,32}$")

_JSON_FIELDS = {"reply_markup", "media", "commands", "reply_parameters", "allowed_updates", "entities",
                "caption_entities", "link_preview_options", "scope"}


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    files: dict[str, tuple[str, str, bytes]] = field(default_factory=dict)
    """field name → (filename, content type, bytes)."""
    status: int = 200
    at: float = 0.0


@dataclass
class _Failure:
    status: int
    times: int
    retry_after: int | None
    description: str
    chat_id: int | None = None
    after: int = 0
    """Calls to let through before the first failure."""


class FakeTelegram:
    def __init__(self, token: str = "123456:TEST-token-abcdefghijklmnopqrstuv") -> None:
        self.token = token
        self.calls: list[Call] = []
        self.messages: dict[tuple[int, int], dict[str, Any]] = {}
        self.edits: list[dict[str, Any]] = []
        self.deleted: list[tuple[int, int]] = []
        self.files: dict[str, tuple[str, bytes]] = {}
        self.downloads: list[str] = []
        self.updates: list[dict[str, Any]] = []
        self.webhook: dict[str, Any] | None = None
        self.commands: list[dict[str, Any]] = []
        self._failures: dict[str, list[_Failure]] = {}
        self._ids = itertools.count(1000)
        """The bot account's message counter: ids in private chats and basic groups."""
        self._chat_ids: dict[int, itertools.count[int]] = {}
        """A supergroup's own message counter."""
        self._query_ids = itertools.count(1)
        self.incoming: dict[tuple[int, int], dict[str, Any]] = {}
        """Messages of users (built by ``user_message``), by (chat, message id)."""
        self.admin_in: set[int] = set()
        """Chats where the bot is an administrator (it may delete anyone's messages there)."""
        self._update_ids = itertools.count(1)
        self._file_ids = itertools.count(1)
        self._new_update = asyncio.Event()
        self._changed = asyncio.Event()
        self._limited_until = 0.0
        self._limited_retry_after = 1
        self._closed: dict[int, tuple[int, str, dict[str, Any] | None]] = {}
        self._denied: dict[int, set[str]] = {}
        """What the bot may not send in a chat (``restrict``): "photos", "videos", "documents", "text messages"."""
        self._down_until = 0.0
        self._hold: set[str] = set()
        self._lose: set[str] = set()
        self.lost: list[Call] = []
        """Calls that were never carried out and never answered (see ``lose``)."""
        self.held: list[Call] = []
        """Calls whose message was accepted and whose answer is kept back (see ``hold``)."""
        self._release = asyncio.Event()

    # --- scripting --------------------------------------------------------------------------------

    def fail(self, method: str, status: int = 500, *, times: int = 1, retry_after: int | None = None,
             description: str | None = None, chat_id: int | None = None, after: int = 0) -> None:
        """The next ``times`` calls of ``method`` (to ``chat_id`` only, when given) answer ``status``
        (429 carries ``retry_after``), once ``after`` such calls went through as usual."""
        text = description or {429: f"Too Many Requests: retry after {retry_after}", 400: "Bad Request: scripted",
                               403: "Forbidden: bot was blocked by the user"}.get(status, "Internal Server Error")
        self._failures.setdefault(method, []).append(_Failure(status, times, retry_after, text, chat_id, after))

    def close_chat(self, chat_id: int, status: int = 400, description: str = "Bad Request: chat not found") -> None:
        """Every sending call to ``chat_id`` is refused from now on, as Telegram refuses a chat the
        bot cannot write to (400 "chat not found", 403 "bot was blocked by the user"), until
        ``open_chat``."""
        self._closed[chat_id] = (status, description, None)

    def upgrade_group(self, chat_id: int, to: int) -> None:
        """The basic group ``chat_id`` became the supergroup ``to``: every sending call to the old
        id is answered as Telegram answers it (400 with ``parameters.migrate_to_chat_id``)."""
        self._closed[chat_id] = (400, "Bad Request: group chat was upgraded to a supergroup chat", {"migrate_to_chat_id": to})

    def open_chat(self, chat_id: int) -> None:
        self._closed.pop(chat_id, None)

    def restrict(self, chat_id: int, *kinds: str) -> None:
        """In the group ``chat_id`` the bot lacks the right to send ``kinds`` ("photos", "videos",
        "documents", "text messages"; none: every right back). Telegram checks every content of a
        call before sending any of it, and answers 400 "not enough rights to send <kind> to the
        chat" (an album with one photo is refused whole)."""
        self._denied[chat_id] = set(kinds)

    def limit_rate(self, seconds: float, retry_after: int = 1) -> None:
        """For ``seconds`` from now every sending call is answered 429 with ``retry_after``."""
        self._limited_until = time.time() + seconds
        self._limited_retry_after = retry_after

    def outage(self, seconds: float) -> None:
        """For ``seconds`` from now every call is answered 502 Bad Gateway."""
        self._down_until = time.time() + seconds

    def outage_left(self) -> float:
        """Seconds until the outage ends (0 when there is none)."""
        return max(0.0, self._down_until - time.time())

    def hold(self, *methods: str) -> None:
        """The next call of one of ``methods`` is carried out (its messages exist) but its answer is
        kept back until ``release()``: a bot killed meanwhile never learns that it was sent."""
        self._hold.update(methods)
        self._release.clear()

    def lose(self, *methods: str) -> None:
        """The next call of one of ``methods`` is never carried out (no message) and not answered
        until ``release()`` (then 502): a request lost on the way, which the bot cannot tell from
        one carried out whose answer was lost (``hold``)."""
        self._lose.update(methods)
        self._release.clear()

    def release(self) -> None:
        self._hold.clear()
        self._lose.clear()
        self._release.set()

    def add_file(self, data: bytes, path: str) -> str:
        """Keep a file the bot may download; returns its file_id."""
        file_id = f"FILE{next(self._file_ids):04d}"
        self.files[file_id] = (path, data)
        return file_id

    def push(self, *updates: dict[str, Any]) -> None:
        """Queue raw updates for getUpdates."""
        self.updates.extend(updates)
        self._new_update.set()

    def next_update_id(self) -> int:
        return next(self._update_ids)

    @staticmethod
    def user(user_id: int, first_name: str = "Ada") -> dict[str, Any]:
        return {"id": user_id, "is_bot": False, "first_name": first_name, "language_code": "en"}

    @staticmethod
    def chat(chat_id: int) -> dict[str, Any]:
        """A private chat (a positive id), a supergroup (-100…) or a basic group (other negative ids)."""
        if chat_id > 0:
            return {"id": chat_id, "type": "private", "first_name": "Ada"}
        if str(chat_id).startswith("-100"):
            return {"id": chat_id, "type": "supergroup", "title": "Test supergroup"}
        return {"id": chat_id, "type": "group", "title": "Test group"}

    def next_message_id(self, chat_id: int) -> int:
        """The id the next message in ``chat_id`` gets, as Telegram counts: a supergroup counts its
        own messages one by one; private chats and basic groups take the bot account's counter,
        which every message the bot sends or receives in any of them moves on (so ids in one private
        chat grow, with gaps)."""
        if self.chat(chat_id)["type"] == "supergroup":
            return next(self._chat_ids.setdefault(chat_id, itertools.count(1)))
        return next(self._ids)

    def age(self, chat_id: int, message_id: int, seconds: float) -> None:
        """Make a message ``seconds`` older (for the 48-hour limit of deleteMessage)."""
        message = self.messages.get((chat_id, message_id)) or self.incoming[(chat_id, message_id)]
        message["date"] = int(message["date"] - seconds)

    def user_message(
        self,
        text: str | None = None,
        *,
        user_id: int = 42,
        chat_id: int | None = None,
        photo: bytes | None = None,
        document: tuple[bytes, str, str] | None = None,
        video: bytes | None = None,
        reply_to: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A message from a user (text, or caption with media); ``document`` is (bytes, mime, name)."""
        chat_id = user_id if chat_id is None else chat_id
        message: dict[str, Any] = {
            "message_id": self.next_message_id(chat_id), "date": int(time.time()), "chat": self.chat(chat_id),
            "from": self.user(user_id),
        }
        key = "caption" if (photo or document or video) else "text"
        if text is not None:
            message[key] = text
            if text.startswith("/"):
                length = len(text.split()[0]) if text.split() else 1
                message[f"{key}_entities" if key == "caption" else "entities"] = [
                    {"type": "bot_command", "offset": 0, "length": length}
                ]
        if photo is not None:
            fid = self.add_file(photo, f"photos/file_{len(self.files)}.jpg")
            message["photo"] = [
                {"file_id": fid + "s", "file_unique_id": fid + "us", "width": 90, "height": 90, "file_size": 100},
                {"file_id": fid, "file_unique_id": "u" + fid, "width": 800, "height": 600, "file_size": len(photo)},
            ]
        if document is not None:
            data, mime, name = document
            fid = self.add_file(data, f"documents/{name}")
            message["document"] = {"file_id": fid, "file_unique_id": "u" + fid, "file_name": name,
                                   "mime_type": mime, "file_size": len(data)}
        if video is not None:
            fid = self.add_file(video, f"videos/file_{len(self.files)}.mp4")
            message["video"] = {"file_id": fid, "file_unique_id": "u" + fid, "width": 64, "height": 64,
                                "duration": 1, "mime_type": "video/mp4", "file_size": len(video)}
        if reply_to is not None:
            message["reply_to_message"] = reply_to
        self.incoming[(chat_id, message["message_id"])] = message
        return message

    def message_update(self, text: str | None = None, **kwargs: Any) -> dict[str, Any]:
        return {"update_id": self.next_update_id(), "message": self.user_message(text, **kwargs)}

    def callback_update(self, data: str, *, user_id: int = 42, message: dict[str, Any]) -> dict[str, Any]:
        return {
            "update_id": self.next_update_id(),
            "callback_query": {"id": f"cbq{next(self._query_ids)}", "from": self.user(user_id), "chat_instance": "ci1",
                               "data": data, "message": self.public(message)},
        }

    # --- reading what the bot did -----------------------------------------------------------------

    def calls_of(self, *methods: str) -> list[Call]:
        return [c for c in self.calls if c.method in methods and c.status == 200]

    def sent_to(self, chat_id: int) -> list[dict[str, Any]]:
        return [m for (c, _), m in sorted(self.messages.items()) if c == chat_id]

    def message(self, chat_id: int, message_id: int) -> dict[str, Any]:
        return self.messages[(chat_id, message_id)]

    async def wait_for(self, predicate: Any, timeout: float = 20.0) -> Any:
        """Wait until ``predicate()`` is truthy (checked after every call); returns its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("the fake Telegram server did not see what the test waited for")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.2))
            except TimeoutError:
                pass

    # --- the server -------------------------------------------------------------------------------

    def asgi(self) -> Starlette:
        return Starlette(routes=[
            Route("/bot{token}/{method}", self._method, methods=["GET", "POST"]),
            Route("/file/bot{token}/{path:path}", self._download, methods=["GET"]),
        ])

    async def _params(self, request: Request) -> tuple[dict[str, Any], dict[str, tuple[str, str, bytes]]]:
        params: dict[str, Any] = dict(request.query_params)
        files: dict[str, tuple[str, str, bytes]] = {}
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("application/json"):
            body = await request.body()
            if body:
                params.update(json.loads(body))
            return params, files
        if ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
            form = await request.form()
            for key, value in form.multi_items():
                if hasattr(value, "read"):
                    files[key] = (value.filename or "", value.content_type or "", await value.read())
                elif key in _JSON_FIELDS:
                    params[key] = json.loads(value)
                else:
                    params[key] = value
        for key in ("chat_id", "message_id", "offset", "timeout", "limit"):
            if isinstance(params.get(key), str) and params[key].lstrip("-").isdigit():
                params[key] = int(params[key])
        return params, files

    def _check_markup(self, params: dict[str, Any]) -> JSONResponse | None:
        markup = params.get("reply_markup")
        if not isinstance(markup, dict):
            return None
        for row in markup.get("inline_keyboard") or []:
            for button in row:
                data = button.get("callback_data")
                if data is not None and not 1 <= len(str(data).encode()) <= 64:
                    return self._error(400, "Bad Request: BUTTON_DATA_INVALID")
                if not button.get("text"):
                    return self._error(400, "Bad Request: text buttons are unallowed in the inline keyboard")
        return None

    def _check_caption(self, caption: Any) -> JSONResponse | None:
        if caption is not None and len(str(caption)) > MAX_CAPTION:
            return self._error(400, "Bad Request: message caption is too long")
        return None

    def _check_photo(self, data: bytes) -> JSONResponse | tuple[int, int]:
        """What Telegram does with a photo: refuse it, or keep its size."""
        if len(data) > MAX_PHOTO_BYTES:
            return self._error(400, "Bad Request: PHOTO_SAVE_FILE_INVALID")
        try:
            with Image.open(io.BytesIO(data)) as image:
                kind, (width, height) = image.format, image.size
        except Exception:
            return self._error(400, "Bad Request: IMAGE_PROCESS_FAILED")
        if kind not in PHOTO_FORMATS:
            return self._error(400, "Bad Request: IMAGE_PROCESS_FAILED")
        if width + height > 10000 or max(width, height) > 20 * max(1, min(width, height)):
            return self._error(400, "Bad Request: PHOTO_INVALID_DIMENSIONS")
        return width, height

    def _error(self, status: int, description: str, retry_after: int | None = None,
               parameters: dict[str, Any] | None = None) -> JSONResponse:
        body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
        if retry_after is not None:
            body["parameters"] = {"retry_after": retry_after}
        if parameters:
            body["parameters"] = {**body.get("parameters", {}), **parameters}
        return JSONResponse(body, status_code=status)

    async def _method(self, request: Request) -> Response:
        method = request.path_params["method"]
        if request.path_params["token"] != self.token:
            return self._error(401, "Unauthorized")
        params, files = await self._params(request)
        call = Call(method, params, files, at=time.time())
        self.calls.append(call)
        try:
            now = time.time()
            if now < self._down_until:
                call.status = 502
                return self._error(502, "Bad Gateway")
            if method in SENDING and now < self._limited_until:
                call.status = 429
                retry = max(1, min(self._limited_retry_after, int(self._limited_until - now) + 1))
                return self._error(429, f"Too Many Requests: retry after {retry}", retry)
            closed = self._closed.get(params.get("chat_id")) if method in SENDING else None  # type: ignore[arg-type]
            if closed is not None:
                call.status = closed[0]
                return self._error(closed[0], closed[1], parameters=closed[2])
            lacking = self._lacking(method, params)
            if lacking is not None:
                call.status = 400
                return self._error(400, f"Bad Request: not enough rights to send {lacking} to the chat")
            queue = self._failures.get(method) or []
            failure = next((f for f in queue if f.chat_id is None or f.chat_id == params.get("chat_id")), None)
            if failure is not None and failure.after > 0:
                failure.after -= 1
                failure = None
            if failure is not None:
                failure.times -= 1
                if failure.times <= 0:
                    queue.remove(failure)
                call.status = failure.status
                return self._error(failure.status, failure.description, failure.retry_after)
            if method in self._lose:
                self._lose.discard(method)
                self.lost.append(call)
                call.status = 502
                self._changed.set()
                await self._release.wait()
                return self._error(502, "Bad Gateway")
            handler = getattr(self, "_m_" + method, None)
            if handler is None:
                call.status = 404
                return self._error(404, "Not Found")
            refused = self._check_markup(params)
            result = refused if refused is not None else await handler(params, files)
            if isinstance(result, JSONResponse):
                call.status = result.status_code
                return result
            if method in self._hold:
                self._hold.discard(method)
                self.held.append(call)
                self._changed.set()
                await self._release.wait()
            return JSONResponse({"ok": True, "result": result})
        finally:
            self._changed.set()

    def _lacking(self, method: str, params: dict[str, Any]) -> str | None:
        """The first kind of content of this call the bot may not send to its chat (``restrict``)."""
        denied = self._denied.get(params.get("chat_id"))  # type: ignore[arg-type]
        if not denied:
            return None
        kinds = {"sendMessage": ["text messages"], "sendPhoto": ["photos"], "sendVideo": ["videos"],
                 "sendDocument": ["documents"]}.get(method, [])
        if method == "sendMediaGroup" and isinstance(params.get("media"), list):
            kinds = [{"photo": "photos", "video": "videos", "document": "documents"}.get(
                str(item.get("type", "photo")), "photos") for item in params["media"] if isinstance(item, dict)]
        return next((kind for kind in kinds if kind in denied), None)

    async def _download(self, request: Request) -> Response:
        if request.path_params["token"] != self.token:
            return Response(status_code=401)
        path = request.path_params["path"]
        self.downloads.append(path)
        for stored_path, data in self.files.values():
            if stored_path == path:
                return Response(data, media_type="application/octet-stream")
        return Response(status_code=404)

    # --- methods ----------------------------------------------------------------------------------

    async def _m_getMe(self, params: dict[str, Any], files: Any) -> Any:
        return BOT_USER

    async def _m_setMyCommands(self, params: dict[str, Any], files: Any) -> Any:
        commands = params.get("commands")
        if not isinstance(commands, list) or len(commands) > 100:
            return self._error(400, "Bad Request: too many commands specified")
        for command in commands:
            if not _COMMAND_RE.match(str(command.get("command", ""))):
                return self._error(400, "Bad Request: BOT_COMMAND_INVALID")
            if not 1 <= len(str(command.get("description", "")).strip()) <= 256:
                return self._error(400, "Bad Request: command description must be 1-256 characters")
        self.commands = commands
        return True

    async def _m_deleteWebhook(self, params: dict[str, Any], files: Any) -> Any:
        self.webhook = None
        return True

    async def _m_setWebhook(self, params: dict[str, Any], files: Any) -> Any:
        self.webhook = params
        return True

    async def _m_sendChatAction(self, params: dict[str, Any], files: Any) -> Any:
        return True

    async def _m_answerCallbackQuery(self, params: dict[str, Any], files: Any) -> Any:
        if len(str(params.get("text") or "")) > 200:
            return self._error(400, "Bad Request: MESSAGE_TOO_LONG")
        return True

    async def _m_getUpdates(self, params: dict[str, Any], files: Any) -> Any:
        offset = int(params.get("offset") or 0)
        if offset:
            self.updates = [u for u in self.updates if not isinstance(u.get("update_id"), int) or u["update_id"] >= offset]
        timeout = min(float(params.get("timeout") or 0), 0.5)
        if not self.updates and timeout > 0:
            self._new_update.clear()
            try:
                await asyncio.wait_for(self._new_update.wait(), timeout)
            except TimeoutError:
                pass
        return list(self.updates)

    async def _m_getFile(self, params: dict[str, Any], files: Any) -> Any:
        file_id = str(params.get("file_id"))
        if file_id not in self.files:
            return self._error(400, "Bad Request: invalid file_id")
        path, data = self.files[file_id]
        return {"file_id": file_id, "file_unique_id": "u" + file_id, "file_size": len(data), "file_path": path}

    def _store(self, params: dict[str, Any], **content: Any) -> dict[str, Any] | JSONResponse:
        chat_id = params.get("chat_id")
        if not isinstance(chat_id, int):
            return self._error(400, "Bad Request: chat_id is missing or not a number")
        message: dict[str, Any] = {"message_id": self.next_message_id(chat_id), "date": int(time.time()),
                                   "chat": self.chat(chat_id), "from": BOT_USER, **content}
        reply = params.get("reply_parameters") or {}
        if isinstance(reply, dict) and reply.get("message_id"):
            message["_reply_to"] = reply["message_id"]
        if params.get("reply_markup"):
            message["reply_markup"] = params["reply_markup"]
        self.messages[(chat_id, message["message_id"])] = message
        return self.public(message)

    @staticmethod
    def public(message: dict[str, Any]) -> dict[str, Any]:
        """A message as the API returns it: only inline keyboards come back as reply_markup."""
        out = {k: v for k, v in message.items() if not k.startswith("_")}
        if "inline_keyboard" not in (out.get("reply_markup") or {}):
            out.pop("reply_markup", None)
        return out

    async def _m_sendMessage(self, params: dict[str, Any], files: Any) -> Any:
        text = params.get("text")
        if not text or not str(text).strip():
            return self._error(400, "Bad Request: message text is empty")
        if len(str(text)) > MAX_TEXT:
            return self._error(400, "Bad Request: message is too long")
        return self._store(params, text=text)

    def _upload(self, kind: str, params: dict[str, Any], files: dict[str, tuple[str, str, bytes]], field_name: str) -> Any:
        if field_name not in files:
            return self._error(400, f"Bad Request: there is no {field_name} in the request")
        filename, ctype, data = files[field_name]
        if len(data) > MAX_UPLOAD_BYTES:
            return self._error(413, "Request Entity Too Large")
        refused = self._check_caption(params.get("caption"))
        if refused is not None:
            return refused
        size = (1, 1)
        if kind == "photo":
            checked = self._check_photo(data)
            if isinstance(checked, JSONResponse):
                return checked
            size = checked
        fid = self.add_file(data, f"sent/{filename}")
        meta: dict[str, Any] = {"file_id": fid, "file_unique_id": "u" + fid, "file_size": len(data)}
        caption = {"caption": params["caption"]} if params.get("caption") else {}
        if kind == "photo":
            content: dict[str, Any] = {"photo": [{**meta, "width": size[0], "height": size[1]}], **caption}
        elif kind == "video":
            content = {"video": {**meta, "width": 1, "height": 1, "duration": 1, "mime_type": ctype}, **caption}
        else:
            content = {"document": {**meta, "file_name": filename, "mime_type": ctype}, **caption}
        stored = self._store(params, **content, _upload={"filename": filename, "contentType": ctype, "size": len(data)})
        return stored

    async def _m_sendPhoto(self, params: dict[str, Any], files: Any) -> Any:
        return self._upload("photo", params, files, "photo")

    async def _m_sendVideo(self, params: dict[str, Any], files: Any) -> Any:
        return self._upload("video", params, files, "video")

    async def _m_sendDocument(self, params: dict[str, Any], files: Any) -> Any:
        return self._upload("document", params, files, "document")

    async def _m_sendMediaGroup(self, params: dict[str, Any], files: dict[str, tuple[str, str, bytes]]) -> Any:
        media = params.get("media")
        if not isinstance(media, list) or not 2 <= len(media) <= 10:
            return self._error(400, "Bad Request: media must be a list of 2-10 items")
        if params.get("reply_markup"):
            return self._error(400, "Bad Request: media groups take no reply markup")
        # the whole group is checked before any of it is sent: Telegram sends all of it or nothing
        for item in media:
            ref = str(item.get("media", ""))
            name = ref.removeprefix("attach://")
            if not ref.startswith("attach://") or name not in files:
                return self._error(400, f"Bad Request: media {ref!r} not found in the request")
            refused = self._check_caption(item.get("caption"))
            if refused is not None:
                return refused
            if item.get("type", "photo") == "photo":
                checked = self._check_photo(files[name][2])
                if isinstance(checked, JSONResponse):
                    return checked
        group = f"mg{next(self._query_ids)}"
        out = []
        for item in media:
            name = str(item["media"]).removeprefix("attach://")
            kind = item.get("type", "photo")
            one = {k: v for k, v in params.items() if k not in ("media", "caption")}
            if item.get("caption"):
                one["caption"] = item["caption"]
            stored = self._upload(kind, one, {kind: files[name]}, kind)
            self.messages[(params["chat_id"], stored["message_id"])]["media_group_id"] = group
            out.append({**stored, "media_group_id": group})
        return out

    def _editable(self, params: dict[str, Any]) -> dict[str, Any] | JSONResponse:
        """The bot's own message an edit names: a user's message cannot be edited (admin or not),
        an id with no message in the chat is not found."""
        key = (params.get("chat_id"), params.get("message_id"))
        message = self.messages.get(key)  # type: ignore[arg-type]
        if message is not None:
            return message
        if key in self.incoming:
            return self._error(400, "Bad Request: message can't be edited")
        return self._error(400, "Bad Request: message to edit not found")

    def _edited(self, message: dict[str, Any], changes: dict[str, Any], markup: Any) -> Any:
        """Apply an edit, or refuse it when it changes nothing (text or caption and the inline
        keyboard exactly as they are: the message keeps no other kind of markup)."""
        if all(message.get(k) == v for k, v in changes.items()) and _inline(message.get("reply_markup")) == _inline(markup):
            return self._error(400, "Bad Request: message is not modified: specified new message content and "
                                    "reply markup are exactly the same as a current content and reply markup of the message")
        message.update(changes)
        if _inline(markup):
            message["reply_markup"] = markup
        else:
            message.pop("reply_markup", None)
        self.edits.append({"chat_id": message["chat"]["id"], "message_id": message["message_id"], **changes,
                           "reply_markup": _inline(markup), "at": time.time()})
        return self.public(message)

    async def _m_editMessageText(self, params: dict[str, Any], files: Any) -> Any:
        message = self._editable(params)
        if isinstance(message, JSONResponse):
            return message
        if "text" not in message:
            return self._error(400, "Bad Request: there is no text in the message to edit")
        if not params.get("text") or len(str(params["text"])) > MAX_TEXT:
            return self._error(400, "Bad Request: MESSAGE_TOO_LONG" if params.get("text") else "Bad Request: text is empty")
        return self._edited(message, {"text": params.get("text")}, params.get("reply_markup"))

    async def _m_editMessageCaption(self, params: dict[str, Any], files: Any) -> Any:
        message = self._editable(params)
        if isinstance(message, JSONResponse):
            return message
        if "text" in message:
            return self._error(400, "Bad Request: there is no caption in the message to edit")
        refused = self._check_caption(params.get("caption"))
        if refused is not None:
            return refused
        return self._edited(message, {"caption": params.get("caption")}, params.get("reply_markup"))

    async def _m_editMessageReplyMarkup(self, params: dict[str, Any], files: Any) -> Any:
        message = self._editable(params)
        if isinstance(message, JSONResponse):
            return message
        return self._edited(message, {}, params.get("reply_markup"))

    async def _m_deleteMessage(self, params: dict[str, Any], files: Any) -> Any:
        """The documented limits: a message younger than 48 hours; the bot's own messages, a user's
        message in a private chat, anyone's in a group where the bot is an administrator."""
        key = (params.get("chat_id"), params.get("message_id"))
        message = self.messages.get(key) or self.incoming.get(key)  # type: ignore[arg-type]
        if message is None:
            return self._error(400, "Bad Request: message to delete not found")
        own = key in self.messages
        chat_type = message["chat"]["type"]
        allowed = own or chat_type == "private" or key[0] in self.admin_in
        if not allowed or time.time() - float(message["date"]) >= 48 * 3600:
            return self._error(400, "Bad Request: message can't be deleted")
        (self.messages if own else self.incoming).pop(key)  # type: ignore[arg-type]
        self.deleted.append(key)  # type: ignore[arg-type]
        return True


def _inline(markup: Any) -> Any:
    """An inline keyboard, the only reply markup a message keeps (a force_reply or a reply
    keyboard acts when it is sent and is not part of the message)."""
    return markup if isinstance(markup, dict) and markup.get("inline_keyboard") else None


# --- a whole bot on a fake server, for the integration tests -------------------------------------------

import contextlib  # noqa: E402
from collections.abc import AsyncIterator  # noqa: E402
from pathlib import Path  # noqa: E402

DEFINITIONS = Path(__file__).resolve().parents[1] / "integration" / "telegram_defs"


@dataclass
class TelegramEnv:
    fake: FakeTelegram
    url: str
    app: Any  # toolweave.app.App
    bot: Any  # toolweave.telegram.bot.TelegramBot
    worker: Any

    async def send(self, update: dict[str, Any]) -> None:
        """Hand one raw update to the bot, as the webhook route or the poller does."""
        await self.bot.process_raw(update)

    def replies(self, chat_id: int = 42) -> list[dict[str, Any]]:
        return self.fake.sent_to(chat_id)

    def texts(self, chat_id: int = 42) -> list[str]:
        return [m.get("text") or "" for m in self.fake.sent_to(chat_id)]

    async def run_of(self, account: str, index: int = 0) -> dict[str, Any]:
        page = await self.app.list_runs(account, limit=10)
        return page.items[index]


@contextlib.asynccontextmanager
async def telegram_env(home: Path, *, worker: bool = True, start_bot: bool = True, **overrides: Any) -> AsyncIterator[TelegramEnv]:
    """A real App (SQLite under ``home``, builtin tools, the test jobs), a real worker, the bot, and
    the fake Bot API server on loopback."""
    from tests.helpers.databases import seed_home_store
    from tests.helpers.loopback import serve_asgi
    from toolweave.app import App
    from toolweave.settings import Settings
    from toolweave.telegram.bot import TelegramBot

    fake = FakeTelegram()
    async with serve_asgi(fake.asgi()) as url:
        options: dict[str, Any] = {
            "home": home, "test_tools": False, "definitions": [DEFINITIONS], "telegram_token": fake.token,
            "telegram_api_url": url, "telegram_edit_interval_seconds": 0.0, "worker_slots": 4,
        }
        options.update(overrides)
        seed_home_store(options["home"], options.get("database_url"))
        app = App(Settings(**options))
        bot = TelegramBot(app, tracker_interval=0.05)
        run_worker = app.make_worker(4) if worker else None
        task = asyncio.create_task(run_worker.run()) if run_worker else None
        try:
            if start_bot:
                await bot.start()
            yield TelegramEnv(fake, url, app, bot, run_worker)
        finally:
            if run_worker is not None and task is not None:
                run_worker.stop()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(task, 10)
            await bot.stop()
            await app.aclose()
