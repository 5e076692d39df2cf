"""The command line: ``toolweave ...``. Talks to the ``App`` facade, never to the store.

Each command group has its own section below; add commands inside your section.
"""

from __future__ import annotations

import typer
from rich.console import Console

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Run generative-AI tools and durable jobs.")
tools_app = typer.Typer(no_args_is_help=True, help="Tool definitions.")
jobs_app = typer.Typer(no_args_is_help=True, help="Job definitions.")
runs_app = typer.Typer(no_args_is_help=True, help="Runs of tools and jobs.")
db_app = typer.Typer(no_args_is_help=True, help="The store.")
keys_app = typer.Typer(no_args_is_help=True, help="API keys.")
import_app = typer.Typer(no_args_is_help=True, help="Import workflows as tool definitions.")
sync_app = typer.Typer(no_args_is_help=True, help="Refresh tool definitions from a backend account.")
app.add_typer(tools_app, name="tools")
app.add_typer(jobs_app, name="jobs")
app.add_typer(runs_app, name="runs")
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
app.add_typer(import_app, name="import")
app.add_typer(sync_app, name="sync")

console = Console()
err_console = Console(stderr=True)


# --- definitions: validate, tools, jobs -------------------------------------------------------


# --- engine: run, runs, worker, demo, db ------------------------------------------------------


# --- comfy: import, sync ---------------------------------------------------------------------


# --- api: serve, keys ------------------------------------------------------------------------


# --- telegram --------------------------------------------------------------------------------


def main() -> None:
    app()


if __name__ == "__main__":
    main()
