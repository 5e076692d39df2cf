"""``toolweave import comfyui``, ``toolweave import predecessor`` and ``toolweave sync comfydeploy``:
tool definitions written from ComfyUI workflows, from the predecessor's tool definitions, and from a
ComfyUI Deploy account's deployments."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import typer
from rich.text import Text

from toolweave.cli.common import console, err_console, load_settings

import_app = typer.Typer(no_args_is_help=True, help="Import workflows as tool definitions.")
sync_app = typer.Typer(no_args_is_help=True, help="Refresh tool definitions from a backend account.")


def _yaml(data: Any) -> str:
    """YAML as a person writes it: key order kept, multi-line text as blocks (PyYAML is loaded
    here, not when the command line starts)."""
    import yaml

    class _Dumper(yaml.SafeDumper):
        pass

    def _block_strings(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)

    _Dumper.add_representer(str, _block_strings)
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


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
    import asyncio  # (in the commands, not with the module: not for --help)

    from toolweave.comfy import ObjectInfo, WorkflowImportError, parse_workflow, tool_from_workflow

    try:
        from toolweave.registry.loader import read_definition_text

        try:  # bounded, and refusing a pipe or device (which would block or never end)
            text = read_definition_text(workflow_file)
        except UnicodeDecodeError as exc:
            raise WorkflowImportError("invalid_json", f"{workflow_file} is not UTF-8 text (byte {exc.start})") from None
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
    body = header + _yaml(tool.dump())
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


@import_app.command("predecessor")
def import_predecessor(
    files: list[Path] = typer.Argument(..., help="The predecessor's tool definition files (JSON)."),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="A folder to write one YAML file per definition into (default: stdout, one YAML list)."
    ),
) -> None:
    """Convert the predecessor's tool definitions; say on stderr what changed and what was not kept."""
    import json

    from toolweave.registry.loader import read_definition_text
    from toolweave.registry.predecessor import ConversionError, convert

    failed = 0
    written: list[tuple[str, dict[str, Any], list[str]]] = []
    for path in files:
        try:
            conversion = convert(json.loads(read_definition_text(path)), path.name)
        except RecursionError:
            err_console.print(Text(f"error: {path}: not JSON (nested too deeply to read)", style="red"))
            failed += 1
            continue
        except OSError as exc:
            err_console.print(Text(f"error: cannot read {path}: {exc.strerror or exc}", style="red"))
            failed += 1
            continue
        except ValueError as exc:  # not JSON, or ConversionError
            reason = str(exc) if isinstance(exc, ConversionError) else f"not JSON ({exc})"
            err_console.print(Text(f"error: {path}: {reason}", style="red"))
            failed += 1
            continue
        for note in conversion.notes:
            err_console.print(Text(f"{path.name}: {note}"))
        written.extend((path.name, definition, conversion.notes) for definition in conversion.definitions)
    if output is None:
        if written:
            sources = sorted({source for source, _, _ in written})
            typer.echo(f"# Converted from {', '.join(sources)} by `toolweave import predecessor`.\n"
                       + _yaml([definition for _, definition, _ in written]), nl=False)
    for source, definition, notes in written if output is not None else []:
        assert output is not None
        target = output / f"{definition.get('toolId') or definition.get('jobId')}.yaml"
        header = f"# Converted from {source} by `toolweave import predecessor`.\n" + "".join(f"# - {n}\n" for n in notes)
        try:
            output.mkdir(parents=True, exist_ok=True)
            target.write_text(header + _yaml(definition), encoding="utf-8")
        except OSError as exc:
            err_console.print(Text(f"error: cannot write {target}: {exc.strerror or exc}", style="red"))
            raise typer.Exit(1) from None
        err_console.print(Text(f"wrote {target}"))
    if failed:
        raise typer.Exit(1)


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

    import httpx

    from toolweave.services.base import ServiceError, ServiceHost
    from toolweave.services.comfydeploy import ComfyDeployService
    from toolweave.services.comfydeploy_sync import SyncReport, sync_deployments

    settings = load_settings()

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
