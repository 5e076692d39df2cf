"""``toolweave keys ...``: API keys (created, listed by prefix, revoked)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from toolweave.cli.common import EXIT_REFUSED, JSON_HELP, console, count, err_console, print_json, with_app

keys_app = typer.Typer(no_args_is_help=True, help="API keys.")


@keys_app.command("create")
def keys_create(
    account: str = typer.Option(..., "--account", help="The account the key acts for (created when new)."),
    name: str = typer.Option("", "--name", help="A label to recognise the key by."),
) -> None:
    """Create an API key; it is printed once and only its hash is kept."""
    account = account.strip()
    if not account or len(account) > 64 or account == "admin":
        err_console.print(Text("error: give an account name of 1 to 64 characters (not 'admin')", style="red"))
        raise typer.Exit(EXIT_REFUSED)
    key_id, secret = with_app(lambda a: a.create_key(account, name))
    err_console.print(Text(f"Created key {key_id} (prefix {secret[:10]}) for account {account!r}. "
                            "Keep it now: it is not shown again.", style="green"), soft_wrap=True)
    typer.echo(secret)


@keys_app.command("list")
def keys_list(
    account: str | None = typer.Option(None, "--account", help="Only this account's keys."),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """List API keys by prefix (the keys themselves are never stored)."""
    keys = with_app(lambda a: a.list_keys(account))
    if json_output:
        print_json(keys)
        return
    console.print(keys_table(keys, console.width))


def keys_table(keys: list[dict[str, Any]], width: int) -> Table:
    """Keys, one a line. Prefixes (what `keys revoke` takes) and statuses are never cut; account
    and name fold. Below 120 columns (a pipe is 80) the key id is left out and times are short
    (local month, day and time); `--json` has everything."""
    wide = width >= 120
    stamp = "%Y-%m-%d %H:%M" if wide else "%m-%d %H:%M"

    def when(ts: float | None) -> str:
        return datetime.fromtimestamp(ts).strftime(stamp) if ts else "—"

    table = Table(title=count(len(keys), "API key"), title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                  show_edge=False)
    table.add_column("prefix", no_wrap=True)
    if wide:
        table.add_column("key id", no_wrap=True)
    table.add_column("account", overflow="fold")
    table.add_column("name", overflow="fold")
    for column in ("created", "last used", "status"):
        table.add_column(column, no_wrap=True)
    for k in keys:
        status = Text("revoked", style="red") if k["revokedAt"] else Text("active", style="green")
        table.add_row(Text(k["prefix"]), *([Text(k["keyId"])] if wide else []), Text(k["accountId"]),
                      Text(k["name"] or ""), Text(when(k["createdAt"])), Text(when(k["lastUsedAt"])), status)
    return table


@keys_app.command("revoke")
def keys_revoke(key: str = typer.Argument(..., help="The key id or its prefix (as `keys list` shows it).")) -> None:
    """Revoke an API key: it stops working at once."""
    key = key.strip().removesuffix("…")
    if len(key) < 6:
        err_console.print(Text("error: give the key id or a prefix of at least 6 characters", style="red"))
        raise typer.Exit(EXIT_REFUSED)
    count = with_app(lambda a: a.revoke_key(key))
    if not count:
        err_console.print(Text(f"error: no active key matches {key!r}", style="red"))
        raise typer.Exit(EXIT_REFUSED)
    typer.echo(f"Revoked {count} key{'s' if count != 1 else ''}.")
