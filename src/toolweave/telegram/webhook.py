"""Webhook mode: a route the HTTP server mounts instead of running ``toolweave telegram``.

    from toolweave.telegram.webhook import TelegramWebhook
    hook = TelegramWebhook(app)                      # needs settings.telegram_token
    api.include_router(hook.router)                  # POST /telegram/webhook
    # in the server's lifespan: await hook.start() at start-up, await hook.stop() at shutdown

Telegram is told about the route with ``toolweave telegram --set-webhook https://host/telegram/webhook``
(or ``await hook.set_webhook(url)``); it then sends every update with the header
``X-Telegram-Bot-Api-Secret-Token``, which must equal ``settings.telegram_webhook_secret``
(compared in constant time; a missing or wrong header is answered 403 and nothing is processed).
A body that is not JSON is answered 400. Anything else is answered 200 once it was handled — its
replies are in the outbox and its ``update_id`` recorded, so the same update again is answered 200
and changes nothing —, or 500 when its replies could not be queued (the store is unreachable), so
that Telegram sends it again.
"""

from __future__ import annotations

import json
import logging
import secrets
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from toolweave.telegram.bot import _ALLOWED_UPDATES, TelegramBot

if TYPE_CHECKING:
    from toolweave.app import App

log = logging.getLogger("toolweave.telegram")

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
WEBHOOK_PATH = "/telegram/webhook"


class TelegramWebhook:
    def __init__(self, app: App, *, path: str = WEBHOOK_PATH, bot: TelegramBot | None = None) -> None:
        if not app.settings.telegram_webhook_secret:
            raise ValueError("webhook mode needs settings.telegram_webhook_secret (TOOLWEAVE_TELEGRAM_WEBHOOK_SECRET)")
        self.app = app
        self.bot = bot or TelegramBot(app)
        self.path = path
        self.router = APIRouter()
        self.router.add_api_route(path, self.handle, methods=["POST"], include_in_schema=False)

    async def start(self) -> None:
        await self.bot.start()

    async def stop(self) -> None:
        await self.bot.stop()

    async def set_webhook(self, url: str) -> None:
        """Tell Telegram to send updates to ``url`` (the public URL of this route) with the secret."""
        await self.bot.start(set_commands=True)
        await self.bot.bot.set_webhook(
            url, secret_token=self.app.settings.telegram_webhook_secret, allowed_updates=_ALLOWED_UPDATES
        )

    async def handle(self, request: Request) -> JSONResponse:
        expected = self.app.settings.telegram_webhook_secret or ""
        given = request.headers.get(SECRET_HEADER, "")
        if not expected or not secrets.compare_digest(given.encode(), expected.encode()):
            return JSONResponse({"ok": False, "error": "wrong or missing secret token"}, status_code=403)
        body = await request.body()
        try:
            data: Any = json.loads(body)
        except ValueError:
            return JSONResponse({"ok": False, "error": "the body is not JSON"}, status_code=400)
        try:
            handled = await self.bot.process_raw(data)
        except Exception as exc:
            log.error("a webhook update could not be handled (%s: %s); Telegram will send it again",
                      type(exc).__name__, exc)
            return JSONResponse({"ok": False, "error": "the update could not be handled; send it again"},
                                status_code=500)
        return JSONResponse({"ok": True, "handled": handled})


def telegram_router(app: App, *, path: str = WEBHOOK_PATH) -> APIRouter:
    """The webhook route alone (the bot starts on the first update; prefer ``TelegramWebhook``
    with ``start``/``stop`` in the server's lifespan, which also resumes status messages)."""
    return TelegramWebhook(app, path=path).router
