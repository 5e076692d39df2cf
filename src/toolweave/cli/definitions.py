"""``toolweave validate``, ``toolweave tools ...`` and ``toolweave jobs ...``: the definitions,
read from files (no store needed)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.table import Table
from rich.text import Text

from toolweave.cli.common import (
    EXIT_REFUSED,
    JSON_HELP,
    PATHS_OPTION_HELP,
    console,
    count,
    err_console,
    load_settings,
    print_json,
)
from toolweave.settings import Settings

if TYPE_CHECKING:  # loaded by the commands that use them: `toolweave --help` must stay fast
    from toolweave.registry import Problem, Registry

T = TypeVar("T")

tools_app = typer.Typer(no_args_is_help=True, help="Tool definitions.")
jobs_app = typer.Typer(no_args_is_help=True, help="Job definitions.")


def _add_builtins(registry: Registry, settings: Settings | None) -> None:
    """Register the builtin tools, so that job files may use them (``image.resize`` ...)."""
    from toolweave.registry import DefinitionError

    try:
        from toolweave.services.builtin import builtin_tool_definitions
    except ImportError:
        return
    try:
        registry.add_tools(builtin_tool_definitions(bool(settings and settings.test_tools)))
    except DefinitionError as exc:
        typer.echo(f"error: the builtin tools are invalid: {exc}", err=True)
        raise typer.Exit(2) from None


def _registry(settings: Settings) -> Registry:
    """A registry that checks what a tool's service needs (known, configured, its metadata), with
    the builtin tools registered."""
    from toolweave.registry import Registry
    from toolweave.services.catalog import ServiceCatalog

    registry = Registry(service_check=ServiceCatalog(settings).check_tool)
    _add_builtins(registry, settings)
    return registry


def _load_registry(paths: list[Path] | None) -> tuple[Registry, list[Problem], list[Path]]:
    settings = load_settings()
    chosen = list(paths or settings.definitions)
    registry = _registry(settings)
    problems = registry.load(chosen) if chosen else []
    return registry, problems, chosen


def _warn(problems: list[Problem]) -> None:
    if problems:
        typer.echo(
            f"warning: {count(len(problems), 'problem')} in the definitions; "
            "the definitions concerned were left out (run `toolweave validate` for details)",
            err=True,
        )


def _lookup(paths: list[Path] | None, kind: str, ident: str, find: Callable[[Registry], T]) -> tuple[Registry, T]:
    """Load the definitions and find one; an unknown id is a one-line error (with the closest
    known id of that kind, if one is close) and exit 4 (refused)."""
    import difflib

    registry, problems, _ = _load_registry(paths)
    try:
        return registry, find(registry)
    except KeyError as exc:
        _warn(problems)
        message = str(exc.args[0])
        known = [t.tool_id for t in registry.tools()] if kind == "tool" else [j.job_id for j in registry.jobs()]
        close = difflib.get_close_matches(ident, known, n=1)
        if close and message.startswith("no "):
            message += f"; did you mean {close[0]!r}? (`toolweave {kind}s list` lists them)"
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(EXIT_REFUSED) from None


def validate_definitions(
    paths: list[Path] | None = typer.Argument(None, help=PATHS_OPTION_HELP),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
    object_info: str | None = typer.Option(
        None, "--object-info",
        help="Check ComfyUI tools against this /object_info (a server's URL or a saved JSON file): "
        "node classes it lacks, required inputs, link types.",
    ),
    live: bool = typer.Option(
        False, "--live", help="Check each ComfyUI tool against the /object_info of the configured server it runs on."
    ),
) -> None:
    """Check tool and job definitions; exit 1 listing every problem.

    Tools are checked against the services configured here: a tool naming an unknown service, or
    one not configured (a missing API key), is a problem naming it."""
    settings = load_settings()
    chosen = list(paths or settings.definitions)
    if not chosen:
        typer.echo("error: give a file or folder, or set TOOLWEAVE_DEFINITIONS", err=True)
        raise typer.Exit(EXIT_REFUSED)
    registry = _registry(settings)
    entries, problems = registry.load_entries(chosen)
    refused: set[int] = set()
    if object_info is not None or live:
        refused, extra = _check_workflows(entries, registry, settings, object_info, live)
        problems.extend(extra)
    found = []
    for index, entry in enumerate(entries):
        defn = entry.definition
        is_tool = hasattr(defn, "tool_id")
        found.append(
            {
                "kind": "tool" if is_tool else "job",
                "id": getattr(defn, "tool_id", None) or getattr(defn, "job_id", ""),
                "version": defn.version,
                "command": defn.command_name,
                "detail": getattr(defn, "service", None) if is_tool else count(len(getattr(defn, 'steps', [])), "step"),
                "file": entry.file + entry.pointer,
                "valid": registry.is_registered(defn) and index not in refused,
            }
        )
    if json_output:
        print_json({"ok": not problems, "definitions": found, "problems": [p.as_dict() for p in problems]})
        raise typer.Exit(1 if problems else 0)
    if found:
        # below 120 columns (a pipe is 80) the version, command and service are left out (--json
        # has them); ids and statuses are never cut, file paths fold rather than lose their end
        wide = console.width >= 120
        columns = ("kind", "id", "version", "command", "service / steps", "file", "status") if wide \
            else ("kind", "id", "file", "status")
        table = Table(title="Definitions found", title_justify="left")
        for column in columns:
            table.add_column(column, no_wrap=column in ("kind", "id", "command", "status"), overflow="fold")
        for row in found:
            cells = {
                "kind": Text(str(row["kind"])), "id": Text(str(row["id"])), "version": Text(str(row["version"])),
                "command": Text(f"/{row['command']}"), "service / steps": Text(str(row["detail"])),
                "file": Text(str(row["file"])),
                "status": Text("ok", style="green") if row["valid"] else Text("refused", style="red"),
            }
            table.add_row(*(cells[c] for c in columns))
        console.print(table)
    if problems:
        for problem in problems:
            typer.echo(str(problem), err=True)
        typer.echo(f"{count(len(problems), 'problem')} found.", err=True)
        raise typer.Exit(1)
    typer.echo(f"{count(len(found), 'definition')} valid.")


def _check_workflows(
    entries: list[Any], registry: Registry, settings: Settings, object_info: str | None, live: bool
) -> tuple[set[int], list[Problem]]:
    """ComfyUI tools checked against a server's ``/object_info`` (given, or each tool's configured
    server): the indexes of the entries refused and their problems."""
    import asyncio

    from toolweave.comfy import ObjectInfo, WorkflowImportError
    from toolweave.comfy.objectinfo import shown_url
    from toolweave.model.definitions import ToolDefinition
    from toolweave.services.comfy_workflows import workflow_problems

    infos: dict[str, ObjectInfo | str] = {}

    def fetch(source: str) -> ObjectInfo | str:
        if source not in infos:
            try:
                infos[source] = (
                    asyncio.run(ObjectInfo.from_url(source, request_timeout=settings.http_timeout_seconds))
                    if source.startswith(("http://", "https://")) else ObjectInfo.from_file(source)
                )
            except WorkflowImportError as exc:
                infos[source] = str(exc)
        return infos[source]

    servers = {s.name: s.base_url for s in settings.comfyui_servers}
    default = settings.comfyui_default_server or next(iter(servers), None)
    refused: set[int] = set()
    problems: list[Problem] = []
    for index, entry in enumerate(entries):
        tool = entry.definition
        if not isinstance(tool, ToolDefinition) or tool.service not in ("comfyui", "comfydeploy"):
            continue
        if not registry.is_registered(tool):
            continue  # already refused, its problems said
        sources = [object_info] if object_info else []
        if live and tool.service == "comfyui":
            server = tool.metadata.get("server") or default
            if server in servers:
                sources.append(servers[str(server)])
        for source in sources:
            info = fetch(source)
            found = [("metadata.workflow", f"cannot check against {shown_url(source)}: {info}")] if isinstance(info, str) \
                else workflow_problems(tool, info.with_fallback(ObjectInfo.comfydeploy_nodes())
                                       if tool.service == "comfydeploy" else info)
            for path, message in found:
                from toolweave.registry import Problem

                problems.append(Problem(entry.file, f"{entry.pointer}.{path}" if entry.pointer else path, message))
                refused.add(index)
    return refused, problems


@tools_app.command("list")
def tools_list(
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
    paths: list[Path] | None = typer.Option(None, "--definitions", "-d", help=PATHS_OPTION_HELP),
) -> None:
    """List the tools (latest version of each)."""
    registry, problems, _ = _load_registry(paths)
    _warn(problems)
    tools = registry.tools()
    if json_output:
        print_json([t.dump() for t in tools])
        return
    rows = [
        {"id": t.tool_id, "version": t.version, "service": t.service, "command": f"/{t.command_name}",
         "inputs": ", ".join(p.name for p in t.input_schema), "outputs": ", ".join(o.name for o in t.output_schema),
         "description": _summary(t.description)}
        for t in tools
    ]
    console.print(_listing(count(len(tools), "tool"), rows, narrow=("id", "service", "description")))


@tools_app.command("show")
def tools_show(
    tool_id: str = typer.Argument(..., help="The tool's id."),
    version: str | None = typer.Option(None, "--version", help="A version (default: the latest)."),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
    paths: list[Path] | None = typer.Option(None, "--definitions", "-d", help=PATHS_OPTION_HELP),
) -> None:
    """Show one tool: inputs, outputs, costing."""
    _, tool = _lookup(paths, "tool", tool_id, lambda r: r.tool(tool_id, version))
    if json_output:
        print_json(tool.dump())
        return
    from toolweave.registry.describe import tool_lines

    console.print(Text(f"{tool.tool_id} v{tool.version} — {tool.display_name}", style="bold"))
    for line in tool_lines(tool):
        console.print(Text(line), soft_wrap=True)


@jobs_app.command("list")
def jobs_list(
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
    paths: list[Path] | None = typer.Option(None, "--definitions", "-d", help=PATHS_OPTION_HELP),
) -> None:
    """List the jobs (latest version of each)."""
    registry, problems, _ = _load_registry(paths)
    _warn(problems)
    jobs = registry.jobs()
    if json_output:
        print_json([j.dump() for j in jobs])
        return
    if not jobs and not json_output:
        err_console.print(Text(
            "no jobs: give the folders of your definitions with -d DIR, or set TOOLWEAVE_DEFINITIONS "
            "(e.g. -d examples/demo)", style="yellow"), soft_wrap=True)
    rows = [
        {"id": j.job_id, "version": j.version, "command": f"/{j.command_name}", "steps": _layers(j),
         "inputs": ", ".join(p.name for p in j.input_schema), "outputs": ", ".join(o.name for o in j.output_schema),
         "description": _summary(j.description)}
        for j in jobs
    ]
    console.print(_listing(count(len(jobs), "job"), rows, narrow=("id", "steps")))


def _versions(kind: str, ident: str, json_output: bool, paths: list[Path] | None) -> None:
    registry, latest = _lookup(paths, kind, ident, lambda r: r.job(ident) if kind == "job" else r.tool(ident))
    found = [registry.job(ident, v) if kind == "job" else registry.tool(ident, v) for v in registry.versions(ident)]
    if json_output:
        print_json([
            {"version": d.version, "displayName": d.display_name, "description": d.description,
             "latest": d.version == latest.version, "file": d.source}
            for d in found
        ])
        return
    # below 120 columns (a pipe is 80) the description is left out (`show --version V` has it)
    columns = ("version", "name", "file", "description") if console.width >= 120 else ("version", "name", "file")
    table = Table(title=f"{count(len(found), 'version')} of {kind} {ident}", title_justify="left")
    for column in columns:
        table.add_column(column, no_wrap=column == "version", overflow="fold", max_width=50)
    for d in found:
        mark = " (latest)" if d.version == latest.version else ""
        cells = {"version": d.version + mark, "name": d.display_name, "file": d.source or "-", "description": d.description}
        table.add_row(*(Text(cells[c]) for c in columns))
    console.print(table)


@tools_app.command("versions")
def tools_versions(
    tool_id: str = typer.Argument(..., help="The tool's id."),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
    paths: list[Path] | None = typer.Option(None, "--definitions", "-d", help=PATHS_OPTION_HELP),
) -> None:
    """List the registered versions of a tool, oldest first."""
    _versions("tool", tool_id, json_output, paths)


@jobs_app.command("versions")
def jobs_versions(
    job_id: str = typer.Argument(..., help="The job's id."),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
    paths: list[Path] | None = typer.Option(None, "--definitions", "-d", help=PATHS_OPTION_HELP),
) -> None:
    """List the registered versions of a job, oldest first; run one with `toolweave run ID --version V`."""
    _versions("job", job_id, json_output, paths)


@jobs_app.command("show")
def jobs_show(
    job_id: str = typer.Argument(..., help="The job's id."),
    version: str | None = typer.Option(None, "--version", help="A version (default: the latest)."),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
    paths: list[Path] | None = typer.Option(None, "--definitions", "-d", help=PATHS_OPTION_HELP),
) -> None:
    """Show one job: its inputs, and its steps drawn as a graph."""
    from toolweave.registry.describe import job_dag_lines, param_line

    registry, job = _lookup(paths, "job", job_id, lambda r: r.job(job_id, version))
    if json_output:
        print_json({**job.dump(), "order": registry.topological_order(job)})
        return
    console.print(Text(f"{job.job_id} v{job.version} — {job.display_name}", style="bold"))
    if job.description:
        console.print(Text(job.description), soft_wrap=True)
    console.print(Text(f"command: /{job.command_name}"))
    for param in job.input_schema:
        console.print(Text(f"  input {param_line(param)}"), soft_wrap=True)
    for line in job_dag_lines(job):
        console.print(Text(line), soft_wrap=True)


def _layers(job: Any) -> str:
    """The steps by depth: ``source → thumbnail, vivid, mono → contact_sheet`` (parallel steps
    share a layer; a chain is one step a layer)."""
    deps = {s.step_id: [d for d in s.all_dependencies] for s in job.steps}
    depth: dict[str, int] = {}

    def of(step_id: str, seen: frozenset[str] = frozenset()) -> int:
        if step_id not in depth:
            depth[step_id] = 0 if step_id in seen else 1 + max(
                (of(d, seen | {step_id}) for d in deps.get(step_id, []) if d in deps), default=-1)
        return depth[step_id]

    layers: dict[int, list[str]] = {}
    for step in job.steps:
        layers.setdefault(of(step.step_id), []).append(step.step_id)
    return " → ".join(", ".join(layers[d]) for d in sorted(layers))


def _summary(text: str | None, limit: int = 60) -> str:
    """A description's first sentence, at most ``limit`` characters (``tools show`` has it whole)."""
    first = " ".join((text or "").split())
    for end in (". ", "? ", "! "):
        if end in first:
            first = first.split(end, 1)[0] + end.strip()
            break
    return first if len(first) <= limit else first[: limit - 1].rstrip() + "…"


def _listing(title: str, rows: list[dict[str, str]], *, narrow: tuple[str, ...]) -> Table | Text:
    """A table of ``rows``; on a terminal narrower than 120 columns (or piped at 80) only the
    ``narrow`` columns, so ids are never cut (``show ID`` and ``--json`` have the rest). No rows:
    the title alone (``0 jobs``), not an empty table."""
    if not rows:
        return Text(title)
    columns = list(rows[0]) if rows else list(narrow)
    if console.width < 120:
        columns = [c for c in columns if c in narrow]
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, no_wrap=column in ("id", "command"), overflow="fold")
    for row in rows:
        table.add_row(*(Text(row[c]) for c in columns))
    return table
