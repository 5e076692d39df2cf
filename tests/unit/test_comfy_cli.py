from __future__ import annotations

import json
from pathlib import Path

import yaml
from tests.unit.comfy_helpers import DATA
from typer.testing import CliRunner

from toolweave.cli import app
from toolweave.model import ToolDefinition

runner = CliRunner()


def test_import_writes_a_reviewable_definition(tmp_path: Path) -> None:
    out = tmp_path / "tools" / "masks.yaml"
    result = runner.invoke(
        app,
        [
            "import",
            "comfyui",
            str(DATA / "ui_format_basic_mask_ops.json"),
            "--service",
            "comfyui",
            "--id",
            "masks",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert text.startswith("# Imported from ui_format_basic_mask_ops.json")
    data = yaml.safe_load(text)
    assert "toolId" in data and "inputSchema" in data and "outputSchema" in data
    tool = ToolDefinition.model_validate(data)
    assert tool.tool_id == "masks" and tool.service == "comfyui"
    assert tool.metadata["workflow"] == json.loads((DATA / "converted_basic_mask_ops.json").read_text())


def test_import_for_comfydeploy_with_object_info_file(tmp_path: Path) -> None:
    info_file = tmp_path / "object_info.json"
    from toolweave.comfy import ObjectInfo

    info_file.write_text(json.dumps(ObjectInfo.default().raw()))
    result = runner.invoke(
        app,
        [
            "import",
            "comfyui",
            str(DATA / "ui_format_basic_mask_ops.json"),
            "--service",
            "comfydeploy",
            "--deployment-id",
            "dep-42",
            "--object-info",
            str(info_file),
        ],
    )
    assert result.exit_code == 0, result.output
    tool = ToolDefinition.model_validate(yaml.safe_load(result.stdout))
    assert tool.service == "comfydeploy" and tool.metadata["deploymentId"] == "dep-42"
    assert tool.input_schema == []  # ComfyUI Deploy takes inputs only through External nodes


def test_import_errors_are_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    result = runner.invoke(app, ["import", "comfyui", str(bad), "--service", "comfyui"])
    assert result.exit_code == 1
    assert "invalid_json" in result.output and "Traceback" not in result.output
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"1": {"class_type": "NoSuchNode", "inputs": {}}}))
    result = runner.invoke(app, ["import", "comfyui", str(unknown), "--service", "comfyui"])
    assert result.exit_code == 1
    assert "missing_nodes" in result.output and "NoSuchNode" in result.output
    result = runner.invoke(app, ["import", "comfyui", str(tmp_path / "nope.json"), "--service", "comfyui"])
    assert result.exit_code == 1 and "cannot read" in result.output


def test_a_refusal_stays_one_line_when_piped(tmp_path: Path) -> None:
    """Piped output is 80 columns to rich; a refusal is still one line for grep and logs."""
    deep = tmp_path / ("a-folder-with-a-rather-long-name-" * 3)
    deep.mkdir()
    missing = deep / "workflow-that-does-not-exist.json"
    result = runner.invoke(app, ["import", "comfyui", str(missing), "--service", "comfyui"])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and len(lines[0]) > 120, lines
    assert lines[0].startswith("error (invalid_json): cannot read ") and lines[0].endswith("No such file or directory")
