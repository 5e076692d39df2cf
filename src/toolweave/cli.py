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
from pathlib import Path as _Path  # noqa: E402

from rich.table import Table as _Table  # noqa: E402
from rich.text import Text as _Text  # noqa: E402

from toolweave.registry import DefinitionError as _DefinitionError  # noqa: E402
from toolweave.registry import Problem as _Problem  # noqa: E402
from toolweave.registry import Registry as _Registry  # noqa: E402
from toolweave.registry.describe import job_dag_lines as _job_dag_lines  # noqa: E402
from toolweave.registry.describe import param_line as _param_line  # noqa: E402
from toolweave.registry.describe import tool_lines as _tool_lines  # noqa: E402
from toolweave.settings import Settings as _Settings  # noqa: E402

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
    registry, problems, _ = _defs_registry(paths)
    try:
        tool = registry.tool(tool_id, version)
    except KeyError as exc:
        _defs_warn(problems)
        typer.echo(f"error: {exc.args[0]}", err=True)
        raise typer.Exit(1) from None
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


@jobs_app.command("show")
def jobs_show(
    job_id: str = typer.Argument(..., help="The job's id."),
    version: str | None = typer.Option(None, "--version", help="A version (default: the latest)."),
    json_output: bool = typer.Option(False, "--json", help=_JSON_HELP),
    paths: list[_Path] | None = typer.Option(None, "--definitions", "-d", help=_PATHS_OPTION_HELP),
) -> None:
    """Show one job: its inputs, and its steps drawn as a graph."""
    registry, problems, _ = _defs_registry(paths)
    try:
        job = registry.job(job_id, version)
    except KeyError as exc:
        _defs_warn(problems)
        typer.echo(f"error: {exc.args[0]}", err=True)
        raise typer.Exit(1) from None
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
