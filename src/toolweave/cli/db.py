"""``toolweave db ...``: the store's schema."""

from __future__ import annotations

import typer

from toolweave.cli.common import app_session, console, run_main, safe_url

db_app = typer.Typer(no_args_is_help=True, help="The store.")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the store to the latest schema; print its revision."""

    async def main() -> int:
        async with app_session() as tw:
            console.print(f"store {safe_url(tw.settings.db_url)} is at revision {tw.db_revision()}", highlight=False)
        return 0

    run_main(main())
