"""The Telegram front end: a python-telegram-bot bot over the ``App`` facade.

- ``TelegramBot`` (bot.py): updates in (each handled once), routing, replies, submissions;
- ``asking.py``: a tool's or job's command, the inputs it asks for, files sent with it;
- ``own_commands.py``: /help, /status, /cancel;
- ``buttons.py``: Cancel, Rerun and "send again";
- ``StatusTracker`` (status.py): the status message of each run, edited as it moves;
- ``TelegramChannel`` (channel.py): every message out, through the notification outbox;
- ``parts.py``: what a delivery sends, within the Bot API's limits (pure);
- ``sending.py``: one part through the Bot API, another way when Telegram refuses it;
- ``notes.py``: what went another way, as records (the closing message's and a question's lines);
- ``rights.py``: what a chat does not let the bot send, remembered;
- ``resending.py``: a part sent again on request (📥), and the message that offered it edited;
- ``TelegramWebhook`` (webhook.py): the route for webhook mode;
- ``run_polling`` (runner.py): ``toolweave telegram`` — long polling plus an embedded worker.
"""

from __future__ import annotations

from toolweave.telegram.channel import TelegramChannel, telegram_notification_rule

__all__ = ["TelegramChannel", "telegram_notification_rule"]
