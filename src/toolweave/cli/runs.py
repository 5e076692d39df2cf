"""``toolweave run`` and ``toolweave runs ...``: submitting a run from ``-i key=value`` options,
following it (events or a live table, with a worker in this process when none is alive), and
listing, showing, cancelling, retrying and watching runs."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.live import Live

from toolweave.cli import credits as credits_cli
from toolweave.cli.common import (
    ACCOUNT_HELP,
    JSON_HELP,
    LOCAL_ACCOUNT,
    VIEW_HELP,
    CliError,
    Interrupted,
    app_session,
    check_view,
    check_worker_policy,
    console,
    err_console,
    exit_code,
    print_json,
    run_main,
)
from toolweave.cli.render import (
    event_line,
    items_table,
    output_files,
    render_progress,
    runs_table,
    show,
    summary,
)
from toolweave.model.status import RunStatus

if TYPE_CHECKING:
    from toolweave.app import App
    from toolweave.model.definitions import JobDefinition

POLL_SECONDS = 0.2
"""How often a followed run is read once it has been going a while."""
FIRST_POLL_SECONDS = 0.005
"""The first look again: a builtin tool's run ends within milliseconds (the wait doubles up to ``POLL_SECONDS``)."""
LIVENESS_CHECK_SECONDS = 5.0

runs_app = typer.Typer(no_args_is_help=True, help="Runs of tools and jobs.")


# --- inputs ----------------------------------------------------------------------------------------


def parse_pairs(pairs: list[str]) -> dict[str, str]:
    """``-i key=value`` options → a mapping; every malformed one is reported at once."""
    out: dict[str, str] = {}
    problems: list[str] = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(f"-i {pair!r}: write it as key=value (or key=@file)")
        elif key in out:
            problems.append(f"-i {key}: given twice")
        else:
            out[key] = value
    if problems:
        raise CliError("the inputs are malformed", details=problems)
    return out


def read_at_files(job: JobDefinition, raw: dict[str, str]) -> tuple[dict[str, Any], bool]:
    """Resolve ``key=@file`` values: a media input of ``job`` gets the local file, any other input
    its text.

    Returns the inputs and whether local paths were given (``allow_local_paths``).
    """
    out, paths, problems = at_files(job, raw)
    if problems:
        raise CliError("some inputs cannot be read", details=problems)
    return out, paths


def at_files(
    job: JobDefinition, raw: Mapping[str, Any], folder: Path | None = None
) -> tuple[dict[str, Any], bool, list[str]]:
    """``read_at_files`` without raising: (inputs, whether local paths were given, problems). A
    relative ``@path`` is taken from ``folder`` when given (a batch file's), else from here."""
    media = {p.name for p in job.input_schema if p.type.is_media}
    known = [p.name for p in job.input_schema]
    out: dict[str, Any] = {}
    problems: list[str] = []
    paths = False
    for key, value in raw.items():
        if not (isinstance(value, str) and value.startswith("@")):
            out[key] = value
            continue
        if key not in known:  # not read: the input check names it with the others ("is not an input")
            out[key] = value
            continue
        path = Path(value[1:]).expanduser()
        if folder is not None and not path.is_absolute():
            path = folder / path
        if not path.is_file():
            problems.append(f"{key}: no such file: {value[1:]}")
            continue
        if key in media:
            out[key] = str(path.resolve())
            paths = True
        else:
            try:
                out[key] = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(f"{key}: cannot read {value[1:]} as text: {exc}")
    return out, paths, problems


async def submit(
    app: App, target_id: str, pairs: list[str], account: str, version: str | None = None, *,
    cost_ceiling: Decimal | None = None, estimate_only: str | None = None,
) -> str:
    """Submit a run of a tool or job (in ``version``, default the latest) from ``-i`` options;
    input problems and refusals (credits, limits) become ``CliError`` (exit 4). With
    ``estimate_only`` (``"text"`` or ``"json"``), print the run's estimate instead and submit
    nothing (returns "")."""
    from toolweave.accounting import Refused
    from toolweave.app import InvalidDefinition, MediaError, UnknownDefinition
    from toolweave.inputs import InputError

    raw = parse_pairs(pairs)
    try:
        inputs, paths = read_at_files(app.job_for(target_id, version), raw)
        await app.ensure_account(account)
        if estimate_only:
            found = await app.estimate(target_id, inputs, account_id=account, version=version)
            print_json(found) if estimate_only == "json" else credits_cli.show_estimate(target_id, found)
            return ""
        return await app.submit(
            target_id, inputs, account_id=account, origin={"platform": "cli"}, coerce_text=True,
            allow_local_paths=paths, version=version, cost_ceiling=cost_ceiling,
        )
    except Refused as exc:
        raise CliError(f"refused: {exc.message}") from None
    except InvalidDefinition as exc:
        raise CliError(str(exc.args[0]), details=[str(p) for p in exc.problems]) from None
    except UnknownDefinition as exc:
        raise CliError(f"{exc.args[0]} (see `toolweave tools list` and `toolweave jobs list`)") from None
    except InputError as exc:
        raise CliError(
            f"the inputs of {target_id} are not valid", details=[_with_hint(p, raw) for p in exc.problems]
        ) from None
    except MediaError as exc:
        raise CliError(f"a media input cannot be read: {exc}") from None


async def retry_or_fork(
    app: App, run_id: str, account: str, from_step: str | None, pairs: list[str]
) -> tuple[str, int]:
    """``runs retry``: in place without ``from_step`` and inputs, else a fork. Returns the run to
    follow and the event id to follow it from."""
    from toolweave.app import BadRequest, Conflict, MediaError, NotFound
    from toolweave.inputs import InputError

    try:
        if from_step is None and not pairs:
            seen = await app.events(run_id, account)
            await app.retry(run_id, account)
            return run_id, seen[-1]["id"] if seen else 0
        raw = parse_pairs(pairs)
        inputs, paths = read_at_files(await app.run_definition(run_id, account), raw) if raw else ({}, False)
        new_id = await app.fork(
            run_id, account, from_step=from_step, inputs=inputs, origin={"platform": "cli", "command": "retry"},
            coerce_text=True, allow_local_paths=paths,
        )
        return new_id, 0
    except NotFound:
        raise _not_found(run_id, account) from None
    except (Conflict, BadRequest) as exc:
        raise CliError(str(exc)) from None
    except InputError as exc:
        raise CliError("the inputs are not valid", details=[f"{p.field}: {p.message}" for p in exc.problems]) from None
    except MediaError as exc:
        raise CliError(f"a media input cannot be read: {exc}") from None


# --- following a run -------------------------------------------------------------------------------


class _SigintCatcher:
    """Turn Ctrl-C into an event while following a run (the default handler elsewhere)."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self._installed = False

    def __enter__(self) -> _SigintCatcher:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGINT, self.event.set)
            self._installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGINT)


class InProcessWorker:
    """A worker in this process, started when no other worker is alive, stopped gracefully."""

    def __init__(self, app: App, slots: int | None = None) -> None:
        self.app = app
        self.slots = slots
        self.task: asyncio.Task[None] | None = None
        self.worker: Any = None

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def start(self) -> None:
        if self.running:
            return
        self.worker = self.app.make_worker(self.slots)
        self.task = asyncio.create_task(self.app.run_worker(self.worker, kind="cli"), name="toolweave-cli-worker")

    async def ensure(self, policy: str) -> None:
        """``always``: run one; ``auto``: run one when no worker is alive; ``never``: don't."""
        if self.running or policy == "never":
            return
        if policy == "always" or not await self.app.live_workers():
            self.start()

    async def stop(self, grace: float = 30.0) -> None:
        if self.task is None:
            return
        self.worker.stop()
        try:
            await asyncio.wait_for(asyncio.shield(self.task), grace)
        except TimeoutError:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        except Exception:  # the worker's own failure was logged; the run state is in the store
            pass


async def follow(
    app: App,
    run_id: str,
    account: str,
    console: Console,
    *,
    worker: str = "auto",
    view: str = "auto",
    slots: int | None = None,
    after: int = 0,
) -> dict[str, Any]:
    """Follow a run until it ends (or waits for a person's answer) and return its detail.

    ``worker``: ``auto`` runs an in-process worker whenever no live worker is announced (checked
    again every few seconds), ``always``/``never`` as named. ``view``: ``live`` (a table redrawn in
    place), ``lines`` (one line per event), ``quiet``; ``auto`` picks ``live`` on a terminal.
    Events are printed from after event id ``after``. Ctrl-C raises ``Interrupted`` after
    stopping the in-process worker; the run goes on.
    """
    if view == "auto":
        view = "live" if console.is_terminal else "lines"
    own = InProcessWorker(app, slots)
    last_event = after
    started = time.monotonic()
    with _SigintCatcher() as sigint:
        await own.ensure(worker)
        next_check = time.monotonic() + LIVENESS_CHECK_SECONDS
        pause = FIRST_POLL_SECONDS
        live: Live | None = None
        try:
            run = await app.get_run(run_id, account)
            if view == "live":
                live = Live(render_progress(run, started), console=console, refresh_per_second=8, transient=True)
                live.start()
            while True:
                events = await app.events(run_id, account, last_event)
                if events:
                    last_event = events[-1]["id"]
                    if view == "lines":
                        for event in events:
                            console.print(event_line(event), highlight=False, soft_wrap=True)
                run = await app.get_run(run_id, account)
                if live is not None:
                    live.update(render_progress(run, started))
                if RunStatus(run["status"]).terminal or run["status"] == RunStatus.WAITING_INPUT.value:
                    if view == "lines":  # the last events may have been appended with the status
                        for event in await app.events(run_id, account, last_event):
                            console.print(event_line(event), highlight=False, soft_wrap=True)
                    return run
                if worker == "auto" and time.monotonic() >= next_check:
                    next_check = time.monotonic() + LIVENESS_CHECK_SECONDS
                    await own.ensure(worker)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(sigint.event.wait(), pause)
                pause = min(POLL_SECONDS, pause * 2)
                if sigint.event.is_set():
                    raise Interrupted(run_id)
        finally:
            if live is not None:
                live.stop()
            await own.stop()


# --- the commands ----------------------------------------------------------------------------------


async def _finish(app: App, run: dict[str, Any], account: str, json_output: bool, output: Path | None) -> int:
    if json_output:
        if output is not None:
            await output_files(app, run, account, output)
        print_json(run)
    else:
        await summary(app, run, account, console, output)
    return exit_code(run["status"])


def _not_found(run_id: str, account: str = LOCAL_ACCOUNT) -> CliError:
    return CliError(f"account {account!r} has no run {run_id!r} (`toolweave runs list` shows its runs; "
                    "another account's: --account ID)")


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
            return await _finish(tw, run, account, json_output, output)

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
                raise _not_found(run_id, account) from None
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
    from toolweave.app import NotFound

    async def main() -> int:
        async with app_session() as tw:
            try:
                page = await tw.step_items(run_id, step_id, account, after=after, limit=limit, status=status)
            except NotFound:
                raise CliError(f"account {account!r} has no run {run_id!r} with a step {step_id!r} (another account's: "
                               "--account ID)") from None
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
                raise _not_found(run_id, account) from None

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
            return await _finish(tw, run, account, json_output, output)

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
        shown = check_view(view, False)
        check_worker_policy(worker)
        async with app_session() as tw:
            try:
                await tw.get_run(run_id, account)
            except NotFound:
                raise _not_found(run_id, account) from None
            if worker == "never" and not await tw.live_workers():
                err_console.print(
                    "note: no worker is running; an unfinished run waits until one starts (`toolweave worker`)",
                    highlight=False,
                )
            run = await follow(tw, run_id, account, console, worker=worker, view=shown)
            return await _finish(tw, run, account, False, None)

    run_main(main())


def _with_hint(problem: Any, raw: dict[str, str]) -> str:
    """An input problem as a line; a local path given without ``@`` says how to send the file."""
    line = f"{problem.field}: {problem.message}"
    if problem.message.startswith("local paths are not accepted") and problem.field in raw:
        line += f" — to send the file, write -i {problem.field}=@{raw[problem.field]}"
    return line
