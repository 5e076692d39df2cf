"""A ComfyUI tool's workflow as the ComfyUI services read it: the workflow (API format) a tool
names, where its inputs go (``metadata.inputMap``, or the ComfyUI Deploy ``External*`` nodes) and
whether a server's node types fit it; the outputs picked from a prompt's history
(``metadata.outputMap``, or by type). ``comfyui`` and ``comfydeploy`` both use them.
"""

from __future__ import annotations

import copy
import json
import mimetypes
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolweave import comfy
from toolweave.files import read_regular_file
from toolweave.model.definitions import ParamType, ToolDefinition
from toolweave.services.base import ServiceError

EXTERNAL_PREFIX = "ComfyUIDeployExternal"
MAX_WORKFLOW_BYTES = 32 * 1024 * 1024
"""The largest workflow file (``metadata.workflow`` as a path) a worker reads, as for definition files."""


# --- workflow inputs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class InputTarget:
    node: str
    input: str


def load_workflow(tool: ToolDefinition) -> dict[str, Any]:
    """The tool's API-format workflow (a deep copy), from ``metadata.workflow``."""
    spec = tool.metadata.get("workflow")
    if isinstance(spec, str):
        path = Path(spec)
        if not path.is_absolute() and tool.source:
            path = Path(tool.source).parent / path
        try:
            data = json.loads(read_regular_file(path, MAX_WORKFLOW_BYTES))
        except OSError as exc:
            raise ServiceError(
                f"tool {tool.tool_id}: cannot read workflow file {spec!r}: {exc.strerror or exc}"
            ) from exc
        except RecursionError:
            raise ServiceError(f"tool {tool.tool_id}: workflow file {spec!r} is nested too deeply") from None
        except ValueError as exc:
            raise ServiceError(f"tool {tool.tool_id}: workflow file {spec!r} is not JSON: {exc}") from exc
    elif isinstance(spec, dict):
        data = copy.deepcopy(spec)
    else:
        raise ServiceError(
            f"tool {tool.tool_id}: metadata.workflow must be an API-format workflow or a file path"
        )
    if (
        not isinstance(data, dict)
        or not data
        or not all(isinstance(node, dict) and "class_type" in node for node in data.values())
    ):
        raise ServiceError(
            f"tool {tool.tool_id}: the workflow is not in API format "
            "(a mapping of node id to {class_type, inputs}); export it with 'Save (API)'"
        )
    return data


def inline_workflow_problems(tool: ToolDefinition) -> list[tuple[str, str]]:
    """What is wrong with the shape of a workflow written into the tool (``metadata.workflow`` as
    an object; a file path is read at run time): not API format, links to missing nodes, links
    that form a cycle. Checked at registration, so that such a tool is refused, not failed at
    every run."""
    spec = tool.metadata.get("workflow")
    if spec is None or isinstance(spec, str):
        return []
    try:
        workflow = load_workflow(tool)
        from toolweave.comfy.shape import MAX_NODES, check_links

        if len(workflow) > MAX_NODES:
            return [("metadata.workflow", f"the workflow has more than {MAX_NODES:,} nodes")]
        check_links(workflow)
    except (ServiceError, comfy.WorkflowImportError) as exc:
        return [("metadata.workflow", exc.message)]
    return []


def workflow_problems(tool: ToolDefinition, object_info: comfy.ObjectInfo) -> list[tuple[str, str]]:
    """Why a server with this ``/object_info`` would refuse the tool's workflow, as ``(path,
    sentence)`` pairs: node classes it lacks, required inputs missing, links of the wrong type.
    ``toolweave validate --object-info`` uses it so that this shows before a run, not during."""
    try:
        workflow = load_workflow(tool)
    except ServiceError as exc:
        return [("metadata.workflow", exc.message)]
    where = object_info.source or "the server"
    found = []
    for problem in comfy.check_prompt(workflow, object_info):
        node, sep, rest = problem.partition(": unknown node class ")
        if sep:
            found.append(("metadata.workflow", f"{node} uses {rest}, which {where} does not have"))
        else:
            found.append(("metadata.workflow", f"{problem} (checked against {where})"))
    return found


def external_input_map(workflow: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Inputs declared by ComfyUI Deploy ``External*`` nodes: ``input_id`` → inputMap targets.

    The node input each value goes into is the importer's (``toolweave.comfy.EXTERNAL_KINDS``),
    so a tool without an ``inputMap`` behaves as if it had been imported.
    """
    found: dict[str, list[dict[str, Any]]] = {}
    for node_id, node in workflow.items():
        class_type = str(node.get("class_type", ""))
        if not class_type.startswith(EXTERNAL_PREFIX):
            continue
        input_id = (node.get("inputs") or {}).get("input_id")
        if not isinstance(input_id, str) or not input_id:
            continue
        kind = comfy.EXTERNAL_KINDS.get(class_type)
        target: dict[str, Any] = {"node": str(node_id), "input": kind.target if kind else "input_id"}
        if kind is not None and kind.encode:
            target["encode"] = kind.encode
        found.setdefault(input_id.strip(), []).append(target)
    return found


def input_map(tool: ToolDefinition, workflow: Mapping[str, Any]) -> dict[str, list[InputTarget]]:
    """``metadata.inputMap`` normalised to lists of targets, or the External* nodes' map.

    Values are written by ``toolweave.comfy.apply_inputs`` (which also honours ``encode: json``).
    """
    raw = tool.metadata.get("inputMap")
    if raw is None:
        raw = external_input_map(workflow)
    if not isinstance(raw, dict):
        raise ServiceError(f"tool {tool.tool_id}: metadata.inputMap must map input names to {{node, input}}")
    out: dict[str, list[InputTarget]] = {}
    for name, spec in raw.items():
        specs = spec if isinstance(spec, list) else [spec]
        targets = []
        for item in specs:
            if not isinstance(item, dict) or "node" not in item or "input" not in item:
                raise ServiceError(
                    f"tool {tool.tool_id}: inputMap.{name} must be {{node: <id>, input: <name>}}"
                )
            targets.append(InputTarget(str(item["node"]), str(item["input"])))
        out[str(name)] = targets
    return out


# --- outputs ---------------------------------------------------------------------------------------


@dataclass
class OutputItem:
    """One item a workflow produced: a file on the server (or at a URL), or a text."""

    node: str
    kind: str
    media: str
    """image, video, audio, file or text."""
    item: Any
    output_id: str | None = None
    temp: bool = False


def media_of(kind: str, item: Any) -> str:
    if kind in ("text", "text_file") and isinstance(item, str):
        return "text"
    if not isinstance(item, dict):
        return "text" if isinstance(item, str) else "other"
    fmt = str(item.get("format") or item.get("type") or "")
    if "/" in fmt:
        major = fmt.split("/", 1)[0]
        if major in ("image", "video", "audio"):
            return "image" if fmt == "image/gif" or major == "image" else major
    name = str(item.get("filename") or item.get("url") or "").split("?", 1)[0]
    guessed, _ = mimetypes.guess_type(name)
    if guessed:
        major = guessed.split("/", 1)[0]
        if major in ("image", "video", "audio"):
            return major
    if kind == "audio":
        return "audio"
    return "file"


def items_from_history(outputs: Mapping[str, Any]) -> list[OutputItem]:
    """Every item of a ComfyUI history ``outputs`` map, saved outputs before temp previews."""
    items: list[OutputItem] = []

    def order(node_id: str) -> tuple[int, ...]:
        try:
            return tuple(int(p) for p in node_id.split(":"))
        except ValueError:
            return (1 << 30,)

    for node_id in sorted(outputs, key=order):
        node_out = outputs[node_id]
        if not isinstance(node_out, dict):
            continue
        for kind, values in node_out.items():
            if kind == "animated" or not isinstance(values, list):
                continue
            for value in values:
                if isinstance(value, bool) or not isinstance(value, (dict, str)):
                    continue
                media = media_of(kind, value)
                if media == "other":
                    continue
                temp = isinstance(value, dict) and value.get("type") == "temp"
                output_id = value.get("output_id") if isinstance(value, dict) else None
                items.append(OutputItem(str(node_id), kind, media, value, output_id, temp))
    items.sort(key=lambda i: i.temp)
    return items


_PARAM_MEDIA = {
    ParamType.IMAGE: ("image",),
    ParamType.VIDEO: ("video",),
    ParamType.AUDIO: ("audio",),
    ParamType.FILE: ("file", "image", "video", "audio"),
    ParamType.STRING: ("text",),
    ParamType.TEXT: ("text",),
    ParamType.JSON: ("text",),
}


def select_outputs(items: list[OutputItem], tool: ToolDefinition) -> dict[str, OutputItem | list[OutputItem]]:
    """Name the items per ``metadata.outputMap``, else per the outputSchema's types.

    Raises a non-retryable ``ServiceError`` naming the output when one the tool declares was
    not produced. A tool without outputs declared gets ``image``/``video``/``audio``/``text``
    (the first of each) and ``images``/``videos``/``audios``/``texts`` (all of them).
    """
    output_map = tool.metadata.get("outputMap")
    chosen: dict[str, OutputItem | list[OutputItem]] = {}
    if isinstance(output_map, dict) and output_map:
        for name, spec in output_map.items():
            if not isinstance(spec, dict):
                raise ServiceError(f"tool {tool.tool_id}: outputMap.{name} must be {{node, kind}}")
            node = spec.get("node")
            kind = spec.get("kind")
            output_id = spec.get("outputId")
            matches = [
                i
                for i in items
                if (node is None or i.node == str(node))
                and (kind in (None, "*") or i.kind == kind or i.media == kind)
                and (output_id is None or i.output_id == output_id)
            ]
            if not matches:
                where = f"node {node}" if node is not None else f"output {output_id or kind}"
                raise ServiceError(
                    f"output {name!r}: {where} produced no {kind or 'items'}",
                    code="missing_output",
                    node=str(node) if node is not None else None,
                )
            chosen[str(name)] = matches if spec.get("all") else matches[0]
        return chosen
    if tool.output_schema:
        used: set[int] = set()
        for param in tool.output_schema:
            wanted = _PARAM_MEDIA.get(param.type, ("text",))
            pick = next((n for n, i in enumerate(items) if n not in used and i.media in wanted), None)
            if pick is None:
                raise ServiceError(
                    f"output {param.name!r}: the workflow produced no {param.type.value}",
                    code="missing_output",
                )
            used.add(pick)
            chosen[param.name] = items[pick]
        return chosen
    for media in ("image", "video", "audio", "text", "file"):
        of_kind = [i for i in items if i.media == media]
        if of_kind:
            chosen[media] = of_kind[0]
            chosen[media + "s"] = of_kind
    return chosen
