"""A structural check of an API prompt against a server's ``/object_info``.

It mirrors the part of the server's validation that does not depend on the server's files: every
node class exists, every required input is present, every link is a ``[node_id, slot]`` pair that
points at an existing node and at an output slot whose type fits the input. Like the server, it
checks only what is reachable from output nodes. Combo values (model and input file names) are not
checked: they depend on what is installed on the server.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from toolweave.comfy.convert import types_compatible
from toolweave.comfy.objectinfo import ObjectInfo


def _looks_like_link(value: Any) -> bool:
    return isinstance(value, list)


def reachable_from_outputs(prompt: Mapping[str, Any], object_info: ObjectInfo) -> list[str]:
    """Node ids the server would execute: output nodes and everything they depend on."""
    roots = [
        nid
        for nid, node in prompt.items()
        if isinstance(node, Mapping) and object_info.is_output_node(str(node.get("class_type")))
    ]
    seen: set[str] = set()
    order: list[str] = []
    stack = list(reversed(roots))
    while stack:
        nid = stack.pop()
        if nid in seen or nid not in prompt:
            continue
        seen.add(nid)
        order.append(nid)
        inputs = prompt[nid].get("inputs") if isinstance(prompt[nid], Mapping) else None
        for value in (inputs or {}).values():
            if _looks_like_link(value) and value and isinstance(value[0], str):
                stack.append(value[0])
    return order


def check_prompt(prompt: Mapping[str, Any], object_info: ObjectInfo) -> list[str]:
    """Problems that would make the server reject ``prompt`` for its structure; ``[]`` if none."""
    problems: list[str] = []
    if not isinstance(prompt, Mapping) or not prompt:
        return ["the prompt is empty or not an object"]
    for nid, node in prompt.items():
        if not isinstance(node, Mapping) or not isinstance(node.get("class_type"), str):
            problems.append(f"node {nid}: no class_type")
        elif not object_info.has(node["class_type"]):
            problems.append(f"node {nid}: unknown node class {node['class_type']}")
        elif not isinstance(node.get("inputs", {}), Mapping):
            problems.append(f"node {nid}: inputs is not an object")
    if problems:
        return problems
    live = reachable_from_outputs(prompt, object_info)
    if not live:
        return ["the prompt has no output node"]
    for nid in live:
        node = prompt[nid]
        kind = node["class_type"]
        inputs: Mapping[str, Any] = node.get("inputs") or {}
        for spec in object_info.required_inputs(kind):
            if spec.name not in inputs:
                problems.append(f"node {nid} ({kind}): required input {spec.name!r} is missing")
        for name, value in inputs.items():
            if not _looks_like_link(value):
                continue
            if (
                len(value) != 2
                or not isinstance(value[0], str)
                or not isinstance(value[1], int)
                or isinstance(value[1], bool)
            ):
                problems.append(
                    f"node {nid} ({kind}): input {name!r} is a bare list, not a [node_id, slot] link"
                )
                continue
            source_id, slot = value
            source = prompt.get(source_id)
            if source is None:
                problems.append(f"node {nid} ({kind}): input {name!r} links to missing node {source_id}")
                continue
            source_kind = source["class_type"]
            outputs = object_info.outputs(source_kind)
            if not 0 <= slot < len(outputs):
                problems.append(
                    f"node {nid} ({kind}): input {name!r} links to output {slot} of node {source_id} "
                    f"({source_kind}), which has {len(outputs)} output(s)"
                )
                continue
            declared = object_info.input_spec(kind, name)
            if declared is None:
                continue  # an input the class does not declare: the server ignores it
            received = object_info.raw_outputs(source_kind)[slot]
            # Like the server: a combo declared as a list, or a list-typed output, matches anything.
            if declared.legacy_combo or isinstance(received, list):
                continue
            if not types_compatible(received, declared.type):
                problems.append(
                    f"node {nid} ({kind}): input {name!r} expects {declared.type} but node {source_id} "
                    f"({source_kind}) output {slot} is {outputs[slot]}"
                )
    return problems
