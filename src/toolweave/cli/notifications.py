"""``toolweave notifications ...``: what the outbox gave up on (listed), and sending it again."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from toolweave.cli.common import EXIT_REFUSED, JSON_HELP, console, err_console, print_json, with_app

notifications_app = typer.Typer(no_args_is_help=True, help="Notifications: chat messages, results, callbacks.")


def _when(ts: Any) -> str:
    return datetime.fromtimestamp(float(ts), UTC).strftime("%Y-%m-%d %H:%M:%S") if ts else "—"


def _view(row: dict[str, Any]) -> dict[str, Any]:
    target = row.get("target") or {}
    return {
        "notificationId": row["notification_id"], "channel": row["channel"], "eventType": row["event_type"],
        "runId": row.get("run_id"), "accountId": row["account_id"],
        "to": target.get("chatId") if isinstance(target, dict) and "chatId" in target else (target or {}).get("url"),
        "attempts": row["attempts"], "lastError": row.get("last_error"), "queuedAt": _when(row.get("created_at")),
    }


@notifications_app.command("undelivered")
def undelivered(
    channel: str | None = typer.Option(None, "--channel", help="Only this channel's (telegram, callback)."),
    limit: int = typer.Option(100, "--limit", min=1, max=10000, help="At most this many, oldest first."),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """List the notifications delivery gave up on (retried for notification_horizon_seconds, or
    refused for good), oldest first; `toolweave notifications resend` sends them again."""
    rows = [_view(r) for r in with_app(lambda a: a.undelivered_notifications(channel=channel, limit=limit))]
    if json_output:
        print_json(rows)
        return
    if not rows:
        typer.echo("No undelivered notifications.")
        return
    table = Table(title=f"{len(rows)} undelivered notification{'s' if len(rows) != 1 else ''}")
    for column in ("id", "channel", "event", "to", "run", "attempts", "queued (UTC)", "last error"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(r["notificationId"], r["channel"], r["eventType"], str(r["to"] or ""), r["runId"] or "—",
                      str(r["attempts"]), r["queuedAt"], Text(str(r["lastError"] or ""), style="red"))
    console.print(table)


@notifications_app.command("resend")
def resend(
    ids: list[str] = typer.Argument(None, metavar="[ID]...", help="Notification ids (as `undelivered` lists them)."),
    every: bool = typer.Option(False, "--all", help="Every undelivered notification."),
    channel: str | None = typer.Option(None, "--channel", help="With --all: only this channel's."),
) -> None:
    """Queue undelivered notifications again (due now, retried for another horizon)."""
    wanted = [i.strip() for i in ids or [] if i.strip()]
    if bool(wanted) == every:
        err_console.print(Text("error: name the notifications to send again, or give --all", style="red"))
        raise typer.Exit(EXIT_REFUSED)

    async def _go(app: Any) -> tuple[list[str], list[str]]:
        names = wanted or [r["notification_id"] for r in await app.undelivered_notifications(channel=channel, limit=10000)]
        return names, await app.resend_notifications(names)

    names, done = with_app(_go)
    for name in names:
        if name not in done:
            err_console.print(Text(f"warning: {name} is not an undelivered notification; left as it is", style="yellow"))
    typer.echo(f"Queued {len(done)} notification{'s' if len(done) != 1 else ''} again; a running worker delivers "
               f"{'them' if len(done) != 1 else 'it'}.")
    if wanted and not done:
        raise typer.Exit(EXIT_REFUSED)
