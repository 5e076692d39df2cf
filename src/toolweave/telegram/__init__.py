"""The Telegram front end: a python-telegram-bot bot over the ``App`` facade.

- ``TelegramBot`` (bot.py): commands, inputs, submissions, buttons;
- ``StatusTracker`` (status.py): the status message of each run;
- ``TelegramChannel`` (channel.py): results through the notification outbox;
- ``TelegramWebhook`` (webhook.py): the route for webhook mode;
- ``run_polling`` (runner.py): ``toolweave telegram`` — long polling plus an embedded worker.
"""

from __future__ import annotations

from toolweave.telegram.channel import TelegramChannel, telegram_notification_rule

__all__ = ["TelegramChannel", "telegram_notification_rule"]
