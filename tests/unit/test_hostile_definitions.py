"""Hostile and broken definition files and ComfyUI workflows: each is refused with a sentence naming
the problem (never another exception, never a hang), in bounded time and memory."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from tests.unit.comfy_helpers import UI
from typer.testing import CliRunner

from toolweave.cli import app
from toolweave.comfy import ObjectInfo, WorkflowImportError, parse_workflow, to_api, tool_from_workflow
from toolweave.comfy.shape import MAX_NODES
from toolweave.registry.loader import MAX_FILE_BYTES, load_files

runner = CliRunner()


@pytest.fixture(scope="module")
def info() -> ObjectInfo:
    return ObjectInfo.default()


def _refused(workflow: Any, info: ObjectInfo) -> str:
    with pytest.raises(WorkflowImportError) as caught:
        to_api(workflow, info)
    assert caught.value.reason == "invalid_workflow"
    return str(caught.value)


@pytest.mark.parametrize(
    "workflow",
    [
        {"nodes": [], "links": 5},
        {"nodes": [{"id": 1, "type": "SaveImage", "inputs": 5}], "links": []},
        {
            "nodes": [{"id": 1, "type": "SaveImage", "inputs": [{"name": "images", "link": float("inf")}]}],
            "links": [],
        },
        {
            "nodes": [
                {"id": 1, "type": "Reroute", "inputs": [None]},
                {"id": 2, "type": "SaveImage", "inputs": [{"name": "images", "link": 1}]},
            ],
            "links": [[1, 1, 0, 2, 0, "IMAGE"]],
        },
        {
            "nodes": [
                {"id": 1, "type": "SaveImage", "inputs": [{"name": "images", "link": 1, "widget": "x"}]}
            ],
            "links": [[1, 1, 0, 1, 0, "IMAGE"]],
        },
        {"nodes": [{"id": 1, "type": "sg"}], "links": [], "definitions": {"subgraphs": 5}},
        {
            "nodes": [{"id": 1, "type": "sg"}],
            "links": [],
            "definitions": {"subgraphs": [{"id": "sg", "nodes": 5, "links": []}]},
        },
        {
            "nodes": [{"id": 1, "type": "sg", "widgets_values": [1]}],
            "links": [],
            "definitions": {"subgraphs": [{"id": "sg", "nodes": [], "links": [], "inputs": ["x"]}]},
        },
    ],
    ids=[
        "links-a-number",
        "inputs-a-number",
        "link-infinite",
        "input-null",
        "widget-a-string",
        "subgraphs-a-number",
        "subgraph-nodes-a-number",
        "subgraph-inputs-strings",
    ],
)
def test_fields_of_the_wrong_type_are_an_import_error(workflow: Any, info: ObjectInfo) -> None:
    _refused(workflow, info)


def test_duplicate_node_ids_are_named(info: ObjectInfo) -> None:
    ui = UI()
    ui.node(1, "SaveImage", None, inputs=[("images", "IMAGE")])
    ui.node(1, "LoadImage", ["a.png", "image"], outputs=["IMAGE", "MASK"])
    assert "node id 1 appears twice" in _refused(ui.build(), info)


def test_links_forming_a_cycle_are_named(info: ObjectInfo) -> None:
    ui = UI()
    ui.node(1, "ImageInvert", None, inputs=[("image", "IMAGE")], outputs=["IMAGE"])
    ui.node(2, "ImageInvert", None, inputs=[("image", "IMAGE")], outputs=["IMAGE"])
    ui.node(3, "SaveImage", None, inputs=[("images", "IMAGE")])
    ui.connect(1, 0, 2, "image", "IMAGE")
    ui.connect(2, 0, 1, "image", "IMAGE")
    ui.connect(2, 0, 3, "images", "IMAGE")
    message = _refused(ui.build(), info)
    assert "cycle" in message and "1" in message and "2" in message


def test_api_format_cycles_and_links_to_missing_nodes_are_refused(info: ObjectInfo) -> None:
    looped = {
        "1": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    }
    assert "nodes 1 → 2 → 1" in _refused(looped, info)
    dangling = {"1": {"class_type": "SaveImage", "inputs": {"images": ["9", 0]}}}
    assert "links to node '9'" in _refused(dangling, info)


def test_subgraphs_that_multiply_are_bounded(info: ObjectInfo) -> None:
    """Ten instances of a subgraph holding ten instances of the next, 31 levels deep: 10^31 nodes
    once flattened. Refused after counting MAX_NODES of them."""
    subgraphs: list[dict[str, Any]] = [
        {"id": f"s{i}", "nodes": [{"id": j, "type": f"s{i + 1}"} for j in range(10)], "links": []}
        for i in range(31)
    ]
    subgraphs.append({"id": "s31", "nodes": [{"id": 1, "type": "SaveImage"}], "links": []})
    workflow = {"nodes": [{"id": 1, "type": "s0"}], "links": [], "definitions": {"subgraphs": subgraphs}}
    assert f"more than {MAX_NODES:,} nodes" in _refused(workflow, info)


def test_a_flat_workflow_past_the_node_bound_is_refused(info: ObjectInfo) -> None:
    workflow = {"nodes": [{"id": i, "type": "Note"} for i in range(MAX_NODES + 1)], "links": []}
    assert "nodes" in _refused(workflow, info)


def test_deeply_nested_json_is_an_import_error() -> None:
    with pytest.raises(WorkflowImportError, match="nested too deeply"):
        parse_workflow("[" * 200_000 + "]" * 200_000)


def test_a_deployment_sync_sees_a_broken_graph_as_an_import_error() -> None:
    """The ComfyDeploy sync turns WorkflowImportError into a per-deployment problem; anything else
    stopped the whole sync."""
    with pytest.raises(WorkflowImportError):
        tool_from_workflow(
            {"nodes": [{"id": 1, "type": "SaveImage", "outputs": 5, "inputs": 7}], "links": []},
            service="comfydeploy",
            object_info=None,
            deployment_id="d1",
        )


# --- definition files ----------------------------------------------------------------------------


def _problems(paths: list[Path]) -> dict[str, str]:
    result = load_files(paths)
    assert result.entries == []
    return {Path(p.file).name: p.message for p in result.problems}


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_pipe_or_device_named_as_a_definition_is_refused_unread(tmp_path: Path) -> None:
    fifo = tmp_path / "tools.yaml"
    os.mkfifo(fifo)  # opening it for reading would block until a writer came
    device = tmp_path / "zero.json"
    device.symlink_to("/dev/zero")
    found = _problems([fifo, device, tmp_path / "missing.yaml"])
    assert found["tools.yaml"].startswith("is not a regular file")
    assert found["zero.json"].startswith("is not a regular file")
    assert found["missing.yaml"] == "does not exist"


def test_a_file_past_the_size_bound_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    with big.open("wb") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)  # sparse: costs no disk
    assert "larger than" in _problems([big])["big.json"]


def test_not_utf8_names_the_byte(tmp_path: Path) -> None:
    (tmp_path / "bin.yaml").write_bytes(b"toolId: a\n\xff\xfe")
    assert _problems([tmp_path / "bin.yaml"])["bin.yaml"] == "is not UTF-8 text (byte 10)"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_cli_import_of_a_pipe_or_a_broken_workflow_exits_1_without_a_traceback(tmp_path: Path) -> None:
    fifo = tmp_path / "wf.json"
    os.mkfifo(fifo)
    result = runner.invoke(app, ["import", "comfyui", str(fifo), "--service", "comfyui"])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)  # typer.Exit, not a traceback
    assert "not a regular file" in result.output
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"nodes": [{"id": 1, "type": "SaveImage", "inputs": 5}], "links": []}))
    result = runner.invoke(app, ["import", "comfyui", str(broken), "--service", "comfyui"])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert "invalid_workflow" in result.output


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            {"toolId": "t", "service": "string", "inputSchema": 5},
            "inputSchema must be an object keyed by name",
        ),
        ({"toolId": "t", "service": "string", "metadata": [1]}, "metadata must be an object keyed by name"),
        ({"toolId": "t", "service": "openai", "platformHints": "x"}, "platformHints must be an object"),
        ({"toolId": "t", "service": "string", "inputSchema": {"p": None}}, "t.json"),
    ],
    ids=["inputs-a-number", "metadata-a-list", "hints-a-string", "input-null"],
)
def test_cli_import_predecessor_of_wrong_types_exits_1_naming_the_field(
    tmp_path: Path, content: dict[str, Any], expected: str
) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps(content))
    result = runner.invoke(app, ["import", "predecessor", str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        result.exception
    )  # no traceback
    assert result.exit_code in (0, 1)
    assert expected in result.output


def test_cli_import_predecessor_of_deep_json_or_a_pipe_exits_1(tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000 + "]" * 200_000)
    result = runner.invoke(app, ["import", "predecessor", str(deep)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "nested too deeply" in result.output
    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "pipe.json"
        os.mkfifo(fifo)  # read_text would wait for a writer for ever
        result = runner.invoke(app, ["import", "predecessor", str(fifo)])
        assert result.exit_code == 1 and "not a regular file" in result.output


def test_validate_refuses_a_comfyui_tool_whose_inline_workflow_cannot_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Such a tool was "valid" and then failed at every run."""
    import yaml

    monkeypatch.setenv("TOOLWEAVE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TOOLWEAVE_COMFYUI_SERVERS", "local=http://127.0.0.1:9")
    defs = tmp_path / "defs"
    defs.mkdir()
    workflows: dict[str, Any] = {
        "cycle": {
            "1": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        },
        "number": 5,
        "listinputs": {"1": {"class_type": "SaveImage", "inputs": [1]}},
    }
    for name, workflow in workflows.items():
        (defs / f"{name}.yaml").write_text(
            yaml.safe_dump(
                {
                    "toolId": f"c-{name}",
                    "service": "comfyui",
                    "inputSchema": {"p": {"type": "string"}},
                    "outputSchema": {"image": {"type": "image"}},
                    "metadata": {"workflow": workflow},
                }
            )
        )
    result = runner.invoke(app, ["validate", str(defs)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "cycle.yaml: metadata.workflow: links form a cycle: nodes 1 → 2 → 1" in result.output
    assert "number.yaml: metadata.workflow:" in result.output
    assert "listinputs.yaml: metadata.workflow: node '1' has inputs that are not an object" in result.output
