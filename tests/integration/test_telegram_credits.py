"""Money in the Telegram bot (fake Bot API on loopback, a real App and worker): "Run it?" above
the account's threshold, and plain messages when credits or limits refuse a run."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from tests.fakes.telegram_api import DEFINITIONS, TelegramEnv, telegram_env
from tests.integration.test_telegram_bot import _buttons, runs, status_messages

PRICED = {
    "toolId": "test.instant", "service": "builtin", "version": "2",
    "inputSchema": {"value": {"type": "integer", "default": 0}},
    "outputSchema": {"value": {"type": "integer"}, "note": {"type": "text"}},
    "costingModel": {"rateSource": "static", "staticCost": {"amount": "1.25"}},
    "visibility": "hidden",
}
PAY = {
    "jobId": "pay", "displayName": "Pay", "commandName": "pay",
    "inputSchema": {"value": {"type": "integer", "default": 1}},
    "outputSchema": {"value": {"type": "integer", "sourceStepId": "s", "sourceOutputName": "value"}},
    "steps": [{"stepId": "s", "toolId": "test.instant", "inputMappings": [{"sourceJobInput": "value", "targetInputName": "value"}]}],
}


def definitions(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "priced"
    folder.mkdir(exist_ok=True)
    (folder / "priced.yaml").write_text(yaml.safe_dump(PRICED))
    (folder / "pay.yaml").write_text(yaml.safe_dump(PAY))
    return [DEFINITIONS, folder]


def questions(env: TelegramEnv) -> list[dict[str, Any]]:
    return [m for m in env.replies(42) if (m.get("text") or "").endswith("Run it?")]


async def test_a_run_above_the_threshold_is_asked_about_first(tmp_path: Path) -> None:
    async with telegram_env(tmp_path, worker=False, test_tools=True, definitions=definitions(tmp_path),
                            credits_confirm_above=Decimal("0.5")) as env:
        fake = env.fake
        await env.send(fake.message_update("/pay value=3"))
        (question,) = await fake.wait_for(lambda: questions(env))
        assert "Pay is estimated at 1.25 credits (you are asked above 0.50)" in question["text"]
        assert await runs(env) == []  # nothing runs until the user says so
        run_it, drop_it = _buttons(question)
        assert run_it.startswith("p:") and drop_it.startswith("n:")
        await env.send(fake.callback_update(run_it, user_id=7, message=question))  # not theirs
        await fake.wait_for(lambda: [c for c in fake.calls_of("answerCallbackQuery")
                                     if c.params.get("text") == "That question has expired."])
        await env.send(fake.callback_update(run_it, message=question))
        await fake.wait_for(lambda: status_messages(env))
        (made,) = await runs(env)
        assert (await env.app.get_run(made["jobRunId"]))["jobInputs"] == {"value": 3}
        await env.send(fake.callback_update(run_it, message=question))  # pressed twice: runs once
        await fake.wait_for(lambda: len([c for c in fake.calls_of("answerCallbackQuery")
                                         if c.params.get("text") == "That question has expired."]) == 2)
        assert len(await runs(env)) == 1
        # "Don't" drops it
        await env.send(fake.message_update("/pay value=4"))
        second = await fake.wait_for(lambda: len(questions(env)) == 2 and questions(env)[1])
        await env.send(fake.callback_update(_buttons(second)[1], message=second))
        await fake.wait_for(lambda: [c for c in fake.calls_of("answerCallbackQuery") if c.params.get("text") == "Not run."])
        assert len(await runs(env)) == 1
        # an account's own threshold wins over the setting
        await env.app.credits.set_policy("telegram-42", confirm_above=Decimal("5"))
        await env.send(fake.message_update("/pay value=5"))
        await fake.wait_for(lambda: len(status_messages(env)) == 2)
        assert len(questions(env)) == 2


async def test_credits_and_limits_refusals_are_plain(tmp_path: Path) -> None:
    async with telegram_env(tmp_path, worker=False, test_tools=True, definitions=definitions(tmp_path),
                            account_submits_per_minute=2) as env:
        fake = env.fake
        await env.app.credits.grant("telegram-42", Decimal("1"))
        await env.send(fake.message_update("/pay"))
        (text,) = await fake.wait_for(lambda: [t for t in env.texts() if t.startswith("Not enough credits")])
        assert text == ("Not enough credits: this run is estimated at 1.25 and you have 1.00 available. "
                        "Ask the operator for credits.")
        assert await runs(env) == []
        for value in (1, 2):
            await env.send(fake.message_update(f"/pay value={value}", user_id=7))
        await fake.wait_for(lambda: len(status_messages(env, 7)) == 2)
        await env.send(fake.message_update("/pay value=3", user_id=7))
        (limited,) = await fake.wait_for(lambda: [t for t in env.texts(7) if t.startswith("You have started the most")])
        assert "(2)" in limited and "Try again in" in limited
