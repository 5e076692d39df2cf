"""The definitions commands: validate, tools list/show, jobs list/show."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from toolweave.cli import app

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

BROKEN_TOOLS = """\
- toolId: gen
  service: builtin
  inputSchema: {prompt: {type: string, required: true}}
  outputSchema: {image: {type: image}}
- toolId: count
  service: builtin
  inputSchema: {n: {type: number, required: true}}
  outputSchema: {total: {type: number}}
"""

BROKEN_JOB = """\
{
  // a two-step cycle, a step whose tool does not exist, an image mapped into a number
  "jobId": "broken",
  "inputSchema": {"prompt": {"type": "string", "required": true}},
  "steps": [
    {"stepId": "a", "toolId": "gen", "dependencies": ["b"],
     "inputMappings": [{"sourceJobInput": "prompt", "targetInputName": "prompt"}]},
    {"stepId": "b", "toolId": "count", "dependencies": ["a"],
     "inputMappings": [{"sourceStepId": "a", "sourceOutputName": "image", "targetInputName": "n"}]},
    {"stepId": "c", "toolId": "no-such-tool",
     "inputMappings": [{"sourceJobInput": "prompt", "targetInputName": "prompt"}]}
  ]
}
"""


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLWEAVE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TOOLWEAVE_DEFINITIONS", raising=False)
    monkeypatch.delenv("TOOLWEAVE_TEST_TOOLS", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "tools.yaml").write_text(BROKEN_TOOLS)
    (folder / "job.json").write_text(BROKEN_JOB)
    return folder


runner = CliRunner()


CONFIGURED = {
    "TOOLWEAVE_COMFYUI_SERVERS": "local=http://127.0.0.1:9",
    "TOOLWEAVE_COMFYDEPLOY_API_KEY": "cd-key",
    "OPENAI_API_KEY": "sk-x", "REPLICATE_API_TOKEN": "r8_x", "FAL_KEY": "f:x", "HF_TOKEN": "hf_x",
}
"""Every service the examples name, configured (validation checks that they are)."""


@pytest.fixture(autouse=True)
def configured(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in CONFIGURED.items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def unconfigured(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in CONFIGURED:
        monkeypatch.delenv(key, raising=False)


def test_validate_examples_exits_0_with_a_table() -> None:
    result = runner.invoke(app, ["validate", str(EXAMPLES)])
    assert result.exit_code == 0, result.output
    assert "Definitions found" in result.stdout
    assert "generate_and_upscale_image" in result.stdout or "generate_and_upsca" in result.stdout
    assert result.stdout.strip().endswith("definitions valid.")
    assert result.stderr == ""


def test_validate_a_broken_folder_lists_every_problem(broken: Path) -> None:
    result = runner.invoke(app, ["validate", str(broken)])
    assert result.exit_code == 1
    job = broken / "job.json"
    assert result.stderr.splitlines() == [
        f"{job}: steps[2].toolId: tool 'no-such-tool' is not registered",
        f"{job}: steps[1].inputMappings[0]: output 'image' of step 'a' is an image, but input 'n' takes a number",
        f"{job}: steps[0]: steps 'a', 'b' form a cycle (a → b → a; each waits for the next)",
        "3 problems found.",
    ]
    assert "refused" in result.stdout


def test_validate_json(broken: Path) -> None:
    result = runner.invoke(app, ["validate", "--json", str(broken)])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["ok"] is False
    assert [d["id"] for d in data["definitions"] if d["valid"]] == ["gen", "count"]
    assert [p["path"] for p in data["problems"]] == [
        "steps[2].toolId",
        "steps[1].inputMappings[0]",
        "steps[0]",
    ]
    ok = json.loads(runner.invoke(app, ["validate", "--json", str(EXAMPLES / "seed")]).stdout)
    assert ok["ok"] is True and ok["problems"] == []


def test_validate_without_paths_uses_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = runner.invoke(app, ["validate"])
    assert result.exit_code == 4  # refused, like every command given nothing to work on
    assert "give a file or folder, or set TOOLWEAVE_DEFINITIONS" in result.stderr
    (tmp_path / "toolweave.toml").write_text(f'[toolweave]\ndefinitions = ["{EXAMPLES / "seed"}"]\n')
    assert runner.invoke(app, ["validate"]).exit_code == 0
    monkeypatch.setenv("TOOLWEAVE_DEFINITIONS", str(tmp_path / "nowhere"))
    result = runner.invoke(app, ["validate"])
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == f"{tmp_path / 'nowhere'}: does not exist"


def test_tools_list_and_show(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLWEAVE_DEFINITIONS", str(EXAMPLES / "seed"))
    listed = runner.invoke(app, ["tools", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    ids = [t["toolId"] for t in json.loads(listed.stdout)]
    assert {"comfy-fluxGeneral", "comfy-RealESRGAN"} <= set(ids)
    assert "comfy-fluxGeneral" in runner.invoke(app, ["tools", "list"]).stdout
    shown = runner.invoke(app, ["tools", "show", "comfy-RealESRGAN"])
    assert shown.exit_code == 0
    assert "image_to_upscale (image, required)" in shown.stdout
    assert "upscaled_image_url (image)" in shown.stdout
    as_json = json.loads(runner.invoke(app, ["tools", "show", "comfy-RealESRGAN", "--json"]).stdout)
    assert as_json["service"] == "comfydeploy"
    missing = runner.invoke(app, ["tools", "show", "nope"])
    assert missing.exit_code == 4  # an unknown id is refused (docs/cli.md)
    assert missing.stderr.strip() == "error: no tool 'nope' is registered"
    typo = runner.invoke(app, ["tools", "show", "comfy-RealESRGN"])
    assert typo.exit_code == 4 and "did you mean 'comfy-RealESRGAN'?" in typo.stderr
    job_typo = runner.invoke(app, ["jobs", "show", "generate_and_upscale_imag"])
    assert job_typo.exit_code == 4 and "did you mean 'generate_and_upscale_image'?" in job_typo.stderr


def test_jobs_list_and_show_draw_the_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLWEAVE_DEFINITIONS", str(EXAMPLES / "seed"))
    listed = runner.invoke(app, ["jobs", "list", "--json"])
    assert [j["jobId"] for j in json.loads(listed.stdout)] == ["generate_and_upscale_image"]
    shown = runner.invoke(app, ["jobs", "show", "generate_and_upscale_image"])
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert " └─ generate_image · tool comfy-fluxGeneral" in lines
    assert " └─ upscale_image · tool comfy-RealESRGAN · after generate_image" in lines
    assert "        image_to_upscale ← generate_image.image" in lines
    assert "    upscaled_image_url (string) ← upscale_image.upscaled_image_url" in lines
    assert lines.index("layer 1") < lines.index("layer 2")
    as_json = json.loads(runner.invoke(app, ["jobs", "show", "generate_and_upscale_image", "--json"]).stdout)
    assert as_json["order"] == ["generate_image", "upscale_image"]
    assert runner.invoke(app, ["jobs", "show", "nope"]).exit_code == 4


def test_list_warns_about_refused_definitions(broken: Path) -> None:
    result = runner.invoke(app, ["jobs", "list", "-d", str(broken)])
    assert result.exit_code == 0
    assert "warning: 3 problems in the definitions" in result.stderr
    assert "0 jobs" in result.stdout


def test_a_diamond_is_drawn_in_layers() -> None:
    from toolweave.model.definitions import JobDefinition
    from toolweave.registry.describe import job_dag_lines

    job = JobDefinition.model_validate(
        {
            "jobId": "d",
            "steps": [
                {"stepId": "top", "toolId": "t"},
                {"stepId": "left", "toolId": "t", "dependencies": ["top"], "condition": "job.x > 1"},
                {"stepId": "right", "toolId": "t", "dependencies": ["top"]},
                {"stepId": "bottom", "toolId": "t", "dependencies": ["left", "right"]},
            ],
        }
    )
    lines = job_dag_lines(job)
    assert lines == [
        "inputs: (no inputs)",
        "   │",
        "   ▼",
        "layer 1",
        " └─ top · tool t",
        "   │",
        "   ▼",
        "layer 2 (in parallel)",
        " ├─ left · tool t · after top",
        " │      if job.x > 1",
        " └─ right · tool t · after top",
        "   │",
        "   ▼",
        "layer 3",
        " └─ bottom · tool t · after left, right",
    ]


def test_a_tool_naming_an_unknown_or_unconfigured_service_is_a_problem_naming_it(
    tmp_path: Path, unconfigured: None
) -> None:
    folder = tmp_path / "defs"
    folder.mkdir()
    (folder / "string.yaml").write_text("toolId: string-primitive\nservice: string\n")
    (folder / "typo.yaml").write_text("toolId: t\nservice: comfyiu\n")
    (folder / "dalle.yaml").write_text((EXAMPLES / "http" / "openai-dall-e-3.yaml").read_text())
    (folder / "invert.yaml").write_text((EXAMPLES / "comfyui" / "comfy-invert.yaml").read_text())
    result = runner.invoke(app, ["validate", str(folder)])
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert f"{folder / 'string.yaml'}: service: no service named 'string' is known here (services: " in lines[2]
    assert f"{folder / 'typo.yaml'}: service: no service named 'comfyiu' is known here; did you mean 'comfyui'?" in lines[3]
    assert lines[:2] == [
        f"{folder / 'dalle.yaml'}: service: service 'openai' is not configured: environment variable "
        "OPENAI_API_KEY is not set",
        f"{folder / 'invert.yaml'}: service: service 'comfyui' is not configured: no ComfyUI server is "
        "configured (set comfyui_servers / TOOLWEAVE_COMFYUI_SERVERS)",
    ]
    assert lines[-1] == "4 problems found."


def test_validate_against_an_object_info_that_lacks_a_node_class(tmp_path: Path) -> None:
    from toolweave.comfy import ObjectInfo

    info = ObjectInfo.default().raw()
    del info["ImageInvert"]
    saved = tmp_path / "object_info.json"
    saved.write_text(json.dumps(info))
    tool = EXAMPLES / "comfyui" / "comfy-invert.yaml"
    result = runner.invoke(app, ["validate", str(tool), "--object-info", str(saved)])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"{tool}: metadata.workflow: node 2 uses ImageInvert, which {saved} does not have",
        "1 problem found.",
    ]
    assert "refused" in result.stdout
    (tmp_path / "full.json").write_text(json.dumps(ObjectInfo.default().raw()))
    ok = runner.invoke(app, ["validate", str(tool), "--object-info", str(tmp_path / "full.json")])
    assert ok.exit_code == 0, ok.output
    broken = runner.invoke(app, ["validate", str(tool), "--object-info", str(tmp_path / "nope.json")])
    assert broken.exit_code == 1 and "cannot check against" in broken.stderr and "cannot read object_info" in broken.stderr
