"""Money in the chat: asking before a run whose estimate is above the account's threshold, and
telling a user plainly why a run was refused (credits, limits).

A question is kept in ``kv("telegram.confirm", <token>)`` (with a TTL) with everything needed to
submit the run; the buttons carry only the token (``p:<token>`` runs it, ``n:<token>`` drops it).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from telegram.error import TelegramError

from toolweave.accounting import InsufficientCredits, OverLimit, Refused
from toolweave.model.credits import money_text

if TYPE_CHECKING:
    from toolweave.telegram.bot import TelegramBot

CONFIRM_NAMESPACE = "telegram.confirm"
CONFIRM_TTL = 15 * 60.0
RUN_IT = "p"
DROP_IT = "n"


def new_token() -> str:
    return secrets.token_urlsafe(12)


def confirm_keyboard(token: str) -> dict[str, Any]:
    return {"inline_keyboard": [[
        {"text": "▶ Run it", "callback_data": f"{RUN_IT}:{token}"},
        {"text": "✖ Don't", "callback_data": f"{DROP_IT}:{token}"},
    ]]}


def confirm_text(name: str, estimate: dict[str, Any], threshold: Decimal) -> str:
    lines = [f"{name} is estimated at {estimate['total']} credits (you are asked above {money_text(threshold)})."]
    if not estimate.get("known", True):
        lines.append("Part of its cost is only known after it runs.")
    if estimate.get("available") is not None:
        lines.append(f"You have {estimate['available']} available.")
    lines.append("Run it?")
    return "\n".join(lines)


def refusal_text(exc: Refused) -> str:
    """Why a run was refused, in plain words."""
    if isinstance(exc, InsufficientCredits):
        if exc.needed == 0:
            return (f"Not enough credits: this run's cost is only known after it runs and you have "
                    f"{money_text(exc.available)} available. Ask the operator for credits.")
        return (f"Not enough credits: this run is estimated at {money_text(exc.needed)} and you have "
                f"{money_text(exc.available)} available. Ask the operator for credits.")
    if isinstance(exc, OverLimit):
        if exc.limit == "runs_in_flight":
            return (f"You already have the most runs in progress you may ({exc.allowed}). Wait for one to finish, "
                    "or /cancel the latest.")
        return f"You have started the most runs you may in a minute ({exc.allowed}). Try again in {exc.retry_after} s."
    return exc.message


async def ask_first(
    bot: TelegramBot, target_id: str, inputs: Mapping[str, Any], account: str, chat_id: int, reply_to: int | None,
    submit: dict[str, Any],
) -> bool:
    """Ask "Run it?" when the run's estimate is above the account's threshold; True when asked.
    ``submit`` holds what else ``TelegramBot.submit`` needs to submit it once confirmed."""
    app = bot.app
    threshold = await app.credits.confirm_threshold(account)
    if threshold is None:
        return False
    estimate = await app.estimate(target_id, inputs, account_id=account)
    if Decimal(estimate["total"]) <= threshold:
        return False
    token = new_token()
    await app.kv_set(CONFIRM_NAMESPACE, token, {
        "targetId": target_id, "inputs": dict(inputs), "account": account, "chatId": chat_id, "replyTo": reply_to,
        **submit,
    }, ttl=CONFIRM_TTL)
    # through the outbox, like every message to a chat (retried through 429s and outages)
    await bot.send(chat_id, confirm_text(bot._name(target_id), estimate, threshold), reply_to=reply_to,
                   markup=confirm_keyboard(token), account=account)
    return True


async def on_answer(bot: TelegramBot, query: Any, action: str, token: str) -> None:
    """The answer to "Run it?": submit the run it asked about, or drop it (once: the question is
    forgotten at the first answer)."""
    from toolweave.telegram.buttons import answer
    from toolweave.telegram.commands import UserFacingError

    pending = await bot.app.kv_get(CONFIRM_NAMESPACE, token)
    account = await bot.account_of(query.from_user)
    if not isinstance(pending, dict) or pending.get("account") != account:
        await answer(query, "That question has expired.", show_alert=True)
        return
    await bot.app.kv_set(CONFIRM_NAMESPACE, token, None)
    with contextlib.suppress(TelegramError):
        await query.edit_message_reply_markup(None)
    if action == DROP_IT:
        await answer(query, "Not run.")
        return
    try:
        await bot.submit(pending["targetId"], pending["inputs"], account=account, chat_id=pending["chatId"],
                         user_id=pending["userId"], reply_to=pending.get("replyTo"),
                         idempotency_key=pending["idempotencyKey"], confirmed=True)
    except UserFacingError as exc:
        await answer(query, str(exc)[:200], show_alert=True)
        return
    await answer(query, "Running it.")
