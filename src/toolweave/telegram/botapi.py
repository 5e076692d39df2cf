"""A very small Bot API client over httpx, for deliveries from workers (no bot process needed).

Errors leave as ``BotAPIError`` with the HTTP status, Telegram's description and ``retry_after``;
messages never contain the URL, so the token cannot leak into a stored error or a log line.
Also here: ``redact_token_in_logs``, which keeps the token out of every log record of the process
(httpx logs request URLs, which hold the token).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import Any

import httpx

log = logging.getLogger("toolweave.telegram")

DEADLINE = 4
"""A call's whole exchange may take this many of its timeouts (an upload of 50 MB takes a while)."""

CHAT_REFUSALS = (
    "chat not found", "upgraded to a supergroup", "have no rights to send a message", "chat_write_forbidden",
    "peer_id_invalid", "chat_restricted", "topic_closed", "message thread not found", "bot was kicked",
    "user is deactivated", "bot was blocked",
)
"""Telegram's words (lower case) for a chat that takes no message from the bot at all, whatever its
form: sending the same content another way cannot help, only a later attempt can."""


RIGHTS = "not enough rights to send "


class BotAPIError(Exception):
    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None,
                 description: str = "", sent_maybe: bool = False, migrate_to: int | None = None) -> None:
        super().__init__(message)
        self.migrate_to = migrate_to
        """The chat's new id when Telegram says the group was upgraded to a supergroup."""
        self.status = status
        self.retry_after = retry_after
        self.description = description
        """Telegram's own words (``Bad Request: PHOTO_INVALID_DIMENSIONS``)."""
        self.sent_maybe = sent_maybe
        """The request may have reached Telegram and been carried out (the connection broke after
        it was sent): sending again may repeat it."""

    @property
    def retryable(self) -> bool:
        """429, 5xx and network trouble (status None) are worth retrying; other 4xx are not."""
        return self.status is None or self.status == 429 or self.status >= 500

    @property
    def chat_refused(self) -> bool:
        """Telegram takes nothing for this chat (it does not know it, the bot was blocked or
        removed, the group moved): not this request's fault, so no other form of it can pass."""
        if self.status == 403 or self.migrate_to is not None:
            return True
        words = self.description.lower()
        return self.status == 400 and any(w in words for w in CHAT_REFUSALS)

    @property
    def lacks_right(self) -> str | None:
        """What the bot may not send in this chat, when Telegram says so ("photos", "documents",
        "videos": 400 "not enough rights to send photos to the chat"): a group's permissions, not
        this file's fault, so another kind of message may pass and a later one, once an admin
        allows it, will."""
        words = self.description.lower()
        if self.status != 400 or RIGHTS not in words:
            return None
        return words.split(RIGHTS, 1)[1].removesuffix(" to the chat").strip() or "media"

    @property
    def refused(self) -> bool:
        """Telegram refused this request as it is (400, 413): another form of it may pass."""
        return self.status in (400, 413) and not self.chat_refused


class BotAPI:
    def __init__(self, http: httpx.AsyncClient, token: str, base_url: str = "https://api.telegram.org",
                 timeout: float = 60.0) -> None:
        self._http = http
        self._token = token
        self._base = base_url.rstrip("/")
        self._timeout = timeout

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "<token>") if self._token else text

    async def call(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        files: Mapping[str, tuple[str, bytes, str]] | None = None,
    ) -> Any:
        """Call a Bot API method; returns ``result``. Nested values are sent as JSON text."""
        url = f"{self._base}/bot{self._token}/{method}"
        try:
            # httpx's timeout starts again with every byte: a whole call gets DEADLINE of them, so
            # an answer that trickles in (a broken proxy) cannot hold the sender for ever
            async with asyncio.timeout(self._timeout * DEADLINE):
                if files:
                    data = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (params or {}).items() if v is not None}
                    response = await self._http.post(url, data=data, files=dict(files), timeout=self._timeout)
                else:
                    body = {k: v for k, v in (params or {}).items() if v is not None}
                    response = await self._http.post(url, json=body, timeout=self._timeout)
        except TimeoutError:
            raise BotAPIError(f"{method}: no whole answer within {self._timeout * DEADLINE:g} s",
                              sent_maybe=True) from None
        except httpx.HTTPError as exc:
            # a refused or timed-out connection never carried the request; anything later might have
            unsent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
            raise BotAPIError(f"{method}: network error ({type(exc).__name__}: {self._scrub(str(exc))})",
                              sent_maybe=not unsent) from None
        try:
            payload = response.json()
        except ValueError:
            payload = {}
        if not isinstance(payload, dict):
            payload = {}
        if response.status_code == 200 and payload.get("ok") is True:
            return payload.get("result")
        status = response.status_code if response.status_code != 200 else int(payload.get("error_code") or 500)
        description = self._scrub(str(payload.get("description") or response.reason_phrase or "no description"))
        parameters = payload.get("parameters") if isinstance(payload.get("parameters"), dict) else {}
        retry_after = parameters.get("retry_after") if parameters else None
        try:
            retry = float(retry_after) if retry_after is not None else None
        except (TypeError, ValueError):
            retry = None
        migrate = parameters.get("migrate_to_chat_id") if parameters else None
        raise BotAPIError(f"{method}: HTTP {status}: {description}", status=status, retry_after=retry,
                          description=description, migrate_to=migrate if isinstance(migrate, int) else None)


class _Redact(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.tokens: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.tokens:
            return True
        try:
            message = record.getMessage()
        except Exception:
            return True
        hits = [t for t in self.tokens if t in message]
        if hits:
            for token in hits:
                message = message.replace(token, "<token>")
            record.msg, record.args = message, None
        if record.exc_info and not record.exc_text:
            text = logging.Formatter().formatException(record.exc_info)
            if any(t in text for t in self.tokens):
                for token in self.tokens:
                    text = text.replace(token, "<token>")
                record.exc_text = text
        return True


_REDACT_ATTR = "_toolweave_token_redaction"


def redact_token_in_logs(token: str) -> None:
    """Replace ``token`` by ``<token>`` in every log record created from now on, whatever the
    logger or handler (httpx logs request URLs, python-telegram-bot logs its base URL)."""
    if not token:
        return
    factory = logging.getLogRecordFactory()
    redact: _Redact | None = getattr(factory, _REDACT_ATTR, None)
    if redact is None:
        redact = _Redact()
        previous = factory

        def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            assert redact is not None
            redact.filter(record)
            return record

        setattr(make_record, _REDACT_ATTR, redact)
        logging.setLogRecordFactory(make_record)
    redact.tokens.add(token)
