"""Builders for small UI-format (litegraph 0.4) workflows used by the comfy unit tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "comfy_data"


def load(name: str) -> Any:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


class UI:
    """A tiny editor-format workflow builder: add nodes, connect them, get the dict."""

    def __init__(self) -> None:
        self.nodes: list[dict[str, Any]] = []
        self.links: list[list[Any]] = []
        self.subgraphs: list[dict[str, Any]] = []

    def node(
        self,
        node_id: int,
        kind: str,
        widgets: list[Any] | dict[str, Any] | None = None,
        *,
        inputs: list[tuple[str, str]] | None = None,
        outputs: list[str] | None = None,
        mode: int = 0,
        title: str | None = None,
        pos: tuple[float, float] = (0, 0),
        widget_inputs: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        node: dict[str, Any] = {
            "id": node_id,
            "type": kind,
            "pos": list(pos),
            "mode": mode,
            "inputs": [
                {
                    "name": name,
                    "type": typ,
                    "link": None,
                    **({"widget": {"name": name}} if name in widget_inputs else {}),
                }
                for name, typ in (inputs or [])
            ],
            "outputs": [{"name": t, "type": t, "links": []} for t in (outputs or [])],
            "properties": {},
        }
        if widgets is not None:
            node["widgets_values"] = widgets
        if title:
            node["title"] = title
        self.nodes.append(node)
        return node

    def connect(self, origin: int, slot: int, target: int, input_name: str, typ: str = "*") -> int:
        link_id = len(self.links) + 1
        target_node = next(n for n in self.nodes if n["id"] == target)
        index = next(i for i, inp in enumerate(target_node["inputs"]) if inp["name"] == input_name)
        target_node["inputs"][index]["link"] = link_id
        self.links.append([link_id, origin, slot, target, index, typ])
        return link_id

    def build(self) -> dict[str, Any]:
        workflow: dict[str, Any] = {
            "id": "test",
            "revision": 0,
            "last_node_id": max((n["id"] for n in self.nodes), default=0),
            "last_link_id": len(self.links),
            "nodes": self.nodes,
            "links": self.links,
            "groups": [],
            "config": {},
            "extra": {},
            "version": 0.4,
        }
        if self.subgraphs:
            workflow["definitions"] = {"subgraphs": self.subgraphs}
        return workflow
