"""UI (litegraph) workflow → API prompt, following the editor's ``graphToPrompt`` rules.

The rules (``reference/comfyui.md`` 3.3):

1. Virtual nodes (Note, MarkdownNote, Reroute, PrimitiveNode), muted (mode 2) and bypassed (mode 4)
   nodes are not emitted. A PrimitiveNode's value is written into the inputs it feeds; a Reroute is
   followed to its source; a consumer of a bypassed node's output is rewired to the bypassed node's
   input of the same type. Inputs that end up pointing at nothing are dropped.
2. ``widgets_values`` is positional over the node's widget-typed inputs (INT, FLOAT, STRING, BOOLEAN,
   COMBO, not ``forceInput``) in the server's ``input_order``; the editor's extra values (the
   control-after-generate value after a seed, the upload widget after LoadImage's file) are skipped.
3. Widgets without a saved value take the server's default.
4. Links become ``[source_id, slot]``; a linked widget input takes the link.
5. Subgraphs are flattened; inner node ids become ``"<instance>:<inner>"`` (nested: more ``:``).
   An unlinked subgraph input takes the instance's positional widget value, or else the inner
   node's own widget value (newer files with ``proxyWidgets``).
6. ``_meta.title`` is the node's title or the class's display name.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from toolweave.comfy.errors import WorkflowImportError
from toolweave.comfy.objectinfo import WIDGET_TYPES, InputSpec, ObjectInfo
from toolweave.comfy.shape import MAX_NODES, check_links, link_target

VIRTUAL_TYPES = frozenset({"Note", "MarkdownNote", "Reroute", "PrimitiveNode"})
"""Frontend-only nodes: never sent to the server."""

NOTE_TYPES = frozenset({"Note", "MarkdownNote"})
MODE_MUTED = 2
MODE_BYPASS = 4
CONTROL_VALUES = frozenset({"fixed", "randomize", "increment", "decrement"})
UPLOAD_VALUES = frozenset({"image", "video", "audio", "animated_image", "upload", ""})
SUBGRAPH_INPUT_ID = -10
SUBGRAPH_OUTPUT_ID = -20
_MAX_DEPTH = 256


def parse_workflow(text: str | bytes, *, source: str = "workflow") -> dict[str, Any]:
    """Parse workflow JSON text; errors name the file and position."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WorkflowImportError("invalid_json", f"{source} is not valid JSON: {exc}") from None
    except RecursionError:
        raise WorkflowImportError("invalid_json", f"{source} is nested too deeply to read") from None
    if not isinstance(data, dict):
        raise WorkflowImportError(
            "unsupported_format", f"{source} is a JSON {type(data).__name__}, not a ComfyUI workflow object"
        )
    return data


def is_api_format(workflow: Mapping[str, Any]) -> bool:
    return bool(workflow) and all(
        isinstance(node, Mapping) and "class_type" in node for node in workflow.values()
    )


def is_ui_format(workflow: Mapping[str, Any]) -> bool:
    return isinstance(workflow.get("nodes"), list)


def workflow_format(workflow: Mapping[str, Any]) -> str:
    """``"ui"`` or ``"api"``; anything else is refused with reason ``unsupported_format``."""
    if not isinstance(workflow, Mapping):
        raise WorkflowImportError("unsupported_format", "a workflow must be a JSON object")
    if is_ui_format(workflow):
        return "ui"
    if is_api_format(workflow):
        return "api"
    if not workflow:
        raise WorkflowImportError("unsupported_format", "the workflow is empty")
    raise WorkflowImportError(
        "unsupported_format",
        "not a ComfyUI workflow: expected the editor's format (with 'nodes' and 'links') or the API "
        "format (node id → {class_type, inputs})",
    )


# --- links ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Link:
    id: int
    origin_id: int
    origin_slot: int
    target_id: int
    target_slot: int
    type: str


def _parse_links(raw: Any, where: str) -> dict[int, _Link]:
    links: dict[int, _Link] = {}
    if not isinstance(raw, list | None):
        raise WorkflowImportError("invalid_workflow", f"the links of {where} are not a list")
    for item in raw or []:
        try:
            if isinstance(item, Mapping):
                link = _Link(
                    int(item["id"]),
                    int(item["origin_id"]),
                    int(item["origin_slot"]),
                    int(item["target_id"]),
                    int(item["target_slot"]),
                    str(item.get("type", "*")),
                )
            else:
                link = _Link(
                    int(item[0]), int(item[1]), int(item[2]), int(item[3]), int(item[4]), str(item[5])
                )
        except (KeyError, IndexError, TypeError, ValueError, OverflowError):
            raise WorkflowImportError("invalid_workflow", f"malformed link in {where}: {str(item)[:80]}") from None
        links[link.id] = link
    return links


def _node_id(node: Mapping[str, Any], where: str) -> int:
    try:
        return int(node["id"])
    except (KeyError, TypeError, ValueError, OverflowError):
        raise WorkflowImportError(
            "invalid_workflow", f"a node in {where} has no numeric id: {str(node)[:80]}"
        ) from None


def _wrap(value: Any) -> Any:
    """List literals must be wrapped, since a list means a link to the server."""
    return {"__value__": value} if isinstance(value, list) else value


@dataclass(frozen=True)
class _Value:
    value: Any


_Source = tuple[str, int] | _Value | None


class _Scope:
    """One graph level: the top-level workflow, or the inside of one subgraph instance."""

    def __init__(
        self,
        converter: _Converter,
        nodes: list[Any],
        links: dict[int, _Link],
        *,
        prefix: str = "",
        parent: _Scope | None = None,
        instance: Mapping[str, Any] | None = None,
        subgraph: Mapping[str, Any] | None = None,
        depth: int = 0,
    ) -> None:
        self.converter = converter
        where = f"subgraph {subgraph.get('name') or subgraph.get('id')}" if subgraph else "the workflow"
        self.where = where
        self.nodes: dict[int, Mapping[str, Any]] = {}
        self.order: list[Mapping[str, Any]] = []
        converter.node_count += len(nodes)
        if converter.node_count > MAX_NODES:
            raise WorkflowImportError(
                "invalid_workflow",
                f"the workflow expands to more than {MAX_NODES:,} nodes (subgraph instances counted inside)",
            )
        for node in nodes:
            if not isinstance(node, Mapping):
                raise WorkflowImportError("invalid_workflow", f"a node in {where} is not an object")
            node_id = _node_id(node, where)
            if node_id in self.nodes:
                raise WorkflowImportError("invalid_workflow", f"node id {node_id} appears twice in {where}")
            self.nodes[node_id] = node
            self.order.append(node)
        self.links = links
        self.prefix = prefix
        self.parent = parent
        self.instance = instance
        self.subgraph = subgraph
        self.depth = depth
        self._children: dict[int, _Scope] = {}
        self.instance_values: dict[int, Any] = self._instance_widget_values()

    # subgraph instance widget values: positional over the widget-typed subgraph inputs
    def _instance_widget_values(self) -> dict[int, Any]:
        if self.instance is None or self.subgraph is None:
            return {}
        raw = self.instance.get("widgets_values")
        inputs = list(self.subgraph.get("inputs") or [])
        values: dict[int, Any] = {}
        if isinstance(raw, Mapping):
            for slot, sub_input in enumerate(inputs):
                if sub_input.get("name") in raw:
                    values[slot] = raw[sub_input["name"]]
            return values
        if not isinstance(raw, list):
            return values
        i = 0
        for slot, sub_input in enumerate(inputs):
            kind = str(sub_input.get("type", ""))
            if kind not in WIDGET_TYPES:
                continue
            if i >= len(raw):
                break
            values[slot] = raw[i]
            i += 1
            if kind == "INT" and i < len(raw) and _is_control(raw[i]):
                i += 1
        return values

    def child(self, node: Mapping[str, Any]) -> _Scope:
        node_id = int(node["id"])
        scope = self._children.get(node_id)
        if scope is None:
            if self.depth >= 32:
                raise WorkflowImportError("invalid_workflow", "subgraphs are nested more than 32 levels deep")
            definition = self.converter.subgraphs[str(node["type"])]
            where = f"subgraph {definition.get('name') or definition.get('id')}"
            scope = _Scope(
                self.converter,
                list(definition.get("nodes") or []),
                _parse_links(definition.get("links"), where),
                prefix=f"{self.prefix}{node_id}:",
                parent=self,
                instance=node,
                subgraph=definition,
                depth=self.depth + 1,
            )
            self._children[node_id] = scope
        return scope

    # --- resolving where a value comes from ---------------------------------------------------

    def resolve_link(self, link_id: Any, hops: int = 0) -> _Source:
        if link_id is None:
            return None
        if hops > _MAX_DEPTH:
            raise WorkflowImportError("invalid_workflow", f"links in {self.where} form a loop")
        try:
            link = self.links.get(int(link_id))
        except (TypeError, ValueError):
            return None
        if link is None:
            return None
        return self.resolve_output(link.origin_id, link.origin_slot, link.type, hops + 1)

    def resolve_output(self, origin_id: int, slot: int, want: str, hops: int) -> _Source:
        if origin_id == SUBGRAPH_INPUT_ID:
            return self.resolve_subgraph_input(slot, hops)
        node = self.nodes.get(origin_id)
        if node is None:
            return None
        mode = node.get("mode", 0)
        kind = str(node.get("type", ""))
        if mode == MODE_MUTED:
            return None
        if mode == MODE_BYPASS:
            index = _bypass_input(node, slot, want)
            if index is None:
                return None
            return self.resolve_link(node["inputs"][index].get("link"), hops + 1)
        if kind == "Reroute":
            inputs = node.get("inputs") or []
            return self.resolve_link(inputs[0].get("link") if inputs else None, hops + 1)
        if kind == "PrimitiveNode":
            values = node.get("widgets_values")
            if isinstance(values, list) and values:
                return _Value(values[0])
            return None
        if kind in VIRTUAL_TYPES:
            return None
        if kind in self.converter.subgraphs:
            inner = self.child(node)
            assert inner.subgraph is not None
            for link in inner.links.values():
                if link.target_id == SUBGRAPH_OUTPUT_ID and link.target_slot == slot:
                    return inner.resolve_output(link.origin_id, link.origin_slot, link.type, hops + 1)
            return None
        return (f"{self.prefix}{origin_id}", slot)

    def resolve_subgraph_input(self, slot: int, hops: int) -> _Source:
        if self.subgraph is None or self.instance is None or self.parent is None:
            return None
        inputs = list(self.subgraph.get("inputs") or [])
        if not 0 <= slot < len(inputs):
            return None
        name = inputs[slot].get("name")
        for inp in self.instance.get("inputs") or []:
            if inp.get("name") == name and inp.get("link") is not None:
                source = self.parent.resolve_link(inp["link"], hops + 1)
                if source is not None:
                    return source
                break
        if slot in self.instance_values:
            return _Value(self.instance_values[slot])
        return None

    # --- emitting API nodes -----------------------------------------------------------------------

    def emit(self, out: dict[str, Any]) -> None:
        info = self.converter.object_info
        for node in self.order:
            mode = node.get("mode", 0)
            kind = str(node.get("type", ""))
            if mode in (MODE_MUTED, MODE_BYPASS) or kind in VIRTUAL_TYPES:
                continue
            if kind in self.converter.subgraphs:
                self.child(node).emit(out)
                continue
            if not kind:
                raise WorkflowImportError(
                    "invalid_workflow", f"node {node.get('id')} in {self.where} has no type"
                )
            if not info.has(kind):
                self.converter.missing.add(kind)
                continue
            node_id = f"{self.prefix}{node['id']}"
            inputs = _widget_inputs(node, kind, info)
            for inp in node.get("inputs") or []:
                if not isinstance(inp, Mapping) or inp.get("link") is None:
                    continue
                widget = inp.get("widget")
                name = str((widget or {}).get("name") or inp.get("name"))
                source = self.resolve_link(inp["link"])
                if isinstance(source, _Value):
                    inputs[name] = _wrap(source.value)
                elif source is not None:
                    inputs[name] = [source[0], source[1]]
            title = node.get("title") or info.display_name(kind)
            out[node_id] = {"inputs": inputs, "class_type": kind, "_meta": {"title": title}}


def _is_control(value: Any) -> bool:
    return isinstance(value, bool) or (isinstance(value, str) and value in CONTROL_VALUES)


def _bypass_input(node: Mapping[str, Any], slot: int, want: str) -> int | None:
    """Which input a bypassed node passes through to its output ``slot`` (the editor's rule)."""
    inputs = [i for i in node.get("inputs") or [] if isinstance(i, Mapping)]
    outputs = node.get("outputs") or []
    out_type = str(outputs[slot].get("type", want)) if 0 <= slot < len(outputs) else want
    if not inputs:
        return None
    if want in ("*", "") and out_type in ("*", ""):
        return slot if slot < len(inputs) else 0
    if slot < len(inputs) and str(inputs[slot].get("type")) == out_type:
        return slot
    for i, inp in enumerate(inputs):
        if str(inp.get("type")) == out_type:
            return i
    for i, inp in enumerate(inputs):
        if types_compatible(out_type, str(inp.get("type"))):
            return i
    return None


def types_compatible(received: Any, expected: Any) -> bool:
    """The server's rule: ``*`` matches anything, comma lists match if they share a type."""
    if isinstance(expected, list | tuple):
        expected = "COMBO"
    if isinstance(received, list | tuple):
        received = "COMBO"
    received, expected = str(received), str(expected)
    if received == expected or "*" in (received, expected):
        return True
    got = {t.strip() for t in received.split(",")}
    want = {t.strip() for t in expected.split(",")}
    return bool(got & want)


def _widget_inputs(node: Mapping[str, Any], kind: str, info: ObjectInfo) -> dict[str, Any]:
    specs = info.widget_inputs(kind)
    raw = node.get("widgets_values")
    result: dict[str, Any] = {}
    if isinstance(raw, Mapping):  # some custom nodes save widgets by name
        for spec in specs:
            value = raw.get(spec.name)
            result[spec.name] = _wrap(spec.default if value is None else value)
        return result
    values = list(raw) if isinstance(raw, list) else []
    i = 0
    for spec in specs:
        if i < len(values):
            value = values[i]
            i += 1
            if spec.has_control and i < len(values) and _is_control(values[i]):
                i += 1
            if spec.upload and i < len(values) and _is_upload(values[i]):
                i += 1
        else:
            value = None
        result[spec.name] = _wrap(_default_if_none(value, spec))
    return result


def _is_upload(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value in UPLOAD_VALUES)


def _default_if_none(value: Any, spec: InputSpec) -> Any:
    return spec.default if value is None else value


class _Converter:
    def __init__(self, workflow: Mapping[str, Any], object_info: ObjectInfo) -> None:
        self.workflow = workflow
        self.object_info = object_info
        self.missing: set[str] = set()
        self.node_count = 0
        self.subgraphs: dict[str, Mapping[str, Any]] = {}
        self._collect_subgraphs(workflow.get("definitions"))

    def _collect_subgraphs(self, definitions: Any) -> None:
        if not isinstance(definitions, Mapping):
            return
        subgraphs = definitions.get("subgraphs") or []
        if not isinstance(subgraphs, list):
            raise WorkflowImportError("invalid_workflow", "definitions.subgraphs is not a list")
        for sub in subgraphs:
            if (
                isinstance(sub, Mapping)
                and sub.get("id") is not None
                and str(sub["id"]) not in self.subgraphs
            ):
                self.subgraphs[str(sub["id"])] = sub
                self._collect_subgraphs(sub.get("definitions"))

    def convert(self) -> dict[str, Any]:
        extra = self.workflow.get("extra")
        if isinstance(extra, Mapping) and extra.get("groupNodes"):
            raise WorkflowImportError(
                "unsupported_feature",
                "the workflow uses legacy group nodes (extra.groupNodes); convert them to subgraphs in the editor",
            )
        top = _Scope(
            self,
            self.workflow["nodes"],
            _parse_links(self.workflow.get("links"), "the workflow"),
        )
        out: dict[str, Any] = {}
        top.emit(out)
        if self.missing:
            raise missing_nodes_error(self.missing, self.object_info)
        # Inputs that point at nodes that were not emitted are dropped (the editor does the same).
        for node in out.values():
            for name, value in list(node["inputs"].items()):
                if _is_link(value) and value[0] not in out:
                    del node["inputs"][name]
        check_links(out)
        return out


def missing_nodes_error(missing: set[str], object_info: ObjectInfo) -> WorkflowImportError:
    names = sorted(missing)
    where = f" ({object_info.source})" if object_info.source else ""
    return WorkflowImportError(
        "missing_nodes",
        f"the server's object_info{where} lacks {len(names)} node class(es) this workflow uses: "
        + ", ".join(names),
        missing_classes=names,
    )


def _is_link(value: Any) -> bool:
    return link_target(value) is not None


def check_api_format(workflow: Mapping[str, Any], object_info: ObjectInfo) -> None:
    """The check an API-format workflow gets before it is accepted as is."""
    missing: set[str] = set()
    for node_id, node in workflow.items():
        if not isinstance(node, Mapping) or not isinstance(node.get("class_type"), str):
            raise WorkflowImportError("invalid_workflow", f"node {node_id!r} has no class_type")
        if not isinstance(node.get("inputs", {}), Mapping):
            raise WorkflowImportError(
                "invalid_workflow", f"node {node_id!r} has inputs that are not an object"
            )
        if not object_info.has(node["class_type"]):
            missing.add(node["class_type"])
    if missing:
        raise missing_nodes_error(missing, object_info)
    check_links(workflow)


def to_api(workflow: Mapping[str, Any], object_info: ObjectInfo) -> dict[str, Any]:
    """Convert a UI-format workflow to an API prompt; an API-format one is returned unchanged after a check.

    Raises ``WorkflowImportError`` (never anything else for bad input): ``unsupported_format``,
    ``invalid_workflow`` (also for links that form a cycle or name a missing node, duplicate node
    ids, more than ``MAX_NODES`` nodes, and fields of the wrong type), ``unsupported_feature`` or
    ``missing_nodes`` (naming the classes).
    """
    kind = workflow_format(workflow)
    if kind == "api":
        check_api_format(workflow, object_info)
        return copy.deepcopy(dict(workflow))
    try:
        return _Converter(workflow, object_info).convert()
    except WorkflowImportError:
        raise
    except (TypeError, AttributeError, KeyError, IndexError, ValueError, OverflowError, RecursionError) as exc:
        # A field of the wrong type somewhere (a number where a list belongs, null for an object):
        # the file is broken, not the importer.
        raise WorkflowImportError(
            "invalid_workflow", f"the workflow is malformed: a field has the wrong type ({type(exc).__name__}: {exc})"
        ) from None
