"""``toolweave telegram``: the Telegram bot by long polling (with an embedded worker), or the
registration and removal of its webhook."""

from __future__ import annotations

import logging

import typer
from rich.text import Text

from toolweave.cli.common import EXIT_REFUSED, CliError, app_from, err_console, exit_with, load_settings


def telegram_command(
    slots: int | None = typer.Option(None, "--slots", min=1, show_default=False, help="Slots of the embedded worker (default: the worker_slots setting)."),
    no_worker: bool = typer.Option(
        False, "--no-worker", help="Run no embedded worker: `toolweave worker` or `serve` processes do the work."
    ),
    set_webhook: str | None = typer.Option(
        None, "--set-webhook", metavar="URL",
        help="Register URL (the public address of the server's /telegram/webhook route) with Telegram, then exit.",
    ),
    delete_webhook: bool = typer.Option(False, "--delete-webhook", help="Unregister the webhook, then exit."),
    log_level: str = typer.Option("info", "--log-level", metavar="LEVEL", help="debug, info, warning or error (any case)."),
) -> None:
    """Run the Telegram bot by long polling, with an embedded worker (one process does everything)."""
    import asyncio  # (in the command, not with the module: not for --help)

    settings = load_settings()
    if not settings.telegram_token:
        err_console.print(Text(
            "error: no bot token: set TOOLWEAVE_TELEGRAM_TOKEN (or telegram_token under [toolweave] in "
            "toolweave.toml) to the token @BotFather gave you", style="red"), soft_wrap=True)
        raise typer.Exit(EXIT_REFUSED)
    level = getattr(logging, log_level.upper(), None)
    if not isinstance(level, int):
        err_console.print(Text(f"error: --log-level must be DEBUG, INFO, WARNING or ERROR, not {log_level!r}", style="red"))
        raise typer.Exit(EXIT_REFUSED)
    from toolweave.telegram.botapi import redact_token_in_logs

    redact_token_in_logs(settings.telegram_token)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if level > logging.DEBUG:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per long poll otherwise

    async def _main() -> int:
        from telegram.error import InvalidToken, TelegramError

        from toolweave.telegram.runner import main as run_bot
        from toolweave.telegram.webhook import TelegramWebhook

        tw_app = app_from(settings)
        for problem in tw_app.definition_problems:
            err_console.print(Text(f"warning: {problem}", style="yellow"), soft_wrap=True)
        try:
            if set_webhook or delete_webhook:
                if delete_webhook:
                    from toolweave.telegram.bot import TelegramBot

                    bot = TelegramBot(tw_app)
                    await bot.start()
                    await bot.bot.delete_webhook()
                    await bot.stop()
                    typer.echo("The webhook is removed; `toolweave telegram` polls for updates again.")
                    return 0
                if not str(set_webhook).startswith("https://"):
                    err_console.print(Text("error: Telegram only sends webhooks to https:// URLs", style="red"))
                    return 2
                hook = TelegramWebhook(tw_app)
                await hook.set_webhook(str(set_webhook))
                await hook.stop()
                typer.echo(f"Telegram now sends updates to {set_webhook} (with the secret token header).")
                return 0
            err_console.print(Text(
                f"toolweave telegram: polling for updates ({'no embedded worker' if no_worker else 'with an embedded worker'}); "
                f"data in {settings.home}; Ctrl-C stops it"), soft_wrap=True)
            await run_bot(tw_app, slots=slots or None, worker=not no_worker)
            return 0
        except ValueError as exc:  # e.g. webhook mode without a secret
            err_console.print(Text(f"error: {exc}", style="red"), soft_wrap=True)
            return 2
        except InvalidToken:
            err_console.print(Text("error: Telegram rejected the bot token", style="red"))
            return 2
        except TelegramError as exc:
            err_console.print(Text(f"error: Telegram: {exc}", style="red"), soft_wrap=True)
            return 1
        finally:
            await tw_app.aclose()

    try:
        code = asyncio.run(_main())
    except CliError as exc:
        exit_with(exc)
    except KeyboardInterrupt:
        code = 0
    raise typer.Exit(code)
