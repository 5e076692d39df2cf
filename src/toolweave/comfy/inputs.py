"""A workflow's tool inputs: from its ``External*`` nodes (ComfyUI Deploy), or, in a plain
workflow for the native server, from its loaders, primitives and prompt encoders; each with its
type, default, bounds, options and where its value is written (``metadata.inputMap``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from toolweave.comfy.check import reachable_from_outputs
from toolweave.comfy.errors import WorkflowImportError
from toolweave.comfy.nodes import (
    EXTERNAL_KINDS,
    EXTERNAL_PREFIX,
    LOADER_INPUTS,
    PRIMITIVE_INPUTS,
    PROMPT_ENCODERS,
    ExternalKind,
    _custom_title,
    _id_key,
    _is_link,
    _literal,
    _slug,
    _unique,
)
from toolweave.comfy.objectinfo import ObjectInfo
from toolweave.model.definitions import InputParam, ParamType

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
