"""Loading definition files: formats, comments, lists, and the problems of broken files."""

from __future__ import annotations

import json
from pathlib import Path

from toolweave.model.definitions import JobDefinition, ToolDefinition
from toolweave.registry import load_definitions
from toolweave.registry.loader import strip_json_comments

TOOL_YAML = """
toolId: t
service: builtin
inputSchema:
  prompt: {type: string, required: true}
outputSchema:
  - {name: image, type: image}
"""


def test_strip_json_comments_keeps_strings_and_positions() -> None:
    text = '{\n  "url": "https://x.example/a//b", // a comment\n  /* block\n  */ "n": [1, 2,],\n}'
    stripped = strip_json_comments(text)
    assert json.loads(stripped) == {"url": "https://x.example/a//b", "n": [1, 2]}
    assert stripped.count("\n") == text.count("\n")
    assert strip_json_comments('{"a": "say \\"//hi\\""}') == '{"a": "say \\"//hi\\""}'


def test_yaml_json_and_lists(tmp_path: Path) -> None:
    (tmp_path / "one.yaml").write_text(TOOL_YAML)
    (tmp_path / "many.yml").write_text("- {toolId: a, service: builtin}\n- {toolId: b, service: http}\n")
    (tmp_path / "job.json").write_text(
        '// a job\n{"jobId": "j", "steps": [{"stepId": "s", "toolId": "t"}], // trailing\n}\n'
    )
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "x.yaml").write_text("not: [valid")
    definitions, problems = load_definitions([tmp_path])
    assert problems == []
    assert sorted(
        type(d).__name__ + ":" + (getattr(d, "tool_id", None) or getattr(d, "job_id", ""))
        for d in definitions
    ) == [
        "JobDefinition:j",
        "ToolDefinition:a",
        "ToolDefinition:b",
        "ToolDefinition:t",
    ]
    tool = next(d for d in definitions if isinstance(d, ToolDefinition) and d.tool_id == "t")
    assert [p.name for p in tool.input_schema] == ["prompt"]
    assert [o.name for o in tool.output_schema] == ["image"]
    assert tool.source == str(tmp_path / "one.yaml")


def test_input_schema_as_mapping_or_list_loads_the_same(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "toolId: a\nservice: builtin\ninputSchema: {x: {type: integer, default: 2}}\n"
    )
    (tmp_path / "b.yaml").write_text(
        "toolId: b\nservice: builtin\ninputSchema: [{name: x, type: integer, default: 2}]\n"
    )
    definitions, problems = load_definitions([tmp_path / "a.yaml", tmp_path / "b.yaml"])
    assert problems == []
    a, b = definitions
    assert isinstance(a, ToolDefinition) and isinstance(b, ToolDefinition)
    assert a.input_schema == b.input_schema


def test_command_name_is_derived(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("toolId: a\nservice: builtin\ndisplayName: Make A Picture!\n")
    (definition,), _ = load_definitions([tmp_path])
    assert definition.command_name == "make_a_picture"


def test_broken_files_report_file_path_and_sentence(tmp_path: Path) -> None:
    (tmp_path / "a_syntax.json").write_text('{"toolId": "x",\n "service": }')
    (tmp_path / "b_syntax.yaml").write_text("toolId: [x\n")
    (tmp_path / "c_fields.yaml").write_text(
        "toolId: t\nservice: builtin\nsevrice: x\ncategory: y\ninputSchema:\n  prompt: {type: img}\n  n: {type: integer, minimum: low}\n"
    )
    (tmp_path / "d_kind.yaml").write_text(
        "- {name: x}\n- {toolId: ok, service: builtin}\n- {jobId: j, steps: []}\n"
    )
    (tmp_path / "e_empty.yaml").write_text("")
    (tmp_path / "f_dup.json").write_text('{"toolId": "a", "toolId": "b", "service": "x"}')
    definitions, problems = load_definitions([tmp_path, tmp_path / "missing.yaml"])
    assert [d.tool_id for d in definitions if isinstance(d, ToolDefinition)] == ["ok"]
    assert [str(p).replace(str(tmp_path), "D") for p in problems] == [
        "D/a_syntax.json: is not valid JSON: Expecting value (line 2, column 13)",
        "D/b_syntax.yaml: is not valid YAML: expected ',' or ']', but got '<stream end>' (line 2, column 1)",
        "D/c_fields.yaml: inputSchema.prompt.type: unknown type 'img'; allowed types are: string, text, integer, "
        "number, boolean, enum, seed, image, video, audio, file, json",
        "D/c_fields.yaml: inputSchema.n.minimum: should be a valid number, unable to parse string as a number (got 'low')",
        "D/c_fields.yaml: sevrice: 'sevrice' is not a known field; did you mean 'service'?",
        "D/c_fields.yaml: category: 'category' is not a known field here; it belongs under platformHints",
        "D/d_kind.yaml: [0]: a definition needs a toolId (for a tool) or a jobId (for a job)",
        "D/d_kind.yaml: [2].steps: should have at least 1 item after validation, not 0",
        "D/e_empty.yaml: the file holds no definitions",
        "D/f_dup.json: the key 'toolId' appears twice in one object",
        "D/missing.yaml: does not exist",
    ]


def test_the_seed_example_loads_verbatim() -> None:
    path = Path(__file__).resolve().parents[2] / "examples" / "seed" / "generate_and_upscale_image.json"
    text = path.read_text()
    assert "// Example toolId" in text  # the comments of the seed notes are kept
    (definition,), problems = load_definitions([path])
    assert problems == []
    assert isinstance(definition, JobDefinition)
    assert definition.job_id == "generate_and_upscale_image"
    assert [p.name for p in definition.input_schema] == ["prompt", "negative_prompt"]
    assert [s.step_id for s in definition.steps] == ["generate_image", "upscale_image"]
    assert definition.steps[1].dependencies == ["generate_image"]
    assert definition.output_schema[0].name == "upscaled_image_url"
