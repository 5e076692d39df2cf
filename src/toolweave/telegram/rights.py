"""What a chat does not let the bot send, remembered: a group whose permissions forbid photos (or
videos, or files) answers every such call 400 "not enough rights to send photos to the chat"; once
Telegram said so, later deliveries to the chat go straight to the form that works (a photo as a
document, a file kept for its 📥 button) instead of meeting the same refusal each time.

Kept under ``kv("telegram.rights", chat id)`` as ``{"refused": {"photos": <when>, …}}``, for a
day from the last refusal (``TTL``): an admin who allows photos again is heard within a day, at
once when a send of that kind works (a 📥 press tries every form whatever is remembered, and a
success forgets the refusal).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from toolweave.app import App

NAMESPACE = "telegram.rights"
TTL = 86400.0


class ChatRights:
    """What ``chat_id`` is known to refuse, read once per delivery and kept up to date as it goes.
    ``trusted=False`` (a resend the user asked for): every form is tried, and what happens is
    remembered all the same."""

    def __init__(self, app: App, chat_id: Any, refused: dict[str, float], *, trusted: bool = True) -> None:
        self.app = app
        self.chat_id = chat_id
        self.refused = dict(refused)
        self.trusted = trusted

    @classmethod
    async def of(cls, app: App, chat_id: Any, *, trusted: bool = True) -> ChatRights:
        found = await app.kv_get(NAMESPACE, str(chat_id))
        refused = found.get("refused") if isinstance(found, dict) else None
        return cls(app, chat_id, {str(k): float(v) for k, v in (refused or {}).items()}
                   if isinstance(refused, dict) else {}, trusted=trusted)

    def refuses(self, kind: str) -> bool:
        """Whether a ``kind`` ("photos", "videos", "documents") is not worth trying here."""
        return self.trusted and kind in self.refused

    async def was_refused(self, kind: str) -> None:
        self.refused[kind] = time.time()
        await self._save()

    async def worked(self, kind: str) -> None:
        if kind in self.refused:
            del self.refused[kind]
            await self._save()

    async def _save(self) -> None:
        await self.app.kv_set(NAMESPACE, str(self.chat_id), {"refused": self.refused} if self.refused else None,
                              ttl=TTL if self.refused else None)


class NoRights(ChatRights):
    """Nothing remembered and nothing recorded (a caller without a chat to remember for)."""

    def __init__(self) -> None:
        pass

    def refuses(self, kind: str) -> bool:
        return False

    async def was_refused(self, kind: str) -> None:
        return None

    async def worked(self, kind: str) -> None:
        return None
