"""The real corpus: every template workflow of the two template packages (installed as test deps).

Every workflow imports or is refused with a ``WorkflowImportError`` naming the missing node classes
or the unsupported feature; every 0.1.95 workflow that imports converts to an API prompt that passes
the structural check against the captured ComfyUI 0.3.64 ``/object_info`` (the server that pins
0.1.95). The counts are those written in ``docs/comfyui.md``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import pytest

from toolweave.comfy import ObjectInfo, WorkflowImportError, check_prompt, tool_from_workflow

NOT_WORKFLOWS = ("index", "fuse_options")
REFUSALS = {"missing_nodes", "api_nodes", "unsupported_feature", "no_outputs"}


def _workflows(package: str) -> Iterator[tuple[str, dict[str, Any]]]:
    root = resources.files(package).joinpath("templates")
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".json") or entry.name.startswith(NOT_WORKFLOWS):
            continue
        yield entry.name, json.loads(entry.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def info() -> ObjectInfo:
    return ObjectInfo.default()


def _import_all(package: str, info: ObjectInfo) -> tuple[Counter[str], dict[str, list[str]]]:
    counts: Counter[str] = Counter()
    problems: dict[str, list[str]] = {}
    for name, workflow in _workflows(package):
        counts["workflows"] += 1
        try:
            tool = tool_from_workflow(workflow, service="comfyui", object_info=info, name=Path(name).stem)
        except WorkflowImportError as exc:
            assert exc.reason in REFUSALS, f"{name}: unexpected refusal {exc.reason}: {exc}"
            if exc.reason == "missing_nodes":
                assert exc.missing_classes, name
                assert all(cls in str(exc) for cls in exc.missing_classes), name
            if exc.reason == "api_nodes":
                assert exc.classes and all(cls in str(exc) for cls in exc.classes), name
            counts[f"refused:{exc.reason}"] += 1
            continue
        counts["imported"] += 1
        assert tool.output_schema, name
        assert set(tool.metadata["outputMap"]) == {o.name for o in tool.output_schema}
        found = check_prompt(tool.metadata["workflow"], info)
        if found:
            problems[name] = found
        else:
            counts["passes_check"] += 1
    return counts, problems


def test_templates_0_1_95_import_and_pass_the_structural_check(info: ObjectInfo) -> None:
    assert metadata.version("comfyui-workflow-templates") == "0.1.95"
    counts, problems = _import_all("comfyui_workflow_templates", info)
    assert problems == {}
    assert counts == Counter(
        {
            "workflows": 172,
            "imported": 95,
            "passes_check": 95,
            "refused:api_nodes": 65,
            "refused:missing_nodes": 12,
        }
    )


def test_newest_templates_import_or_are_refused_with_a_reason(info: ObjectInfo) -> None:
    counts, problems = _import_all("comfyui_workflow_templates_json", info)
    assert counts["workflows"] >= 600
    assert (
        counts["imported"] + sum(v for k, v in counts.items() if k.startswith("refused:"))
        == counts["workflows"]
    )
    # Newer templates may use features of newer servers; the structural check is reported, not required.
    print(
        f"comfyui-workflow-templates-json {metadata.version('comfyui-workflow-templates-json')}: "
        f"{dict(counts)}; failing the check: {len(problems)}"
    )
