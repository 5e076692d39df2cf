"""``toolweave run`` and ``toolweave runs ...``: submitting a run (inputs and submission in
``submitting.py``), following it (``following.py``), and listing, showing, cancelling, retrying
and watching runs."""

from __future__ import annotations

from pathlib import Path

import typer

from toolweave.cli import credits as credits_cli
from toolweave.cli.common import (
    ACCOUNT_HELP,
    JSON_HELP,
    LOCAL_ACCOUNT,
    VIEW_HELP,
    CliError,
    app_session,
    check_view,
    check_worker_policy,
    console,
    err_console,
    print_json,
    run_main,
)
from toolweave.cli.render import items_table, runs_table, show
from toolweave.cli.submitting import not_found, parse_pairs, retry_or_fork, submit
from toolweave.model.status import RunStatus

runs_app = typer.Typer(no_args_is_help=True, help="Runs of tools and jobs.")


def run_command(
    name: str = typer.Argument(..., help="The tool or job to run (its id)."),
    inputs: list[str] | None = typer.Option(
        None, "--input", "-i", help="An input as key=value (text, coerced to the input's type); key=@file reads a file."
    ),
    wait: bool = typer.Option(
        False, "--wait", help="Follow the run until it ends (or a step asks you); exit with its status."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print the final run as JSON (without --wait: the run id)."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Copy the output files into this folder (implies --wait)."),
    account: str = typer.Option(LOCAL_ACCOUNT, "--account", help=ACCOUNT_HELP),
    view: str = typer.Option("auto", "--view", metavar="MODE", help=VIEW_HELP),
    worker: str = typer.Option(
        "auto", "--worker", metavar="MODE", help="With --wait: auto (run a worker in this process when none is alive), always, never."
    ),
    paths: list[Path] | None = typer.Option(None, "--definitions", "-d", help="Extra definition files or folders."),
    version: str | None = typer.Option(
        None, "--version", help="The definition version to run (default: the latest; `toolweave jobs versions ID`)."
    ),
    batch: Path | None = typer.Option(
        None, "--batch", help="One run per row of a .csv (a header of input names) or .jsonl file; -i values apply to every row."
    ),
    batch_key: str | None = typer.Option(
        None, "--batch-id", help="With --batch: the batch's id, in each row's idempotency key (default: from the file)."
    ),
    estimate: bool = typer.Option(False, "--estimate", help="Print what the run would cost and submit nothing."),
    cost_ceiling: str | None = typer.Option(
        None, "--cost-ceiling", help="The most the run may cost: a step that would pass it is not started."
    ),
) -> None:
    """Run a tool or a job. Without --wait, submit it and print its id. With --batch, one run per row."""

    async def main() -> int:
        from toolweave.cli.following import finish, follow  # (asyncio: not for --help)

        shown = check_view(view, json_output)
        check_worker_policy(worker)
        ceiling = credits_cli.ceiling_option(cost_ceiling)
        if batch is not None:
            return await _run_batch(name, batch, list(inputs or []))
        async with app_session(paths) as tw:
            if estimate:
                await submit(tw, name, list(inputs or []), account, version, estimate_only="json" if json_output else "text")
                return 0
            run_id = await submit(tw, name, list(inputs or []), account, version, cost_ceiling=ceiling)
            if not (wait or output is not None):
                if json_output:
                    print_json({"jobRunId": run_id})
                else:
                    console.print(run_id, highlight=False)
                if not await tw.live_workers():
                    err_console.print(
                        "note: no worker is running, so the run waits; start one with `toolweave worker`, "
                        f"or follow it with a worker in this terminal: `toolweave runs watch {run_id} --worker auto`",
                        highlight=False, soft_wrap=True,
                    )
                return 0
            if shown != "quiet":
                err_console.print(f"run {run_id} submitted; Ctrl-C stops following (the run goes on)", highlight=False)
            run = await follow(tw, run_id, account, console, worker=worker, view=shown)
            return await finish(tw, run, account, json_output, output)

    async def _run_batch(target: str, path: Path, pairs: list[str]) -> int:
        from toolweave.cli import batch as batch_mod

        if batch_key is not None and not (1 <= len(batch_key) <= 100):
            raise CliError("--batch-id must be 1 to 100 characters")
        async with app_session(paths) as tw:
            shared = parse_pairs(pairs)
            return await batch_mod.run_batch(
                tw, target, path, account=account, version=version, key=batch_key, wait=wait, output=output,
                json_output=json_output, worker=worker, show=not json_output and view != "quiet", shared=shared,
            )

    run_main(main())


@runs_app.command("list")
def runs_list(
    status: list[str] | None = typer.Option(
        None, "--status", metavar="STATUS",
        help="Only runs with this status (repeatable): queued, running, completed, partially_completed, failed, cancelled."),
    job: str | None = typer.Option(None, "--job", help="Only runs of this tool or job id."),
    limit: int = typer.Option(20, "--limit", min=1, max=500, help="At most this many runs (newest first)."),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
    account: str = typer.Option(LOCAL_ACCOUNT, "--account", help=ACCOUNT_HELP),
) -> None:
    """List runs, newest first."""

    async def main() -> int:
        known = {s.value for s in RunStatus} | {"pending"}  # the former name of queued
        bad = [s for s in status or [] if s not in known]
        if bad:
            raise CliError(f"unknown status {', '.join(bad)} (one of: {', '.join(sorted(known))})")
        async with app_session() as tw:
            page = await tw.list_runs(account, status=list(status) if status else None, job_id=job, limit=limit)
        if json_output:
            print_json({"items": page.items, "nextCursor": page.next_cursor})
        else:
            console.print(runs_table(page.items, console.width))
        return 0

    run_main(main())


@runs_app.command("show")
def runs_show(
    run_id: str = typer.Argument(..., help="The run's id."),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
    account: str = typer.Option(LOCAL_ACCOUNT, "--account", help=ACCOUNT_HELP),
) -> None:
    """Show a run: steps, generations, outputs (with their files), cost, timings, errors."""
    from toolweave.app import NotFound

    async def main() -> int:
        async with app_session() as tw:
            try:
                run = await tw.get_run(run_id, account)
            except NotFound:
                raise not_found(run_id, account) from None
            if json_output:
                print_json(run)
            else:
                await show(tw, run, account, console)
        return 0

    run_main(main())


@runs_app.command("items")
def runs_items(
    run_id: str = typer.Argument(..., help="The run's id."),
    step_id: str = typer.Argument(..., help="The map step's id."),
    status: str | None = typer.Option(None, "--status", help="Only items in this status (e.g. failed)."),
    after: int = typer.Option(-1, "--after", help="Items after this index."),
    limit: int = typer.Option(50, "--limit", min=1, max=500, help="At most this many items."),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
    account: str = typer.Option(LOCAL_ACCOUNT, "--account", help=ACCOUNT_HELP),
) -> None:
    """List the items of a map step: each one's status, attempts, error, cost and time."""
    from toolweave.app import BadRequest, NotFound

    async def main() -> int:
        async with app_session() as tw:
            try:
                page = await tw.step_items(run_id, step_id, account, after=after, limit=limit, status=status)
            except NotFound:
                raise CliError(f"account {account!r} has no run {run_id!r} with a step {step_id!r} (another account's: "
                               "--account ID)") from None
            except BadRequest as exc:
                raise CliError(exc.message) from None
        if json_output:
            print_json(page)
        else:
            console.print(items_table(page))
        return 0

    run_main(main())


@runs_app.command("cancel")
def runs_cancel(
    run_id: str = typer.Argument(..., help="The run's id."),
    account: str = typer.Option(LOCAL_ACCOUNT, "--account", help=ACCOUNT_HELP),
) -> None:
    """Cancel a run: its pending steps are cancelled, running generations are cancelled at the backend."""
    from toolweave.app import NotFound

    async def main() -> int:
        async with app_session() as tw:
            try:
                before = (await tw.get_run(run_id, account))["status"]
                status = await tw.cancel(run_id, account)
            except NotFound:
                raise not_found(run_id, account) from None

        if RunStatus(before).terminal:
            console.print(f"run {run_id} had already ended: {before}", highlight=False)
        elif status == RunStatus.CANCELLED:
            console.print(f"run {run_id} cancelled", highlight=False)
        else:
            console.print(
                f"cancel requested for run {run_id} (now {status}); a worker finishes cancelling its running steps",
                highlight=False,
            )
        return 0

    run_main(main())


@runs_app.command("retry")
def runs_retry(
    run_id: str = typer.Argument(..., help="The run's id."),
    from_step: str | None = typer.Option(
        None, "--from", help="Run again as a new run from this step (it and what depends on it run again; the rest is reused)."
    ),
    inputs: list[str] | None = typer.Option(
        None, "--input", "-i", help="Change an input (key=value or key=@file) in a new run; steps not reading it are reused."
    ),
    wait: bool = typer.Option(
        False, "--wait", help="Follow the run until it ends (or a step asks you); exit with its status."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print the run as JSON (without --wait: its id)."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Copy the output files into this folder (implies --wait)."),
    account: str = typer.Option(LOCAL_ACCOUNT, "--account", help=ACCOUNT_HELP),
    view: str = typer.Option("auto", "--view", metavar="MODE", help=VIEW_HELP),
) -> None:
    """Run a run again. Alone: in place, from its failed steps (a failed, partially completed or
    cancelled run). With --from STEP and/or -i: as a new run of the same version (failed or completed
    runs alike) that reuses every step upstream of STEP and of the changed inputs."""

    async def main() -> int:
        from toolweave.cli.following import finish, follow  # (asyncio: not for --help)

        shown = check_view(view, json_output)
        async with app_session() as tw:
            forked = from_step is not None or bool(inputs)
            target, after = await retry_or_fork(tw, run_id, account, from_step, list(inputs or []))
            if not (wait or output is not None):
                if json_output:
                    print_json({"jobRunId": target, "forkedFromRunId": run_id if forked else None})
                elif forked:
                    console.print(target, highlight=False)
                    err_console.print(f"run {target} forked from {run_id}", highlight=False)
                else:
                    console.print(f"run {run_id} retried", highlight=False)
                return 0
            run = await follow(tw, target, account, console, worker="auto", view=shown, after=after)
            return await finish(tw, run, account, json_output, output)

    run_main(main())


@runs_app.command("watch")
def runs_watch(
    run_id: str = typer.Argument(..., help="The run's id."),
    account: str = typer.Option(LOCAL_ACCOUNT, "--account", help=ACCOUNT_HELP),
    view: str = typer.Option("lines", "--view", metavar="MODE", help=VIEW_HELP),
    worker: str = typer.Option(
        "never", "--worker", metavar="MODE", help="never (only watch), auto (run a worker here when none is alive), always."
    ),
) -> None:
    """Follow a run's events until it ends; exit with its status."""
    from toolweave.app import NotFound

    async def main() -> int:
        from toolweave.cli.following import finish, follow  # (asyncio: not for --help)

        shown = check_view(view, False)
        check_worker_policy(worker)
        async with app_session() as tw:
            try:
                await tw.get_run(run_id, account)
            except NotFound:
                raise not_found(run_id, account) from None
            if worker == "never" and not await tw.live_workers():
                err_console.print(
                    "note: no worker is running; an unfinished run waits until one starts (`toolweave worker`)",
                    highlight=False,
                )
            run = await follow(tw, run_id, account, console, worker=worker, view=shown)
            return await finish(tw, run, account, False, None)

    run_main(main())
