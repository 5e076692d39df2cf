"""Checks of a workflow's shape that keep hostile or broken files from costing unbounded time or
turning into a prompt the server would refuse: a bound on the nodes a workflow expands to, and no
cycles among the emitted nodes' links."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from toolweave.comfy.errors import WorkflowImportError

MAX_NODES = 10_000
"""The most nodes one workflow may hold, every subgraph instance's inner nodes counted once per
instance: the largest real workflows have a few hundred; a subgraph used ten times inside a subgraph
used ten times (and so on) would otherwise expand without end."""


def link_target(value: Any) -> str | None:
    """The node id an API-format input value links to, or ``None`` for a literal."""
    if (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
    ):
        return value[0]
    return None


def check_links(prompt: Mapping[str, Any]) -> None:
    """Refuse links to nodes the prompt lacks and links that form a cycle (naming the nodes)."""
    edges: dict[str, list[str]] = {}
    for node_id, node in prompt.items():
        targets: list[str] = []
        inputs = node.get("inputs") if isinstance(node, Mapping) else None
        if not isinstance(inputs, Mapping | None):
            raise WorkflowImportError(
                "invalid_workflow", f"node {node_id!r} has inputs that are not an object"
            )
        for name, value in (inputs or {}).items():
            target = link_target(value)
            if target is None:
                continue
            if target not in prompt:
                raise WorkflowImportError(
                    "invalid_workflow",
                    f"node {node_id!r} input {name!r} links to node {target!r}, which is not in the workflow",
                )
            targets.append(target)
        edges[str(node_id)] = targets
    done: set[str] = set()
    for start in edges:
        if start in done:
            continue
        path: list[str] = [start]
        on_path = {start}
        stack = [iter(edges[start])]
        while stack:
            following = next(stack[-1], None)
            if following is None:
                stack.pop()
                done.add(path[-1])
                on_path.discard(path.pop())
                continue
            if following in on_path:
                cycle = [*path[path.index(following) :], following]
                raise WorkflowImportError(
                    "invalid_workflow", "links form a cycle: nodes " + " → ".join(cycle)
                )
            if following in done:
                continue
            path.append(following)
            on_path.add(following)
            stack.append(iter(edges[following]))
