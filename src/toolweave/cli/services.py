"""``toolweave services list``: the services known here (the core ones, the http providers, the
configured instances and the installed plugins), whether each is configured, and why not."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from toolweave.cli.common import (
    JSON_HELP,
    PATHS_OPTION_HELP,
    app_session,
    console,
    count,
    print_json,
    run_main,
)

services_app = typer.Typer(no_args_is_help=True, help="The services tools run on.")


@services_app.command("list")
def services_list(
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
    paths: list[Path] | None = typer.Option(None, "--definitions", "-d", help=PATHS_OPTION_HELP),
) -> None:
    """List the services: kind, origin (builtin, settings, a plugin), configured or why not, and how
    many registered tools use each."""

    async def main() -> int:
        async with app_session(paths) as tw:
            rows = tw.list_services()
        if json_output:
            print_json(rows)
            return 0
        table = Table(title=count(len(rows), "service"))
        for column in ("name", "kind", "origin", "configured", "tools"):
            table.add_column(column, no_wrap=True)
        for row in rows:
            state = Text("yes", style="green") if row["configured"] else Text("no", style="red")
            table.add_row(Text(row["name"]), Text(row["kind"]), Text(row["origin"]), state, Text(str(row["tools"])))
        console.print(table)
        for row in rows:
            detail = row["problem"] if not row["configured"] else row.get("baseUrl")
            if detail:
                console.print(Text(f"{row['name']}: {detail}"))
        return 0

    run_main(main())
