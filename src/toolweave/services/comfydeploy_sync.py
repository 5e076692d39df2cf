"""``toolweave sync comfydeploy``: a tool definition per ComfyUI Deploy deployment (from its
workflow graph when the importer can read it, else from its declared input and output types),
written to a folder in files marked as synced; files without the marker are never touched.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolweave.model.definitions import ToolDefinition
from toolweave.services.comfydeploy import ComfyDeployService

SYNC_MARKER = "# Synced from ComfyUI Deploy deployment "
"""First line of every file ``sync_deployments`` writes; files without it are never touched."""

_OUTPUT_CLASSES = {
    "ComfyDeployOutputImage": "image",
    "ComfyDeployOutputEXR": "image",
    "ComfyDeployOutputText": "file",
    "ComfyDeployOutputFile": "file",
    "SaveImage": "image",
    "VHS_VideoCombine": "video",
    "SaveVideo": "video",
    "SaveAudio": "audio",
    "PreviewAny": "text",
}


@dataclass
class SyncReport:
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """``"<deployment id>: <reason>"`` for deployments no tool could be built from."""


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:48] or "deployment"


def _from_types(deployment: Mapping[str, Any], tool_id: str, name: str) -> ToolDefinition:
    """A tool from the deployment's ``input_types`` / ``output_types`` (no workflow needed)."""
    from toolweave.comfy import EXTERNAL_KINDS

    inputs = []
    for order, spec in enumerate(deployment.get("input_types") or []):
        if not isinstance(spec, dict) or not spec.get("input_id"):
            continue
        kind = EXTERNAL_KINDS.get(str(spec.get("class_type")))
        param: dict[str, Any] = {
            "name": str(spec["input_id"]),
            "type": kind.type.value if kind else "string",
            "order": order,
            "description": str(spec.get("description") or ""),
        }
        if spec.get("display_name"):
            param["displayName"] = str(spec["display_name"])
        if spec.get("enum_options"):
            param["type"], param["enum"] = "enum", list(spec["enum_options"])
        default = spec.get("default_value")
        if default not in (None, "") and not (kind and kind.type.is_media):
            param["default"] = default
        elif kind and kind.type.is_media:
            param["required"] = True
        for key, target in (("min_value", "minimum"), ("max_value", "maximum")):
            if isinstance(spec.get(key), (int, float)):
                param[target] = spec[key]
        inputs.append(param)
    outputs = []
    output_map: dict[str, Any] = {}
    for spec in deployment.get("output_types") or []:
        if isinstance(spec, dict) and spec.get("output_id"):
            out = str(spec["output_id"])
            outputs.append({"name": out, "type": _OUTPUT_CLASSES.get(str(spec.get("class_type")), "file")})
            output_map[out] = {"outputId": out}
    if not outputs:
        outputs = [{"name": "image", "type": "image"}]
    metadata: dict[str, Any] = {"deploymentId": str(deployment["id"])}
    if output_map:
        metadata["outputMap"] = output_map
    return ToolDefinition.model_validate(
        {
            "toolId": tool_id,
            "service": "comfydeploy",
            "displayName": name,
            "description": str(deployment.get("description") or ""),
            "inputSchema": inputs,
            "outputSchema": outputs,
            "metadata": metadata,
        }
    )


def tool_for_deployment(deployment: Mapping[str, Any], tool_id: str) -> ToolDefinition:
    """A tool for one deployment: from its workflow graph when the importer can read it, else
    from the deployment's declared input and output types. Raises ``ValueError`` with a reason."""
    from toolweave.comfy import WorkflowImportError, tool_from_workflow

    deployment_id = str(deployment.get("id") or "")
    if not deployment_id:
        raise ValueError("the deployment has no id")
    workflow_info = deployment.get("workflow") if isinstance(deployment.get("workflow"), dict) else {}
    assert isinstance(workflow_info, dict)
    name = str(workflow_info.get("name") or deployment.get("name") or deployment_id)
    version = deployment.get("version") if isinstance(deployment.get("version"), dict) else {}
    assert isinstance(version, dict)
    graph = version.get("workflow") or version.get("workflow_api")
    problem = "its version carries no workflow"
    if isinstance(graph, dict) and graph:
        try:
            tool = tool_from_workflow(
                graph,
                service="comfydeploy",
                object_info=None,
                tool_id=tool_id,
                deployment_id=deployment_id,
                name=name,
            )
            if deployment.get("description") and not tool.description:
                tool.description = str(deployment["description"])
            return tool
        except WorkflowImportError as exc:
            problem = f"its workflow could not be imported ({exc.reason}: {exc})"
    if deployment.get("input_types") is not None or deployment.get("output_types"):
        return _from_types(deployment, tool_id, name)
    raise ValueError(problem)


async def sync_deployments(
    service: ComfyDeployService,
    folder: Path,
    *,
    environment: str | None = "production",
    dry_run: bool = False,
) -> SyncReport:
    """List the account's deployments and write their tool definitions (``write_synced_tools``)."""
    deployments = await service.list_deployments()
    return write_synced_tools(deployments, folder, environment=environment, dry_run=dry_run)


def write_synced_tools(
    deployments: list[dict[str, Any]],
    folder: Path,
    *,
    environment: str | None = "production",
    dry_run: bool = False,
) -> SyncReport:
    """Write, refresh and remove one YAML tool definition per deployment.

    A synced file keeps its ``toolId`` across renames of the workflow (ids are stable); files that
    do not start with ``SYNC_MARKER`` are never changed or removed.
    """
    import yaml

    report = SyncReport()
    if environment:
        deployments = [d for d in deployments if d.get("environment") in (None, environment)]
    existing: dict[str, Path] = {}
    if folder.is_dir():
        for candidate in sorted(folder.glob("*.yaml")):
            first = candidate.read_text(encoding="utf-8").split("\n", 1)[0]
            if first.startswith(SYNC_MARKER):
                existing[first[len(SYNC_MARKER) :].split(" ", 1)[0]] = candidate
    seen: set[str] = set()
    for deployment in deployments:
        deployment_id = str(deployment.get("id") or "")
        seen.add(deployment_id)
        path = existing.get(deployment_id)
        tool_id = None
        if path is not None:
            old = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            tool_id = old.get("toolId") if isinstance(old, dict) else None
        if not tool_id:
            workflow_info = deployment.get("workflow") if isinstance(deployment.get("workflow"), dict) else {}
            label = (workflow_info or {}).get("name") or deployment.get("name") or deployment_id
            tool_id = f"cd-{_slug(str(label))}"
        try:
            tool = tool_for_deployment(deployment, str(tool_id))
        except ValueError as exc:
            report.skipped.append(f"{deployment_id}: {exc}")
            continue
        body = (
            f"{SYNC_MARKER}{deployment_id} by `toolweave sync comfydeploy`; local edits are overwritten.\n"
            + yaml.safe_dump(tool.dump(), sort_keys=False, allow_unicode=True, width=100)
        )
        target = path or folder / f"{tool.tool_id}.yaml"
        if target.exists() and target.read_text(encoding="utf-8") == body:
            report.unchanged.append(str(target))
            continue
        if not dry_run:
            folder.mkdir(parents=True, exist_ok=True)
            target.write_text(body, encoding="utf-8")
        report.written.append(str(target))
    for deployment_id, stale in existing.items():
        if deployment_id not in seen:
            if not dry_run:
                stale.unlink()
            report.removed.append(str(stale))
    return report
