"""An input schema as a JSON Schema (draft 2020-12) object schema: what the HTTP API publishes for
a tool's or a job's inputs, so that clients can build forms and check values before they submit."""

from __future__ import annotations

from typing import Any

from toolweave.model.definitions import InputParam, ParamType

_JSON_TYPES: dict[ParamType, str] = {
    ParamType.STRING: "string",
    ParamType.TEXT: "string",
    ParamType.INTEGER: "integer",
    ParamType.SEED: "integer",
    ParamType.NUMBER: "number",
    ParamType.BOOLEAN: "boolean",
}

_ARTIFACT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"kind": {"const": "artifact"}, "sha256": {"type": "string"}},
    "required": ["kind", "sha256"],
}


def _param_schema(param: InputParam) -> dict[str, Any]:
    prop: dict[str, Any] = {}
    if param.display_name:
        prop["title"] = param.display_name
    if param.description:
        prop["description"] = param.description
    kind = param.type
    if kind in _JSON_TYPES:
        prop["type"] = _JSON_TYPES[kind]
    if kind is ParamType.SEED:
        prop["minimum"] = 0
        prop["description"] = (prop.get("description", "") + " (random when omitted)").strip()
    if kind.is_media:
        prop["anyOf"] = [
            {"type": "string", "description": "an http(s) URL, a data: URI or a local path"},
            _ARTIFACT_SCHEMA,
        ]
    if param.enum:
        prop["enum"] = list(param.enum)
    if param.minimum is not None and kind in (ParamType.INTEGER, ParamType.NUMBER, ParamType.SEED):
        prop["minimum"] = param.minimum
    if param.maximum is not None and kind in (ParamType.INTEGER, ParamType.NUMBER, ParamType.SEED):
        prop["maximum"] = param.maximum
    if param.default is not None:
        prop["default"] = param.default
    prop["x-toolweave-type"] = kind.value
    if param.visible_if is not None:
        prop["x-toolweave-visible-if"] = param.visible_if.model_dump()
    return prop


def _demanded(param: InputParam) -> bool:
    return param.required and param.default is None and param.type is not ParamType.SEED


def json_schema(schema: list[InputParam]) -> dict[str, Any]:
    """The inputs as a JSON Schema (draft 2020-12) object schema. An input required only when
    visible is required under an ``if``/``then`` on the input its ``visibleIf`` names."""
    out: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {p.name: _param_schema(p) for p in schema},
        "required": [p.name for p in schema if _demanded(p) and p.visible_if is None],
        "additionalProperties": False,
    }
    conditional = [
        {"if": {"properties": {p.visible_if.field: {"enum": list(p.visible_if.values)}},
                "required": [p.visible_if.field]},
         "then": {"required": [p.name]}}
        for p in schema if _demanded(p) and p.visible_if is not None
    ]
    if conditional:
        out["allOf"] = conditional
    return out


__all__ = ["json_schema"]
