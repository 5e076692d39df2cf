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


# --- api: serve, keys ------------------------------------------------------------------------


# --- telegram --------------------------------------------------------------------------------


def main() -> None:
    app()


if __name__ == "__main__":
    main()
