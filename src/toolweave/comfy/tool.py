"""A ComfyUI workflow → a ``ToolDefinition`` (its inputs from ``inputs``, its description and
hints from ``notes``, what is known of node classes in ``nodes``), and the two helpers the service
adapters call.

What an imported tool holds (see ``docs/comfyui.md``):

- ``service``: ``comfyui`` (native server API) or ``comfydeploy``;
- ``metadata.workflow``: the API prompt; ``metadata.deploymentId`` for ComfyUI Deploy;
- ``metadata.inputMap``: ``{input name: {"node": api node id, "input": input name}}``, or a list of
  such targets when one value goes to several places; a target may carry ``"encode": "json"`` (a
  list value is then written as a JSON string);
- ``metadata.outputMap``: ``{output name: {"node": api node id, "kind": history output key}}``;
  ``kind`` ``"*"`` takes every list the node reports.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from toolweave.comfy.convert import to_api, workflow_format
from toolweave.comfy.errors import WorkflowImportError
from toolweave.comfy.inputs import _external_inputs, _native_inputs
from toolweave.comfy.nodes import (
    OUTPUT_KINDS,
    OutputKind,
    _custom_title,
    _guess_output,
    _id_key,
    _literal,
    _slug,
    _unique,
)
from toolweave.comfy.notes import notes_of
from toolweave.comfy.objectinfo import ObjectInfo
from toolweave.model.definitions import InputParam, OutputParam, ParamType, PlatformHints, ToolDefinition

SERVICES = ("comfyui", "comfydeploy")


# --- outputs -------------------------------------------------------------------------------------


def _outputs(prompt: Mapping[str, Any], object_info: ObjectInfo) -> tuple[list[OutputParam], dict[str, Any]]:
    """Output nodes become outputs, named by their ``output_id`` (ComfyUI Deploy), else by their
    title when a person gave one (like inputs), else by their type."""
    found: list[tuple[str, OutputKind, str | None]] = []
    for nid in sorted(prompt, key=_id_key):
        kind_name = str(prompt[nid].get("class_type"))
        if not object_info.is_output_node(kind_name):
            continue
        kind = OUTPUT_KINDS[kind_name] if kind_name in OUTPUT_KINDS else _guess_output(kind_name)
        if kind is None:
            continue
        output_id = _literal((prompt[nid].get("inputs") or {}).get("output_id"))
        given: str | None = None
        if isinstance(output_id, str) and output_id.strip():
            given = output_id.strip()
        else:
            custom = _custom_title(prompt[nid], object_info)
            given = _slug(custom) if custom and _slug(custom) else None
        found.append((nid, kind, given))
    if any(not k.preview for _, k, _ in found):
        found = [f for f in found if not f[1].preview]
    per_type: dict[ParamType, int] = {}
    for _, kind, named in found:
        if named is None:
            per_type[kind.type] = per_type.get(kind.type, 0) + 1
    params: list[OutputParam] = []
    output_map: dict[str, Any] = {}
    for nid, kind, named in found:
        if named is not None:
            name = named
        elif per_type[kind.type] == 1:
            name = kind.type.value
        else:
            name = f"{kind.type.value}_{_slug(nid)}"
        name = _unique(name, set(output_map), nid)
        label = object_info.display_name(str(prompt[nid]["class_type"]))
        title = (prompt[nid].get("_meta") or {}).get("title") or label
        params.append(OutputParam(name=name, type=kind.type, description=f"{title} (node {nid})"))
        output_map[name] = {"node": nid, "kind": kind.kind}
    return params, output_map


# --- category and primary input -------------------------------------------------------------------


def _primary_input(inputs: list[InputParam]) -> str | None:
    for preferred in ("input_image", "init_image", "image"):
        if any(p.name == preferred for p in inputs):
            return preferred
    media = [p for p in inputs if p.type.is_media]
    required_media = [p for p in media if p.required]
    if required_media:
        return required_media[0].name
    texts = [p for p in inputs if p.type in (ParamType.TEXT, ParamType.STRING)]
    for p in texts:
        if "prompt" in p.name.lower() and "negative" not in p.name.lower():
            return p.name
    if texts:
        return texts[0].name
    if media:
        return media[0].name
    return inputs[0].name if inputs else None


def _medium(ptype: ParamType) -> str:
    if ptype in (ParamType.IMAGE, ParamType.VIDEO, ParamType.AUDIO):
        return ptype.value
    if ptype is ParamType.FILE:
        return "file"
    return "text"


def _category(inputs: list[InputParam], primary: str | None, outputs: list[OutputParam]) -> str:
    source = "text"
    required_media = [p for p in inputs if p.type.is_media and p.required]
    if required_media:
        source = _medium(required_media[0].type)
    elif primary is not None:
        param = next(p for p in inputs if p.name == primary)
        if param.type.is_media:
            source = _medium(param.type)
    target = _medium(outputs[0].type) if outputs else "text"
    return f"{source}-to-{target}"


# --- the tool ------------------------------------------------------------------------------------


def _derive_tool_id(name: str | None) -> str:
    slug = _slug(name or "", "-")
    return f"comfy-{slug}" if slug else "comfy-workflow"


def tool_from_workflow(
    workflow: dict[str, Any],
    *,
    service: str,
    object_info: ObjectInfo | None,
    tool_id: str | None = None,
    deployment_id: str | None = None,
    name: str | None = None,
) -> ToolDefinition:
    """Build a tool definition (for a person to review) from a UI- or API-format workflow.

    ``object_info`` is the target server's (``None``: the captured ComfyUI 0.3.64 one); the
    comfyui-deploy custom nodes are known in any case. Raises ``WorkflowImportError``.
    """
    if service not in SERVICES:
        raise WorkflowImportError(
            "invalid_arguments", f"service must be one of {', '.join(SERVICES)}, not {service!r}"
        )
    if service == "comfydeploy" and not deployment_id:
        raise WorkflowImportError(
            "missing_deployment_id", "a comfydeploy tool needs the deployment id (--deployment-id) to run"
        )
    workflow_format(workflow)  # refuses what is neither format before loading anything
    info = (object_info or ObjectInfo.default()).with_fallback(ObjectInfo.comfydeploy_nodes())
    prompt = to_api(workflow, info)
    api_nodes = sorted({n["class_type"] for n in prompt.values() if info.is_api_node(n["class_type"])})
    if api_nodes:
        raise WorkflowImportError(
            "api_nodes",
            "the workflow uses partner API nodes, which need a Comfy.org account key toolweave does not "
            "pass to servers: " + ", ".join(api_nodes),
            classes=api_nodes,
        )
    output_params, output_map = _outputs(prompt, info)
    if not output_params:
        raise WorkflowImportError(
            "no_outputs", "the workflow has no output node whose results a tool could return (SaveImage, …)"
        )
    inputs = _external_inputs(prompt)
    if not inputs and service == "comfyui":
        inputs = _native_inputs(prompt, info)
    input_params: list[InputParam] = []
    for order, item in enumerate(inputs):
        item.param.order = order
        input_params.append(item.param)
    description, delivery_hints = notes_of(workflow)
    primary = _primary_input(input_params)
    metadata: dict[str, Any] = {}
    if deployment_id:
        metadata["deploymentId"] = deployment_id
    metadata["workflow"] = prompt
    metadata["inputMap"] = {item.param.name: item.map_entry() for item in inputs}
    metadata["outputMap"] = output_map
    uses_deploy_nodes = sorted(
        {
            n["class_type"]
            for n in prompt.values()
            if str(n["class_type"]).startswith(("ComfyUIDeploy", "ComfyDeploy"))
        }
    )
    if uses_deploy_nodes:
        metadata["customNodes"] = ["comfyui-deploy"]
    tid = tool_id or _derive_tool_id(name)
    try:
        return ToolDefinition(
            tool_id=tid,
            service=service,
            display_name=name or tid,
            description=description,
            input_schema=input_params,
            output_schema=output_params,
            platform_hints=PlatformHints(
                primary_input=primary, category=_category(input_params, primary, output_params)
            ),
            delivery_hints=delivery_hints,
            metadata=metadata,
        )
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise WorkflowImportError("invalid_inputs", f"the imported definition is not valid: {exc}") from None


# --- helpers for the service adapters ------------------------------------------------------------


def apply_inputs(
    workflow: Mapping[str, Any], input_map: Mapping[str, Any], values: Mapping[str, Any]
) -> dict[str, Any]:
    """A new API prompt with ``values`` (tool input name → value) written where ``input_map`` says.

    Values are written as given, except that ``None`` leaves the workflow's own value in place,
    lists are wrapped as ``{"__value__": [...]}`` (a bare list means a link to the server), and
    entries marked ``"encode": "json"`` receive a JSON string. Media values must already be
    strings: the uploaded file name (``"subfolder/name.png"``) for loader inputs such as LoadImage's
    ``image``, a URL (http(s) or ``data:``) for External* nodes.
    Raises ``ValueError`` naming an unknown input or a map entry that points nowhere.
    """
    prompt = copy.deepcopy(dict(workflow))
    for name, value in values.items():
        entry = input_map.get(name)
        listed: list[Any] = entry if isinstance(entry, list) else [entry]
        targets = [t for t in listed if isinstance(t, Mapping)]
        if not targets or len(targets) != len(listed):
            raise ValueError(f"input {name!r} is not in the tool's inputMap")
        if value is None:
            continue
        for target in targets:
            node_id, input_name = str(target.get("node")), target.get("input")
            node = prompt.get(node_id)
            if not isinstance(node, dict) or not isinstance(input_name, str):
                raise ValueError(f"inputMap entry for {name!r} points at missing node {node_id!r}")
            written = (
                json.dumps(value) if target.get("encode") == "json" and not isinstance(value, str) else value
            )
            node.setdefault("inputs", {})[input_name] = (
                {"__value__": written} if isinstance(written, list) else written
            )
    return prompt


def extract_outputs(
    history_outputs: Mapping[str, Any], output_map: Mapping[str, Any]
) -> dict[str, list[dict[str, Any]]]:
    """Tool outputs from ComfyUI history ``outputs`` (node id → {kind: [items]}).

    Every tool output gets a list (empty when its node reported nothing). File items are the
    server's dicts (``filename``, ``subfolder``, ``type``…) with ``animated: true`` added when the
    node flagged them; text items become ``{"text": "..."}``.
    """
    result: dict[str, list[dict[str, Any]]] = {}
    for name, entry in output_map.items():
        node_output = history_outputs.get(str(entry.get("node"))) if isinstance(entry, Mapping) else None
        items: list[dict[str, Any]] = []
        if isinstance(node_output, Mapping):
            kind = entry.get("kind", "*")
            kinds = [k for k in node_output if k != "animated"] if kind == "*" else [kind]
            animated = node_output.get("animated")
            for key in kinds:
                values = node_output.get(key)
                if not isinstance(values, list):
                    continue
                for index, item in enumerate(values):
                    if isinstance(item, Mapping):
                        converted = dict(item)
                        if isinstance(animated, list) and index < len(animated) and animated[index] is True:
                            converted["animated"] = True
                    elif isinstance(item, str):
                        converted = {"text": item}
                    else:
                        converted = {"value": item}
                    items.append(converted)
        result[name] = items
    return result
