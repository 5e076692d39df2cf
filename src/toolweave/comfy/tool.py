"""A ComfyUI workflow → a ``ToolDefinition``, and the two helpers the service adapters call.

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
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from toolweave.comfy.check import reachable_from_outputs
from toolweave.comfy.convert import NOTE_TYPES, to_api, workflow_format
from toolweave.comfy.errors import WorkflowImportError
from toolweave.comfy.objectinfo import ObjectInfo
from toolweave.model.definitions import (
    InputParam,
    OutputParam,
    ParamType,
    PlatformHints,
    ToolDefinition,
)

SERVICES = ("comfyui", "comfydeploy")
EXTERNAL_PREFIX = "ComfyUIDeployExternal"


# --- External* input nodes ------------------------------------------------------------------------


@dataclass(frozen=True)
class ExternalKind:
    """How one ComfyUI Deploy External* class becomes a tool input."""

    type: ParamType
    target: str
    """The node input a value is written into on a native server (the node's ``run()`` reads it)."""
    default_from: str | None = "default_value"
    bounds: bool = False
    encode: str | None = None
    accepts_url: bool = False


EXTERNAL_KINDS: dict[str, ExternalKind] = {
    # run() returns default_value (Text, TextAny, Enum, Boolean, Seed, Checkpoint), or parses
    # input_id and falls back to default_value (the Number family): writing default_value leaves
    # input_id — the input's name — intact and works for both.
    "ComfyUIDeployExternalText": ExternalKind(ParamType.TEXT, "default_value"),
    "ComfyUIDeployExternalTextAny": ExternalKind(ParamType.TEXT, "default_value"),
    "ComfyUIDeployExternalEnum": ExternalKind(ParamType.ENUM, "default_value"),
    "ComfyUIDeployExternalBoolean": ExternalKind(ParamType.BOOLEAN, "default_value"),
    "ComfyUIDeployExternalSeed": ExternalKind(ParamType.SEED, "default_value", bounds=True),
    "ComfyUIDeployExternalCheckpoint": ExternalKind(ParamType.STRING, "default_value"),
    "ComfyUIDeployExternalNumber": ExternalKind(ParamType.NUMBER, "default_value"),
    "ComfyUIDeployExternalNumberInt": ExternalKind(ParamType.INTEGER, "default_value"),
    "ComfyUIDeployExternalNumberSlider": ExternalKind(ParamType.NUMBER, "default_value", bounds=True),
    "ComfyUIDeployExternalNumberSliderInt": ExternalKind(ParamType.INTEGER, "default_value", bounds=True),
    # Media: the value is a URL (http(s) or data:) the node downloads.
    "ComfyUIDeployExternalImage": ExternalKind(ParamType.IMAGE, "input_id", default_from="default_value_url"),
    "ComfyUIDeployExternalImageAlpha": ExternalKind(ParamType.IMAGE, "input_id", default_from=None),
    "ComfyUIDeployExternalVideo": ExternalKind(ParamType.VIDEO, "input_id", default_from=None),
    "ComfyUIDeployExternalAudio": ExternalKind(ParamType.AUDIO, "audio_file", default_from=None),
    "ComfyUIDeployExternalFile": ExternalKind(ParamType.FILE, "file_url", default_from=None),
    "ComfyUIDeployExternalEXR": ExternalKind(ParamType.FILE, "exr_file", default_from=None),
    "ComfyUIDeployExternalImageBatch": ExternalKind(
        ParamType.JSON, "images", default_from="images", encode="json"
    ),
    "ComfyUIDeployExternalLora": ExternalKind(
        ParamType.STRING, "lora_url", default_from=None, accepts_url=True
    ),
    "ComfyUIDeployExternalFaceModel": ExternalKind(
        ParamType.STRING, "face_model_url", default_from=None, accepts_url=True
    ),
}

# --- native loaders and primitives (tools for the native server built from plain workflows) --------

LOADER_INPUTS: dict[str, tuple[str, ParamType]] = {
    "LoadImage": ("image", ParamType.IMAGE),
    "LoadImageMask": ("image", ParamType.IMAGE),
    "LoadVideo": ("file", ParamType.VIDEO),
    "LoadAudio": ("audio", ParamType.AUDIO),
}
PRIMITIVE_INPUTS: dict[str, ParamType] = {
    "PrimitiveString": ParamType.STRING,
    "PrimitiveStringMultiline": ParamType.TEXT,
    "PrimitiveInt": ParamType.INTEGER,
    "PrimitiveFloat": ParamType.NUMBER,
    "PrimitiveBoolean": ParamType.BOOLEAN,
}
PROMPT_ENCODERS = frozenset({"CLIPTextEncode"})

# --- outputs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputKind:
    kind: str
    """The key of the node's entry in ComfyUI history ``outputs`` (``images``, ``gifs``…; ``*`` = all)."""
    type: ParamType
    preview: bool = False


OUTPUT_KINDS: dict[str, OutputKind | None] = {
    "SaveImage": OutputKind("images", ParamType.IMAGE),
    "SaveAnimatedWEBP": OutputKind("images", ParamType.IMAGE),
    "SaveAnimatedPNG": OutputKind("images", ParamType.IMAGE),
    "ComfyDeployOutputImage": OutputKind("images", ParamType.IMAGE),
    "ComfyDeployOutputEXR": OutputKind("images", ParamType.IMAGE),
    "PreviewImage": OutputKind("images", ParamType.IMAGE, preview=True),
    "MaskPreview": OutputKind("images", ParamType.IMAGE, preview=True),
    "SaveVideo": OutputKind("images", ParamType.VIDEO),
    "SaveWEBM": OutputKind("images", ParamType.VIDEO),
    "VHS_VideoCombine": OutputKind("gifs", ParamType.VIDEO),
    "SaveAudio": OutputKind("audio", ParamType.AUDIO),
    "SaveAudioMP3": OutputKind("audio", ParamType.AUDIO),
    "SaveAudioOpus": OutputKind("audio", ParamType.AUDIO),
    "PreviewAudio": OutputKind("audio", ParamType.AUDIO, preview=True),
    "PreviewAny": OutputKind("text", ParamType.TEXT),
    "ComfyDeployOutputText": OutputKind("text_file", ParamType.FILE),
    "ComfyDeployOutputFile": OutputKind("*", ParamType.FILE),
    "Preview3D": OutputKind("*", ParamType.FILE, preview=True),
    "Preview3DAnimation": OutputKind("*", ParamType.FILE, preview=True),
    # Nodes that report nothing in history (they stream over the websocket).
    "SaveImageWebsocket": None,
    "ComfyDeployWebscoketImageOutput": None,
}


def _guess_output(class_type: str) -> OutputKind:
    lowered = class_type.lower()
    preview = lowered.startswith("preview")
    for word, kind in (("video", ParamType.VIDEO), ("audio", ParamType.AUDIO), ("image", ParamType.IMAGE)):
        if word in lowered:
            return OutputKind("*", kind, preview=preview)
    if "text" in lowered or "string" in lowered:
        return OutputKind("*", ParamType.TEXT, preview=preview)
    return OutputKind("*", ParamType.FILE, preview=preview)


# --- helpers -------------------------------------------------------------------------------------


def _slug(text: str, sep: str = "_") -> str:
    return re.sub(r"[^a-z0-9]+", sep, text.lower()).strip(sep)


def _id_key(node_id: str) -> tuple[int | str, ...]:
    return tuple(int(p) if p.isdigit() else p for p in node_id.split(":"))


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)


def _literal(value: Any) -> Any:
    if isinstance(value, Mapping) and set(value) == {"__value__"}:
        return value["__value__"]
    return value


def _unique(name: str, taken: set[str], node_id: str) -> str:
    if name not in taken:
        return name
    candidate = f"{name}_{_slug(node_id)}"
    n = 2
    while candidate in taken:
        candidate = f"{name}_{_slug(node_id)}_{n}"
        n += 1
    return candidate


def _custom_title(node: Mapping[str, Any], object_info: ObjectInfo) -> str | None:
    title = (node.get("_meta") or {}).get("title")
    kind = str(node.get("class_type"))
    if isinstance(title, str) and title.strip() and title not in (kind, object_info.display_name(kind)):
        return title.strip()
    return None


# --- description and delivery hints from notes ------------------------------------------------------

_BOT_LINE = re.compile(r"^\s*@bot\s+(?P<platform>[A-Za-z0-9_-]+)\s*(?P<params>.*)$")


def parse_bot_line(line: str) -> tuple[str, dict[str, Any]] | None:
    """``@bot telegram send-as=document,filename=x.png`` → ``("telegram", {"send-as": …, …})``."""
    match = _BOT_LINE.match(line)
    if match is None:
        return None
    params: dict[str, Any] = {}
    for part in re.split(r"[,\s]+", match["params"].strip()):
        if not part:
            continue
        key, sep, value = part.partition("=")
        params[key] = value if sep else True
    return match["platform"].lower(), params


def _note_position(node: Mapping[str, Any]) -> tuple[float, float]:
    pos = node.get("pos")
    try:
        if isinstance(pos, Mapping):
            return float(pos.get("1", 0)), float(pos.get("0", 0))
        if isinstance(pos, list | tuple) and len(pos) >= 2:
            return float(pos[1]), float(pos[0])
    except (TypeError, ValueError):
        pass
    return 0.0, 0.0


def notes_of(workflow: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The text of the top-level Note and MarkdownNote nodes (top to bottom) and the ``@bot`` hints."""
    if not isinstance(workflow.get("nodes"), list):
        return "", {}
    notes = [n for n in workflow["nodes"] if isinstance(n, Mapping) and n.get("type") in NOTE_TYPES]
    notes.sort(key=_note_position)
    texts: list[str] = []
    hints: dict[str, Any] = {}
    for note in notes:
        values = note.get("widgets_values")
        text = values[0] if isinstance(values, list) and values and isinstance(values[0], str) else ""
        kept: list[str] = []
        for line in text.splitlines():
            parsed = parse_bot_line(line)
            if parsed is None:
                kept.append(line)
            else:
                platform, params = parsed
                hints.setdefault(platform, {}).update(params)
        body = "\n".join(kept).strip()
        if body:
            texts.append(body)
    return "\n\n".join(texts), hints


# --- inputs --------------------------------------------------------------------------------------


@dataclass
class _Input:
    param: InputParam
    targets: list[dict[str, str]]
    encode: str | None = None

    def map_entry(self) -> dict[str, Any] | list[dict[str, Any]]:
        targets = [dict(t, encode=self.encode) if self.encode else dict(t) for t in self.targets]
        return targets[0] if len(targets) == 1 else targets


def _text(value: Any) -> str:
    value = _literal(value)
    return value.strip() if isinstance(value, str) else ""


def _number(value: Any) -> float | None:
    value = _literal(value)
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    try:
        return float(str(value))
    except ValueError:
        return None


def _enum_options(raw: Any) -> list[str]:
    raw = _literal(raw)
    if isinstance(raw, list):
        return [str(x) for x in raw]
    if not isinstance(raw, str) or not raw.strip():
        return []
    text = raw.strip()
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, list):
            return [str(x) for x in parsed]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if len(lines) == 1 and "," in lines[0]:
        lines = [p.strip() for p in lines[0].split(",") if p.strip()]
    return lines


def _external_inputs(prompt: Mapping[str, Any]) -> list[_Input]:
    found: dict[str, _Input] = {}
    for node_id in sorted(prompt, key=_id_key):
        node = prompt[node_id]
        kind_name = str(node.get("class_type"))
        if not kind_name.startswith(EXTERNAL_PREFIX):
            continue
        kind = EXTERNAL_KINDS.get(kind_name)
        if kind is None:
            raise WorkflowImportError(
                "unsupported_feature",
                f"node {node_id} is a {kind_name}, an External node toolweave does not map to a tool input",
                classes=[kind_name],
            )
        inputs = node.get("inputs") or {}
        input_id = _literal(inputs.get("input_id"))
        if not isinstance(input_id, str) or not input_id.strip():
            raise WorkflowImportError(
                "invalid_inputs", f"node {node_id} ({kind_name}) has no literal input_id naming its input"
            )
        name = input_id.strip()
        target = {"node": node_id, "input": kind.target}
        if name in found:
            existing = found[name]
            if existing.param.type != kind.type:
                raise WorkflowImportError(
                    "invalid_inputs",
                    f"input_id {name!r} is used by External nodes of different types "
                    f"({existing.param.type.value} and {kind.type.value})",
                )
            existing.targets.append(target)
            continue
        found[name] = _Input(_external_param(name, node_id, kind_name, kind, inputs), [target], kind.encode)
    return list(found.values())


def _external_param(
    name: str, node_id: str, kind_name: str, kind: ExternalKind, inputs: Mapping[str, Any]
) -> InputParam:
    fields: dict[str, Any] = {"name": name, "type": kind.type}
    display = _text(inputs.get("display_name"))
    if display:
        fields["display_name"] = display
    description = _text(inputs.get("description"))
    if description:
        fields["description"] = description
    default: Any = None
    raw_default = inputs.get(kind.default_from) if kind.default_from else None
    if raw_default is not None and not _is_link(raw_default):
        default = _literal(raw_default)
    if kind.type in (ParamType.NUMBER, ParamType.INTEGER, ParamType.SEED):
        number = _number(default)
        default = None if number is None else (int(number) if kind.type is not ParamType.NUMBER else number)
        if kind.type is ParamType.SEED and default is not None and default < 0:
            default = None  # -1: the node picks a random seed in [min_value, max_value]
    if kind.type is ParamType.BOOLEAN and default is not None:
        default = bool(default)
    if kind.bounds:
        low, high = _number(inputs.get("min_value")), _number(inputs.get("max_value"))
        if low is not None:
            fields["minimum"] = low
        if high is not None:
            fields["maximum"] = high
    if kind.type is ParamType.ENUM:
        options = _enum_options(inputs.get("options"))
        if options:
            fields["enum"] = options
            if default not in options:
                default = options[0]
        else:
            fields["type"] = ParamType.STRING
    if kind.type is ParamType.JSON and isinstance(default, str):
        try:
            default = json.loads(default)
        except json.JSONDecodeError:
            default = None
        if default == []:
            default = None
    if isinstance(default, str) and kind.type.is_media and not default.strip():
        default = None
    has_linked_default = any(_is_link(inputs.get(k)) for k in ("default_value", "default_image"))
    if kind.type.is_media:
        # A media input takes a URL by its nature; acceptsUrl is for string inputs only.
        fields["required"] = default is None and not has_linked_default
    if kind.accepts_url:
        fields["accepts_url"] = True
    if default is not None:
        fields["default"] = default
    return InputParam(**fields)


_UNBOUNDED = 2.0**53
"""Bounds at or beyond this are ``/object_info``'s way of saying "no bound" (e.g. ±2^63 - 1)."""


def _consumers(prompt: Mapping[str, Any], node_id: str) -> list[tuple[str, str]]:
    """``(class_type, input name)`` of every input linked to an output of ``node_id``."""
    found = []
    for nid in sorted(prompt, key=_id_key):
        for input_name, value in (prompt[nid].get("inputs") or {}).items():
            if _is_link(value) and value[0] == node_id:
                found.append((str(prompt[nid].get("class_type")), str(input_name)))
    return found


def _primitive_param(
    name: str, ptype: ParamType, value: Any, title: str | None, consumers: list[tuple[str, str]], info: ObjectInfo
) -> InputParam:
    """A primitive node's input, with the type, bounds and choices of the widgets it feeds: what
    the server would refuse (or silently clamp) at run time is refused when the run is submitted."""
    fields: dict[str, Any] = {"name": name, "type": ptype, "display_name": title}
    low: float | None = None
    high: float | None = None
    choices: list[Any] | None = None
    fed: list[str] = []
    for class_type, input_name in consumers:
        spec = info.input_spec(class_type, input_name)
        if spec is None:
            continue
        fed.append(f"{info.display_name(class_type)}.{input_name}")
        if spec.type == "INT" and ptype is ParamType.NUMBER:
            ptype = ParamType.INTEGER
        if spec.type == "COMBO" and spec.choices:
            allowed = [c for c in spec.choices if isinstance(c, str | int | float)]
            choices = allowed if choices is None else [c for c in choices if c in allowed]
        minimum, maximum = spec.options.get("min"), spec.options.get("max")
        if isinstance(minimum, int | float) and not isinstance(minimum, bool) and abs(minimum) < _UNBOUNDED:
            low = minimum if low is None else max(low, minimum)
        if isinstance(maximum, int | float) and not isinstance(maximum, bool) and abs(maximum) < _UNBOUNDED:
            high = maximum if high is None else min(high, maximum)
    fields["type"] = ptype
    default = _literal(value)
    if ptype in (ParamType.INTEGER, ParamType.NUMBER):
        if low is not None:
            fields["minimum"] = low
        if high is not None:
            fields["maximum"] = high
        if isinstance(default, int | float) and not isinstance(default, bool):
            if low is not None and default < low:
                default = low
            if high is not None and default > high:
                default = high
            if ptype is ParamType.INTEGER:
                default = int(default)
    if choices and ptype in (ParamType.STRING, ParamType.TEXT):
        fields["type"] = ParamType.ENUM
        fields["enum"] = choices
        if default not in choices:
            default = choices[0]
    fields["default"] = default
    if fed:
        fields["description"] = "Feeds " + ", ".join(fed) + "."
    return InputParam(**fields)


def _native_inputs(prompt: Mapping[str, Any], object_info: ObjectInfo) -> list[_Input]:
    """Inputs of a plain workflow for the native server: loaders, primitives, prompt encoders.

    Only nodes the server would execute count (output nodes and what they depend on): a loader
    whose output feeds nothing never runs, so it asks for nothing.
    """
    result: list[_Input] = []
    taken: set[str] = set()
    live = set(reachable_from_outputs(prompt, object_info))
    ordered = [nid for nid in sorted(prompt, key=_id_key) if nid in live]
    # 1. Files the workflow loads: the adapter uploads them and passes the uploaded name.
    loaders = [
        nid
        for nid in ordered
        if str(prompt[nid].get("class_type")) in LOADER_INPUTS
        and not _is_link((prompt[nid].get("inputs") or {}).get(LOADER_INPUTS[str(prompt[nid]["class_type"])][0]))
    ]
    for nid in loaders:
        node = prompt[nid]
        kind = str(node["class_type"])
        field, ptype = LOADER_INPUTS[kind]
        title = _custom_title(node, object_info)
        if title and _slug(title):
            base = _slug(title)
        elif sum(1 for other in loaders if LOADER_INPUTS[str(prompt[other]["class_type"])][1] is ptype) == 1:
            base = ptype.value
        else:
            base = f"{ptype.value}_{_slug(nid)}"
        name = _unique(base, taken, nid)
        taken.add(name)
        param = InputParam(
            name=name,
            type=ptype,
            required=True,
            display_name=title,
            description=f"Loaded by node {nid} ({object_info.display_name(kind)}).",
        )
        result.append(_Input(param, [{"node": nid, "input": field}]))
    # 2. Primitive nodes: the usual way a workflow exposes parameters.
    for nid in ordered:
        node = prompt[nid]
        primitive = PRIMITIVE_INPUTS.get(str(node.get("class_type")))
        value = (node.get("inputs") or {}).get("value")
        if primitive is None or _is_link(value):
            continue
        title = _custom_title(node, object_info)
        name = _unique(_slug(title) if title and _slug(title) else f"{primitive.value}_{_slug(nid)}", taken, nid)
        taken.add(name)
        param = _primitive_param(name, primitive, value, title, _consumers(prompt, nid), object_info)
        result.append(_Input(param, [{"node": nid, "input": "value"}]))
    # 3. Text encoders feeding a sampler's positive / negative input.
    roles: dict[str, str] = {}
    for nid in ordered:
        for input_name, value in (prompt[nid].get("inputs") or {}).items():
            if _is_link(value) and input_name in ("positive", "negative"):
                roles.setdefault(value[0], input_name)
    for nid in ordered:
        node = prompt[nid]
        if str(node.get("class_type")) not in PROMPT_ENCODERS or nid not in roles:
            continue
        text = (node.get("inputs") or {}).get("text")
        if _is_link(text):
            continue
        base = "prompt" if roles[nid] == "positive" else "negative_prompt"
        name = _unique(base, taken, nid)
        taken.add(name)
        param = InputParam(
            name=name,
            type=ParamType.TEXT,
            default=_literal(text) if isinstance(_literal(text), str) else None,
            description=f"{'Positive' if base == 'prompt' else 'Negative'} prompt (node {nid}).",
        )
        result.append(_Input(param, [{"node": nid, "input": "text"}]))
    return result


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
