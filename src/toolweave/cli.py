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

import json as _json  # noqa: E402
from collections.abc import Callable as _Callable  # noqa: E402
from pathlib import Path as _Path  # noqa: E402
from typing import TypeVar as _TypeVar  # noqa: E402

from rich.table import Table as _Table  # noqa: E402
from rich.text import Text as _Text  # noqa: E402

from toolweave.registry import DefinitionError as _DefinitionError  # noqa: E402
from toolweave.registry import Problem as _Problem  # noqa: E402
from toolweave.registry import Registry as _Registry  # noqa: E402
from toolweave.registry.describe import job_dag_lines as _job_dag_lines  # noqa: E402
from toolweave.registry.describe import param_line as _param_line  # noqa: E402
from toolweave.registry.describe import tool_lines as _tool_lines  # noqa: E402
from toolweave.settings import Settings as _Settings  # noqa: E402

_T = _TypeVar("_T")

_JSON_HELP = "Print JSON instead of text."


def _defs_settings() -> _Settings:
    try:
        return _Settings.load()
    except (ValueError, OSError) as exc:
        typer.echo(f"error: the settings cannot be read: {exc}", err=True)
        raise typer.Exit(2) from None


def _defs_builtins(registry: _Registry, settings: _Settings | None) -> None:
    """Register the builtin tools, so that job files may use them (``image.resize`` ...)."""
    try:
        from toolweave.services.builtin import builtin_tool_definitions
    except ImportError:
        return
    try:
        registry.add_tools(builtin_tool_definitions(bool(settings and settings.test_tools)))
    except _DefinitionError as exc:
        typer.echo(f"error: the builtin tools are invalid: {exc}", err=True)
        raise typer.Exit(2) from None


def _defs_registry(paths: list[_Path] | None) -> tuple[_Registry, list[_Problem], list[_Path]]:
    settings = _defs_settings()
    chosen = list(paths or settings.definitions)
    registry = _Registry()
    _defs_builtins(registry, settings)
    problems = registry.load(chosen) if chosen else []
    return registry, problems, chosen


def _defs_warn(problems: list[_Problem]) -> None:
    if problems:
        count = len(problems)
        typer.echo(
            f"warning: {count} problem{'s' if count != 1 else ''} in the definitions; "
            "the definitions concerned were left out (run `toolweave validate` for details)",
            err=True,
        )


def _defs_lookup(paths: list[_Path] | None, find: _Callable[[_Registry], _T]) -> tuple[_Registry, _T]:
    """Load the definitions and find one; an unknown id is a one-line error and exit 1."""
    registry, problems, _ = _defs_registry(paths)
    try:
        return registry, find(registry)
    except KeyError as exc:
        _defs_warn(problems)
        typer.echo(f"error: {exc.args[0]}", err=True)
        raise typer.Exit(1) from None


def _defs_print_json(data: object) -> None:
    typer.echo(_json.dumps(data, indent=2, ensure_ascii=False, default=str))


@app.command("validate")
def validate_definitions(
    paths: list[_Path] | None = typer.Argument(
        None, help="Definition files or folders (default: the configured definition folders)."
    ),
    json_output: bool = typer.Option(False, "--json", help=_JSON_HELP),
) -> None:
    """Check tool and job definitions; exit 1 listing every problem."""
    settings = _defs_settings()
    chosen = list(paths or settings.definitions)
    if not chosen:
        typer.echo("error: give a file or folder, or set TOOLWEAVE_DEFINITIONS", err=True)
        raise typer.Exit(2)
    registry = _Registry()
    _defs_builtins(registry, settings)
    entries, problems = registry.load_entries(chosen)
    found = []
    for entry in entries:
        defn = entry.definition
        is_tool = hasattr(defn, "tool_id")
        found.append(
            {
                "kind": "tool" if is_tool else "job",
                "id": getattr(defn, "tool_id", None) or getattr(defn, "job_id", ""),
                "version": defn.version,
                "command": defn.command_name,
                "detail": getattr(defn, "service", None) if is_tool else f"{len(getattr(defn, 'steps', []))} steps",
                "file": entry.file + entry.pointer,
                "valid": registry.is_registered(defn),
            }
        )
    if json_output:
        _defs_print_json({"ok": not problems, "definitions": found, "problems": [p.as_dict() for p in problems]})
        raise typer.Exit(1 if problems else 0)
    if found:
        table = _Table(title="Definitions found")
        for column in ("kind", "id", "version", "command", "service / steps", "file", "status"):
            table.add_column(column, no_wrap=column in ("id", "command", "status"))
        for row in found:
            status = _Text("ok", style="green") if row["valid"] else _Text("refused", style="red")
            table.add_row(
                *(_Text(str(row[k])) for k in ("kind", "id", "version")),
                _Text(f"/{row['command']}"),
                _Text(str(row["detail"])),
                _Text(str(row["file"])),
                status,
            )
        console.print(table)
    if problems:
        for problem in problems:
            typer.echo(str(problem), err=True)
        count = len(problems)
        typer.echo(f"{count} problem{'s' if count != 1 else ''} found.", err=True)
        raise typer.Exit(1)
    typer.echo(f"{len(found)} definition{'s' if len(found) != 1 else ''} valid.")


_PATHS_OPTION_HELP = "Definition files or folders (default: the configured definition folders)."


@tools_app.command("list")
def tools_list(
    json_output: bool = typer.Option(False, "--json", help=_JSON_HELP),
    paths: list[_Path] | None = typer.Option(None, "--definitions", "-d", help=_PATHS_OPTION_HELP),
) -> None:
    """List the tools (latest version of each)."""
    registry, problems, _ = _defs_registry(paths)
    _defs_warn(problems)
    tools = registry.tools()
    if json_output:
        _defs_print_json([t.dump() for t in tools])
        return
    table = _Table(title=f"{len(tools)} tools")
    for column in ("id", "version", "service", "command", "inputs", "outputs", "description"):
        table.add_column(column, no_wrap=column in ("id", "command"), max_width=40)
    for tool in tools:
        table.add_row(
            _Text(tool.tool_id),
            _Text(tool.version),
            _Text(tool.service),
            _Text(f"/{tool.command_name}"),
            _Text(", ".join(p.name for p in tool.input_schema)),
            _Text(", ".join(o.name for o in tool.output_schema)),
            _Text(tool.description),
        )
    console.print(table)


@tools_app.command("show")
def tools_show(
    tool_id: str = typer.Argument(..., help="The tool's id."),
    version: str | None = typer.Option(None, "--version", help="A version (default: the latest)."),
    json_output: bool = typer.Option(False, "--json", help=_JSON_HELP),
    paths: list[_Path] | None = typer.Option(None, "--definitions", "-d", help=_PATHS_OPTION_HELP),
) -> None:
    """Show one tool: inputs, outputs, costing."""
    _, tool = _defs_lookup(paths, lambda r: r.tool(tool_id, version))
    if json_output:
        _defs_print_json(tool.dump())
        return
    console.print(_Text(f"{tool.tool_id} v{tool.version} — {tool.display_name}", style="bold"))
    for line in _tool_lines(tool):
        console.print(_Text(line), soft_wrap=True)


@jobs_app.command("list")
def jobs_list(
    json_output: bool = typer.Option(False, "--json", help=_JSON_HELP),
    paths: list[_Path] | None = typer.Option(None, "--definitions", "-d", help=_PATHS_OPTION_HELP),
) -> None:
    """List the jobs (latest version of each)."""
    registry, problems, _ = _defs_registry(paths)
    _defs_warn(problems)
    jobs = registry.jobs()
    if json_output:
        _defs_print_json([j.dump() for j in jobs])
        return
    table = _Table(title=f"{len(jobs)} jobs")
    for column in ("id", "version", "command", "steps", "inputs", "outputs", "description"):
        table.add_column(column, no_wrap=column in ("id", "command"), max_width=40)
    for job in jobs:
        table.add_row(
            _Text(job.job_id),
            _Text(job.version),
            _Text(f"/{job.command_name}"),
            _Text(" → ".join(registry.topological_order(job))),
            _Text(", ".join(p.name for p in job.input_schema)),
            _Text(", ".join(o.name for o in job.output_schema)),
            _Text(job.description),
        )
    console.print(table)


def _defs_versions(kind: str, ident: str, json_output: bool, paths: list[_Path] | None) -> None:
    registry, latest = _defs_lookup(paths, lambda r: r.job(ident) if kind == "job" else r.tool(ident))
    found = [registry.job(ident, v) if kind == "job" else registry.tool(ident, v) for v in registry.versions(ident)]
    if json_output:
        _defs_print_json([
            {"version": d.version, "displayName": d.display_name, "description": d.description,
             "latest": d.version == latest.version, "file": d.source}
            for d in found
        ])
        return
    table = _Table(title=f"{len(found)} version{'s' if len(found) != 1 else ''} of {kind} {ident}")
    for column in ("version", "name", "file", "description"):
        table.add_column(column, no_wrap=column == "version", max_width=50)
    for d in found:
        mark = " (latest)" if d.version == latest.version else ""
        table.add_row(_Text(d.version + mark), _Text(d.display_name), _Text(d.source or "-"), _Text(d.description))
    console.print(table)


@tools_app.command("versions")
def tools_versions(
    tool_id: str = typer.Argument(..., help="The tool's id."),
    json_output: bool = typer.Option(False, "--json", help=_JSON_HELP),
    paths: list[_Path] | None = typer.Option(None, "--definitions", "-d", help=_PATHS_OPTION_HELP),
) -> None:
    """List the registered versions of a tool, oldest first."""
    _defs_versions("tool", tool_id, json_output, paths)


@jobs_app.command("versions")
def jobs_versions(
    job_id: str = typer.Argument(..., help="The job's id."),
    json_output: bool = typer.Option(False, "--json", help=_JSON_HELP),
    paths: list[_Path] | None = typer.Option(None, "--definitions", "-d", help=_PATHS_OPTION_HELP),
) -> None:
    """List the registered versions of a job, oldest first; run one with `toolweave run ID --version V`."""
    _defs_versions("job", job_id, json_output, paths)


@jobs_app.command("show")
def jobs_show(
    job_id: str = typer.Argument(..., help="The job's id."),
    version: str | None = typer.Option(None, "--version", help="A version (default: the latest)."),
    json_output: bool = typer.Option(False, "--json", help=_JSON_HELP),
    paths: list[_Path] | None = typer.Option(None, "--definitions", "-d", help=_PATHS_OPTION_HELP),
) -> None:
    """Show one job: its inputs, and its steps drawn as a graph."""
    registry, job = _defs_lookup(paths, lambda r: r.job(job_id, version))
    if json_output:
        _defs_print_json({**job.dump(), "order": registry.topological_order(job)})
        return
    console.print(_Text(f"{job.job_id} v{job.version} — {job.display_name}", style="bold"))
    if job.description:
        console.print(_Text(job.description), soft_wrap=True)
    console.print(_Text(f"command: /{job.command_name}"))
    for param in job.input_schema:
        console.print(_Text(f"  input {_param_line(param)}"), soft_wrap=True)
    for line in _job_dag_lines(job):
        console.print(_Text(line), soft_wrap=True)



# --- engine: run, runs, worker, demo, db ------------------------------------------------------
# The work is in toolweave.cli_engine; exit codes: 0 completed, 1 failed, 2 partially completed,
# 3 cancelled, 4 refused (unknown name or id, bad inputs), 130 interrupted (the run goes on).

from collections.abc import Coroutine as _Coroutine  # noqa: E402
from typing import TYPE_CHECKING as _TYPE_CHECKING  # noqa: E402
from typing import Any as _Any  # noqa: E402

from toolweave import cli_engine as _eng  # noqa: E402

if _TYPE_CHECKING:
    from toolweave.app import App as _App

_ACCOUNT_HELP = "The account to act as (the command line is the local operator, 'local')."
_VIEW_HELP = "How to show progress: auto (live table on a terminal, event lines otherwise), live, lines, quiet."


def _eng_run(main: _Coroutine[_Any, _Any, int]) -> None:
    """Run a coroutine; turn CliError and Ctrl-C into messages and exit codes."""
    import asyncio

    try:
        code = asyncio.run(main)
    except _eng.CliError as exc:
        err_console.print(_Text(f"error: {exc.message}", style="red"), soft_wrap=True)
        for line in exc.details:
            err_console.print(_Text(f"  {line}"), soft_wrap=True)
        raise typer.Exit(exc.code) from None
    except _eng.Interrupted as exc:
        for line in _eng.interrupted_hint(exc.run_id):
            err_console.print(_Text(line), soft_wrap=True)
        raise typer.Exit(_eng.EXIT_INTERRUPTED) from None
    except KeyboardInterrupt:
        err_console.print("interrupted")
        raise typer.Exit(_eng.EXIT_INTERRUPTED) from None
    raise typer.Exit(code or 0)


def _eng_view(view: str, json_output: bool) -> str:
    if view not in ("auto", "live", "lines", "quiet"):
        raise _eng.CliError(f"--view must be auto, live, lines or quiet, not {view!r}")
    return "quiet" if json_output else view


async def _eng_finish(
    app: _App, run: dict[str, _Any], account: str, json_output: bool, output: _Path | None
) -> int:
    if json_output:
        if output is not None:
            await _eng.output_files(app, run, account, output)
        _defs_print_json(run)
    else:
        await _eng.summary(app, run, account, console, output)
    return _eng.exit_code(run["status"])


@app.command("run")
def run_command(
    name: str = typer.Argument(..., help="The tool or job to run (its id)."),
    inputs: list[str] | None = typer.Option(
        None, "--input", "-i", help="An input as key=value (text, coerced to the input's type); key=@file reads a file."
    ),
    wait: bool = typer.Option(False, "--wait", help="Follow the run until it ends; exit with its status."),
    json_output: bool = typer.Option(False, "--json", help="Print the final run as JSON (without --wait: the run id)."),
    output: _Path | None = typer.Option(None, "--output", "-o", help="Copy the output files into this folder (implies --wait)."),
    account: str = typer.Option(_eng.LOCAL_ACCOUNT, "--account", help=_ACCOUNT_HELP),
    view: str = typer.Option("auto", "--view", help=_VIEW_HELP),
    worker: str = typer.Option(
        "auto", "--worker", help="With --wait: auto (run a worker in this process when none is alive), always, never."
    ),
    paths: list[_Path] | None = typer.Option(None, "--definitions", "-d", help="Extra definition files or folders."),
    version: str | None = typer.Option(
        None, "--version", help="The definition version to run (default: the latest; `toolweave jobs versions ID`)."
    ),
) -> None:
    """Run a tool or a job. Without --wait, submit it and print its id."""

    async def main() -> int:
        shown = _eng_view(view, json_output)
        if worker not in ("auto", "always", "never"):
            raise _eng.CliError(f"--worker must be auto, always or never, not {worker!r}")
        async with _eng.app_session(paths) as tw:
            run_id = await _eng.submit(tw, name, list(inputs or []), account, version)
            if not (wait or output is not None):
                if json_output:
                    _defs_print_json({"jobRunId": run_id})
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
            run = await _eng.follow(tw, run_id, account, console, worker=worker, view=shown)
            return await _eng_finish(tw, run, account, json_output, output)

    _eng_run(main())


@runs_app.command("list")
def runs_list(
    status: list[str] | None = typer.Option(None, "--status", help="Only runs with this status (repeatable)."),
    job: str | None = typer.Option(None, "--job", help="Only runs of this tool or job id."),
    limit: int = typer.Option(20, "--limit", min=1, max=500, help="At most this many runs (newest first)."),
    json_output: bool = typer.Option(False, "--json", help=_JSON_HELP),
    account: str = typer.Option(_eng.LOCAL_ACCOUNT, "--account", help=_ACCOUNT_HELP),
) -> None:
    """List runs, newest first."""
    from toolweave.model.status import RunStatus

    async def main() -> int:
        known = {s.value for s in RunStatus}
        bad = [s for s in status or [] if s not in known]
        if bad:
            raise _eng.CliError(f"unknown status {', '.join(bad)} (one of: {', '.join(sorted(known))})")
        async with _eng.app_session() as tw:
            page = await tw.list_runs(account, status=list(status) if status else None, job_id=job, limit=limit)
        if json_output:
            _defs_print_json({"items": page.items, "nextCursor": page.next_cursor})
        else:
            console.print(_eng.runs_table(page.items))
        return 0

    _eng_run(main())


def _eng_not_found(run_id: str) -> _eng.CliError:
    return _eng.CliError(f"no run {run_id!r} (for account, see --account; `toolweave runs list` shows yours)")


@runs_app.command("show")
def runs_show(
    run_id: str = typer.Argument(..., help="The run's id."),
    json_output: bool = typer.Option(False, "--json", help=_JSON_HELP),
    account: str = typer.Option(_eng.LOCAL_ACCOUNT, "--account", help=_ACCOUNT_HELP),
) -> None:
    """Show a run: steps, generations, outputs (with their files), cost, timings, errors."""
    from toolweave.app import NotFound

    async def main() -> int:
        async with _eng.app_session() as tw:
            try:
                run = await tw.get_run(run_id, account)
            except NotFound:
                raise _eng_not_found(run_id) from None
            if json_output:
                _defs_print_json(run)
            else:
                await _eng.show(tw, run, account, console)
        return 0

    _eng_run(main())


@runs_app.command("cancel")
def runs_cancel(
    run_id: str = typer.Argument(..., help="The run's id."),
    account: str = typer.Option(_eng.LOCAL_ACCOUNT, "--account", help=_ACCOUNT_HELP),
) -> None:
    """Cancel a run: its pending steps are cancelled, running generations are cancelled at the backend."""
    from toolweave.app import NotFound

    async def main() -> int:
        async with _eng.app_session() as tw:
            try:
                before = (await tw.get_run(run_id, account))["status"]
                status = await tw.cancel(run_id, account)
            except NotFound:
                raise _eng_not_found(run_id) from None
        from toolweave.model.status import RunStatus

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

    _eng_run(main())


@runs_app.command("retry")
def runs_retry(
    run_id: str = typer.Argument(..., help="The run's id."),
    wait: bool = typer.Option(False, "--wait", help="Follow the run until it ends; exit with its status."),
    json_output: bool = typer.Option(False, "--json", help="With --wait: print the final run as JSON."),
    account: str = typer.Option(_eng.LOCAL_ACCOUNT, "--account", help=_ACCOUNT_HELP),
    view: str = typer.Option("auto", "--view", help=_VIEW_HELP),
) -> None:
    """Run a failed, partially completed or cancelled run again from its unfinished steps."""
    from toolweave.app import Conflict, NotFound

    async def main() -> int:
        shown = _eng_view(view, json_output)
        async with _eng.app_session() as tw:
            try:
                seen = await tw.events(run_id, account)
                await tw.retry(run_id, account)
            except NotFound:
                raise _eng_not_found(run_id) from None
            except Conflict as exc:
                raise _eng.CliError(str(exc)) from None
            if not wait:
                console.print(f"run {run_id} retried", highlight=False)
                return 0
            after = seen[-1]["id"] if seen else 0
            run = await _eng.follow(tw, run_id, account, console, worker="auto", view=shown, after=after)
            return await _eng_finish(tw, run, account, json_output, None)

    _eng_run(main())


@runs_app.command("watch")
def runs_watch(
    run_id: str = typer.Argument(..., help="The run's id."),
    account: str = typer.Option(_eng.LOCAL_ACCOUNT, "--account", help=_ACCOUNT_HELP),
    view: str = typer.Option("lines", "--view", help=_VIEW_HELP),
    worker: str = typer.Option(
        "never", "--worker", help="never (only watch), auto (run a worker here when none is alive), always."
    ),
) -> None:
    """Follow a run's events until it ends; exit with its status."""
    from toolweave.app import NotFound

    async def main() -> int:
        shown = _eng_view(view, False)
        if worker not in ("auto", "always", "never"):
            raise _eng.CliError(f"--worker must be auto, always or never, not {worker!r}")
        async with _eng.app_session() as tw:
            try:
                await tw.get_run(run_id, account)
            except NotFound:
                raise _eng_not_found(run_id) from None
            if worker == "never" and not await tw.live_workers():
                err_console.print(
                    "note: no worker is running; an unfinished run waits until one starts (`toolweave worker`)",
                    highlight=False,
                )
            run = await _eng.follow(tw, run_id, account, console, worker=worker, view=shown)
            return await _eng_finish(tw, run, account, False, None)

    _eng_run(main())


@app.command("worker")
def worker_command(
    slots: int = typer.Option(0, "--slots", min=0, help="Tasks handled at once (default: the worker_slots setting)."),
    until_idle: bool = typer.Option(False, "--until-idle", help="Exit when no task is due or in flight."),
    timeout: float = typer.Option(600.0, "--timeout", help="With --until-idle: give up after this many seconds."),
    log_level: str = typer.Option("INFO", "--log-level", help="DEBUG, INFO, WARNING or ERROR."),
) -> None:
    """Run a worker until SIGTERM or Ctrl-C (it finishes the tasks in hand, then hands back the rest)."""
    import logging
    import signal as _signal

    async def main() -> int:
        import asyncio

        level = getattr(logging, log_level.upper(), None)
        if not isinstance(level, int):
            raise _eng.CliError(f"--log-level must be DEBUG, INFO, WARNING or ERROR, not {log_level!r}")
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        async with _eng.app_session() as tw:
            w = tw.make_worker(slots or None)
            where = _eng.safe_url(tw.settings.db_url)
            if until_idle:
                await w.run_until_idle(timeout)
                err_console.print(f"worker {w.worker_id}: idle after {w.handled} task(s)", highlight=False)
                return 0
            loop = asyncio.get_running_loop()
            for sig in (_signal.SIGTERM, _signal.SIGINT):
                try:
                    loop.add_signal_handler(sig, w.stop)
                except (NotImplementedError, RuntimeError, ValueError):
                    pass
            err_console.print(
                f"worker {w.worker_id}: {w.slots} slot(s) on {where}; SIGTERM or Ctrl-C stops it", highlight=False
            )
            try:
                await tw.run_worker(w, kind="worker")
            finally:
                for sig in (_signal.SIGTERM, _signal.SIGINT):
                    try:
                        loop.remove_signal_handler(sig)
                    except (NotImplementedError, RuntimeError, ValueError):
                        pass
            err_console.print(f"worker {w.worker_id}: stopped after {w.handled} task(s)", highlight=False)
        return 0

    _eng_run(main())


@app.command("demo")
def demo_command(
    output: _Path = typer.Option(_Path("demo-output"), "--output", "-o", help="Where to copy the output images."),
    account: str = typer.Option(_eng.LOCAL_ACCOUNT, "--account", help=_ACCOUNT_HELP),
    view: str = typer.Option("auto", "--view", help=_VIEW_HELP),
) -> None:
    """Run the bundled demo job offline: parallel branches, a condition, a retry and a contact sheet."""

    folder = output.resolve()

    async def main() -> int:
        shown = _eng_view(view, False)
        # the demo's image host is on loopback, which user-given URLs may not reach: the demo runs
        # in a data folder of its own, where that is allowed, so no other run gets the exemption
        home = _Settings.load().home / "demo"
        async with _eng.app_session(home=home, media_allow_private_urls=True) as tw:
            console.print(
                f"toolweave demo — data folder {tw.settings.home} (under TOOLWEAVE_HOME)", highlight=False
            )
            run, files, server = await _eng.run_demo(
                tw, account, console, folder, view=shown, say=lambda line: console.print(line, highlight=False)
            )
            console.print(_eng.run_header(run))
            console.print(_eng.steps_table(run))
            _eng.print_error(console, run)
            retries = sum(max(0, int(s.get("attempt") or 1) - 1) for s in run.get("stepStatuses") or [])
            console.print(
                f"the image host answered {', '.join(str(s) for s in server.requests)}; "
                f"{retries} retr{'y' if retries == 1 else 'ies'} needed",
                highlight=False,
            )
            if files:
                console.print(_Text(f"output files (in {folder})", style="bold"))
                for name, description, path in files:
                    console.print(f"  {name}: {path}  ({description})", highlight=False, soft_wrap=True)
            console.print(f"details: TOOLWEAVE_HOME={home} toolweave runs show {run['jobRunId']}", highlight=False)
            return _eng.exit_code(run["status"])

    _eng_run(main())


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the store to the latest schema; print its revision."""

    async def main() -> int:
        async with _eng.app_session() as tw:
            console.print(
                f"store {_eng.safe_url(tw.settings.db_url)} is at revision {tw.db_revision()}", highlight=False
            )
        return 0

    _eng_run(main())


# --- comfy: import, sync ---------------------------------------------------------------------

from pathlib import Path  # noqa: E402  (kept in this section so other sections stay untouched)


@import_app.command("comfyui")
def import_comfyui(
    workflow_file: Path = typer.Argument(..., help="The workflow JSON (editor/UI format or API format)."),
    service: str = typer.Option(..., "--service", help="comfyui (native server) or comfydeploy."),
    deployment_id: str | None = typer.Option(None, "--deployment-id", help="ComfyUI Deploy deployment id."),
    object_info: str | None = typer.Option(
        None,
        "--object-info",
        help="The target server's /object_info: a saved JSON file or the server's URL "
        "(default: the captured ComfyUI 0.3.64 one shipped with toolweave).",
    ),
    tool_id: str | None = typer.Option(None, "--id", help="The tool id (default: comfy-<file name>)."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Where to write the YAML (default: stdout)."),
) -> None:
    """Write a tool definition for a ComfyUI workflow, for a person to review."""
    import asyncio

    import yaml

    from toolweave.comfy import ObjectInfo, WorkflowImportError, parse_workflow, tool_from_workflow

    try:
        try:
            text = workflow_file.read_bytes()
        except OSError as exc:
            raise WorkflowImportError("invalid_json", f"cannot read {workflow_file}: {exc.strerror or exc}") from None
        workflow = parse_workflow(text, source=str(workflow_file))
        if object_info is None:
            info = ObjectInfo.default()
        elif object_info.startswith(("http://", "https://")):
            info = asyncio.run(ObjectInfo.from_url(object_info))
        else:
            info = ObjectInfo.from_file(object_info)
        tool = tool_from_workflow(
            workflow,
            service=service,
            object_info=info,
            tool_id=tool_id,
            deployment_id=deployment_id,
            name=workflow_file.stem,
        )
    except WorkflowImportError as exc:
        err_console.print(f"[red]error[/red] ({exc.reason}): {exc}", markup=True, highlight=False)
        raise typer.Exit(1) from None
    header = (
        f"# Imported from {workflow_file.name} by `toolweave import comfyui`.\n"
        "# Review before use: input names, defaults, descriptions, costingModel.\n"
    )
    class _Dumper(yaml.SafeDumper):
        pass

    def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    _Dumper.add_representer(str, _str)
    body = header + yaml.dump(tool.dump(), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    if output is None:
        typer.echo(body, nl=False)
        return
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(body, encoding="utf-8")
    except OSError as exc:
        err_console.print(f"[red]error[/red]: cannot write {output}: {exc.strerror or exc}", highlight=False)
        raise typer.Exit(1) from None
    inputs = ", ".join(p.name for p in tool.input_schema) or "none"
    outputs = ", ".join(p.name for p in tool.output_schema)
    err_console.print(f"wrote {output}: tool {tool.tool_id} (inputs: {inputs}; outputs: {outputs})", highlight=False)


@sync_app.command("comfydeploy")
def sync_comfydeploy(
    folder: Path = typer.Argument(..., help="The folder of tool definitions to write into."),
    environment: str = typer.Option(
        "production", "--environment", help="The deployment environment to sync ('all': every one)."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would change; write nothing."),
) -> None:
    """Write, refresh and remove one tool definition per ComfyUI Deploy deployment.

    Only files this command wrote (they start with a 'Synced from ComfyUI Deploy' line) are
    changed or removed; a synced tool keeps its toolId when its workflow is renamed.
    """
    import asyncio
    from typing import Any, cast

    import httpx

    from toolweave.services.base import ServiceError, ServiceHost
    from toolweave.services.comfydeploy import ComfyDeployService, SyncReport, sync_deployments
    from toolweave.settings import Settings

    try:
        settings = Settings.load()
    except (ValueError, OSError) as exc:
        err_console.print(f"[red]error[/red]: the settings cannot be read: {exc}", highlight=False)
        raise typer.Exit(2) from None

    class _Host:
        artifacts: Any = None

        def __init__(self, http: httpx.AsyncClient) -> None:
            self.http = http

    async def _run() -> SyncReport:
        async with httpx.AsyncClient() as http:
            service = ComfyDeployService(cast(ServiceHost, _Host(http)), settings)
            return await sync_deployments(
                service, folder, environment=None if environment == "all" else environment, dry_run=dry_run
            )

    try:
        report = asyncio.run(_run())
    except (ServiceError, OSError) as exc:
        err_console.print(f"[red]error[/red]: {getattr(exc, 'message', exc)}", highlight=False)
        raise typer.Exit(1) from None
    verb = "would write" if dry_run else "wrote"
    for path in report.written:
        console.print(f"{verb} {path}", highlight=False)
    for path in report.removed:
        console.print(f"{'would remove' if dry_run else 'removed'} {path}", highlight=False)
    for reason in report.skipped:
        err_console.print(f"skipped {reason}", highlight=False)
    console.print(
        f"{len(report.written)} written, {len(report.unchanged)} unchanged, {len(report.removed)} removed, "
        f"{len(report.skipped)} skipped",
        highlight=False,
    )


# --- api: serve, keys ------------------------------------------------------------------------


def _api_settings(**overrides: _Any) -> _Settings:
    try:
        return _Settings.load(**overrides)
    except (ValueError, OSError) as exc:
        err_console.print(_Text(f"error: the settings cannot be read: {exc}", style="red"), soft_wrap=True)
        raise typer.Exit(2) from None


@app.command("serve")
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="The address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="The port to listen on."),
    workers_in_process: int | None = typer.Option(
        None, "--workers-in-process", min=1, help="Slots of the embedded worker (default: the worker_slots setting)."
    ),
    no_worker: bool = typer.Option(
        False, "--no-worker", help="Run no embedded worker: separate `toolweave worker` processes do the work."
    ),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
) -> None:
    """Serve the HTTP API, the live event streams and the web page (with an embedded worker by default)."""
    import asyncio
    import logging

    import uvicorn

    from toolweave.api import create_app
    from toolweave.app import App

    settings = _api_settings()
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def _main() -> None:
        tw_app = App(settings)
        for problem in tw_app.definition_problems:
            err_console.print(_Text(f"warning: {problem}", style="yellow"), soft_wrap=True)
        try:
            api = create_app(tw_app, run_worker=not no_worker, slots=workers_in_process or settings.worker_slots)
            config = uvicorn.Config(api, host=host, port=port, log_level=log_level.lower(), proxy_headers=True)
            server = uvicorn.Server(config)
            mode = "no embedded worker" if no_worker else f"embedded worker, {workers_in_process or settings.worker_slots} slots"
            err_console.print(_Text(f"toolweave serving on http://{host}:{port} ({mode}); data in {settings.home}"))
            await server.serve()
        finally:
            await tw_app.aclose()

    try:
        asyncio.run(_main())
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        err_console.print(_Text(f"error: cannot serve on {host}:{port}: {exc.strerror or exc}", style="red"))
        raise typer.Exit(1) from None


def _api_with_app(fn: _Any) -> _Any:
    import asyncio

    from toolweave.app import App

    async def _main() -> _Any:
        tw_app = App(_api_settings())
        try:
            return await fn(tw_app)
        finally:
            await tw_app.aclose()

    return asyncio.run(_main())


@keys_app.command("create")
def keys_create(
    account: str = typer.Option(..., "--account", help="The account the key acts for (created when new)."),
    name: str = typer.Option("", "--name", help="A label to recognise the key by."),
) -> None:
    """Create an API key; it is printed once and only its hash is kept."""
    account = account.strip()
    if not account or len(account) > 64 or account == "admin":
        err_console.print(_Text("error: give an account name of 1 to 64 characters (not 'admin')", style="red"))
        raise typer.Exit(2)
    key_id, secret = _api_with_app(lambda a: a.create_key(account, name))
    err_console.print(_Text(f"Created key {key_id} (prefix {secret[:10]}) for account {account!r}. "
                            "Keep it now: it is not shown again.", style="green"), soft_wrap=True)
    typer.echo(secret)


@keys_app.command("list")
def keys_list(
    account: str | None = typer.Option(None, "--account", help="Only this account's keys."),
    json_output: bool = typer.Option(False, "--json", help=_JSON_HELP),
) -> None:
    """List API keys by prefix (the keys themselves are never stored)."""
    keys = _api_with_app(lambda a: a.list_keys(account))
    if json_output:
        _defs_print_json(keys)
        return
    from datetime import UTC, datetime

    def _t(ts: float | None) -> str:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M") if ts else "—"

    table = _Table(title=f"{len(keys)} API keys")
    for column in ("prefix", "key id", "account", "name", "created", "last used", "status"):
        table.add_column(column, no_wrap=True)
    for k in keys:
        status = _Text("revoked", style="red") if k["revokedAt"] else _Text("active", style="green")
        table.add_row(_Text(k["prefix"] + "…"), _Text(k["keyId"]), _Text(k["accountId"]), _Text(k["name"] or ""),
                      _Text(_t(k["createdAt"])), _Text(_t(k["lastUsedAt"])), status)
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key: str = typer.Argument(..., help="The key id or its prefix (as `keys list` shows it).")) -> None:
    """Revoke an API key: it stops working at once."""
    key = key.strip().removesuffix("…")
    if len(key) < 6:
        err_console.print(_Text("error: give the key id or a prefix of at least 6 characters", style="red"))
        raise typer.Exit(2)
    count = _api_with_app(lambda a: a.revoke_key(key))
    if not count:
        err_console.print(_Text(f"error: no active key matches {key!r}", style="red"))
        raise typer.Exit(1)
    typer.echo(f"Revoked {count} key{'s' if count != 1 else ''}.")


# --- telegram --------------------------------------------------------------------------------


@app.command("telegram")
def telegram_command(
    slots: int = typer.Option(0, "--slots", min=0, help="Slots of the embedded worker (default: the worker_slots setting)."),
    no_worker: bool = typer.Option(
        False, "--no-worker", help="Run no embedded worker: `toolweave worker` or `serve` processes do the work."
    ),
    set_webhook: str | None = typer.Option(
        None, "--set-webhook", metavar="URL",
        help="Register URL (the public address of the server's /telegram/webhook route) with Telegram, then exit.",
    ),
    delete_webhook: bool = typer.Option(False, "--delete-webhook", help="Unregister the webhook, then exit."),
    log_level: str = typer.Option("INFO", "--log-level", help="DEBUG, INFO, WARNING or ERROR."),
) -> None:
    """Run the Telegram bot by long polling, with an embedded worker (one process does everything)."""
    import asyncio
    import logging

    settings = _api_settings()
    if not settings.telegram_token:
        err_console.print(_Text(
            "error: no bot token: set TOOLWEAVE_TELEGRAM_TOKEN (or telegram_token under [toolweave] in "
            "toolweave.toml) to the token @BotFather gave you", style="red"), soft_wrap=True)
        raise typer.Exit(2)
    level = getattr(logging, log_level.upper(), None)
    if not isinstance(level, int):
        err_console.print(_Text(f"error: --log-level must be DEBUG, INFO, WARNING or ERROR, not {log_level!r}", style="red"))
        raise typer.Exit(2)
    from toolweave.telegram.botapi import redact_token_in_logs

    redact_token_in_logs(settings.telegram_token)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if level > logging.DEBUG:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per long poll otherwise

    async def _main() -> int:
        from telegram.error import InvalidToken, TelegramError

        from toolweave.app import App
        from toolweave.telegram.runner import main as run_bot
        from toolweave.telegram.webhook import TelegramWebhook

        tw_app = App(settings)
        for problem in tw_app.definition_problems:
            err_console.print(_Text(f"warning: {problem}", style="yellow"), soft_wrap=True)
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
                    err_console.print(_Text("error: Telegram only sends webhooks to https:// URLs", style="red"))
                    return 2
                hook = TelegramWebhook(tw_app)
                await hook.set_webhook(str(set_webhook))
                await hook.stop()
                typer.echo(f"Telegram now sends updates to {set_webhook} (with the secret token header).")
                return 0
            err_console.print(_Text(
                f"toolweave telegram: polling for updates ({'no embedded worker' if no_worker else 'with an embedded worker'}); "
                f"data in {settings.home}; Ctrl-C stops it"), soft_wrap=True)
            await run_bot(tw_app, slots=slots or None, worker=not no_worker)
            return 0
        except ValueError as exc:  # e.g. webhook mode without a secret
            err_console.print(_Text(f"error: {exc}", style="red"), soft_wrap=True)
            return 2
        except InvalidToken:
            err_console.print(_Text("error: Telegram rejected the bot token", style="red"))
            return 2
        except TelegramError as exc:
            err_console.print(_Text(f"error: Telegram: {exc}", style="red"), soft_wrap=True)
            return 1
        finally:
            await tw_app.aclose()

    try:
        code = asyncio.run(_main())
    except KeyboardInterrupt:
        code = 0
    raise typer.Exit(code)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
