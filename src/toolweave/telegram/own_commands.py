"""The bot's own commands: /start and /help, /status, /cancel (``TelegramBot`` routes them here;
every other command runs a tool or job, see ``asking.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from telegram import Message, User

from toolweave.telegram.asking import PENDING_NAMESPACE
from toolweave.telegram.commands import help_pages

if TYPE_CHECKING:
    from toolweave.telegram.bot import TelegramBot


async def help_command(bot: TelegramBot, message: Message, rest: str = "") -> None:
    """/start and /help [page]: the commands, a page at a time."""
    pages = help_pages(bot.commands().values())
    try:
        number = int(rest.split()[0]) if rest.split() else 1
    except ValueError:
        number = 1
    await bot.reply(message, pages[min(max(number, 1), len(pages)) - 1])


async def chat_runs(bot: TelegramBot, account: str, chat_id: int, *, status: list[str] | None = None,
                    want: int = 5) -> list[dict[str, Any]]:
    """The account's newest runs started from ``chat_id`` (in a private chat, all of them; in a
    group, only that group's: a person's private runs are not shown to the group)."""
    if chat_id > 0:
        return list((await bot.app.list_runs(account, status=status, limit=want)).items)
    page = await bot.app.list_runs(account, status=status, limit=50)
    found: list[dict[str, Any]] = []
    for item in page.items:
        detail = await bot.app.get_run(item["jobRunId"], account)
        origin = detail.get("origin") or {}
        if origin.get("platform") == "telegram" and origin.get("chatId") == chat_id:
            found.append(item)
            if len(found) >= want:
                break
    return found


async def status_command(bot: TelegramBot, message: Message, user: User) -> None:
    """/status: the user's newest runs from this chat."""
    account = await bot.account_of(user)
    items = await chat_runs(bot, account, message.chat_id)
    if not items:
        where = "" if message.chat_id > 0 else " in this chat"
        await bot.reply(message, f"You have no runs{where} yet. Send /help to see what I can do.")
        return
    lines = ["Your recent runs:" if message.chat_id > 0 else "Your recent runs in this chat:"]
    for item in items:
        when = str(item.get("createdAt") or "")[:16].replace("T", " ")
        lines.append(f"• {bot._name(item['jobDefinitionId'])} — {item['status']} ({when} UTC, {item['jobRunId']})")
    await bot.reply(message, "\n".join(lines))


async def cancel_latest(bot: TelegramBot, message: Message, user: User) -> None:
    """/cancel: stop waiting for an input, or else cancel the user's latest run in progress here."""
    key = f"{message.chat_id}:{user.id}"
    if await bot.app.kv_get(PENDING_NAMESPACE, key):
        await bot.app.kv_set(PENDING_NAMESPACE, key, None)
        await bot.reply(message, "OK, I stopped waiting for that input.")
        return
    account = await bot.account_of(user)
    items = await chat_runs(bot, account, message.chat_id, status=["queued", "running", "waiting_input"], want=1)
    if not items:
        await bot.reply(message, "You have no run in progress" + (" in this chat." if message.chat_id < 0 else "."))
        return
    run_id = items[0]["jobRunId"]
    await bot.app.cancel(run_id, account)
    await bot.reply(message, f"Cancelling {bot._name(items[0]['jobDefinitionId'])} ({run_id}).")
