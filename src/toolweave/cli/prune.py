"""``toolweave prune``: remove finished runs older than an age, and the artifacts nothing refers to any more."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from toolweave.cli.common import JSON_HELP, CliError, app_session, console, exit_with, print_json, run_main

_LABELS = (
    ("runs", "runs"), ("events", "events"), ("stepRuns", "step rows"), ("stepItems", "map items"),
    ("generations", "generations"), ("tasks", "tasks"), ("notifications", "notifications"), ("questions", "questions"),
    ("cacheEntries", "cache entries of those runs"),
)


def size_text(count: int) -> str:
    value = float(count)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{count} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} bytes"


def render_report(report: dict[str, Any]) -> Table:
    verb = "would go" if report["dryRun"] else "went"
    title = f"{'dry run: ' if report['dryRun'] else ''}what {verb} (finished before {report['cutoff']})"
    table = Table(title=title, title_justify="left", expand=False)
    table.add_column("what", justify="left")
    table.add_column("count", justify="right")
    for key, label in _LABELS:
        table.add_row(label, str(report["rows"].get(key, 0)))
    table.add_row("expired cache entries", str(report["expiredCacheEntries"]) if not report["dryRun"] else "—")
    table.add_row("accounts' artifact records", str(report["artifactRecords"]))
    table.add_row("artifact files", f"{report['files']} ({size_text(report['bytes'])})")
    if report["filesDeferred"]:
        table.add_row("files left for a later prune (stored in the last 15 min)", str(report["filesDeferred"]))
    if report.get("temporaryFiles"):
        table.add_row("temporary files a crash left", str(report["temporaryFiles"]))
    return table


def prune_command(
    older_than: str = typer.Option(
        ..., "--older-than", help="Remove runs that finished longer ago than this (30d, 12h, 90m, 45s, 2w; a bare number is days)."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Count what would go; remove nothing."),
    batch: int = typer.Option(100, "--batch", min=1, max=10000, help="Runs (whole trees) per transaction."),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Remove finished runs (completed, partially completed, failed, cancelled) that ended before
    an age, with their events, steps, items, generations, tasks and notifications, and the
    artifacts no remaining run, upload or cache entry refers to (their files too). Runs still
    going, and the finished runs of a tree with one still going, stay. Safe while workers run:
    it works in short transactions of BATCH runs."""
    from toolweave.retention import parse_age

    try:
        seconds = parse_age(older_than)
    except ValueError as exc:
        exit_with(CliError(f"--older-than: {exc}"))

    async def main() -> int:
        async with app_session() as tw:
            report = await tw.prune(seconds, dry_run=dry_run, batch=batch)
        if json_output:
            print_json(report)
            return 0
        console.print(render_report(report))
        if report["runsKept"]:
            console.print(
                f"{report['runsKept']} old run(s) kept: a run of their tree is still going or being worked on",
                highlight=False,
            )
        return 0

    run_main(main())
