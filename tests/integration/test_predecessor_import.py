"""The predecessor's four tool definitions (tests/data/predecessor-tools, as it stored them):
converted by `toolweave import predecessor`, validated, and — DALL·E 3, JoyCaption, the string
tool — run end to end against strict fakes; visibleIf holds where the inputs are prepared."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.fakes.apis import png
from tests.fakes.hf_api import FakeGradioSpace
from tests.fakes.openai_api import FakeOpenAI
from tests.helpers.loopback import serve_asgi

from toolweave.api.server import create_app
from toolweave.app import App
from toolweave.inputs import InputError
from toolweave.registry.predecessor import ConversionError, convert
from toolweave.settings import Settings

DATA = Path(__file__).resolve().parents[1] / "data" / "predecessor-tools"
FILES = sorted(DATA.glob("*.json"))
SPACE = "https://fancyfeast-joy-caption-beta-one.hf.space"


def toolweave(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "toolweave.cli", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    root = tmp_path_factory.mktemp("predecessor")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOOLWEAVE_")}
    env.update(TOOLWEAVE_HOME=str(root / "home"), OPENAI_API_KEY="sk-x")
    result = toolweave("import", "predecessor", *map(str, FILES), "-o", str(root / "tools"), env=env, cwd=root)
    return root / "tools", result


def test_the_four_files_are_the_predecessors() -> None:
    assert [f.name for f in FILES] == ["dall-e-3-image.json", "joycaption.json", "string-primitive.json",
                                       "vastmake.json"]


def test_all_four_convert_and_say_what_they_could_not_keep(converted: tuple[Path, Any]) -> None:
    folder, result = converted
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in folder.iterdir()) == [
        "dall-e-3-image.yaml", "joycaption.caption.yaml", "joycaption.prompt.yaml", "joycaption.yaml",
        "string-primitive.yaml", "vastmake.yaml",
    ]
    notes = result.stderr.splitlines()
    expected = [
        "dall-e-3-image.json: input 'responseFormat' is not kept",
        "dall-e-3-image.json: primaryInput 'text' (a kind) became the input 'prompt'",
        "dall-e-3-image.json: costTable became costingModel rateSource table, by model, size, quality",
        "dall-e-3-image.json: apiPath is not kept",
        "dall-e-3-image.json: webhookStrategy is not kept",
        "joycaption.json: became the job 'joycaption'",
        "joycaption.json: primaryInput 'image' (a kind) became the input 'imageUrl'",
        "string-primitive.json: became a job of the builtin text.concat and text.replace",
        "string-primitive.json: migrations is not kept",
        "vastmake.json: input 'workflow': its humanDefault 'flux-gen' became its default",
        "vastmake.json: service 'vastai' has no counterpart toolweave can call",
        "vastmake.json: costingModel {'rateSource': 'machine', 'unit': 'second'} has no rate or machine class",
        "vastmake.json: output 'imageUrl': its label 'Result Image' is not kept",
    ]
    for text in expected:
        assert any(line.startswith(text) for line in notes), text
    # Every file says, at its top, where it came from and what changed.
    dalle = (folder / "dall-e-3-image.yaml").read_text()
    assert dalle.startswith("# Converted from dall-e-3-image.json by `toolweave import predecessor`.")


def test_all_four_validate(converted: tuple[Path, Any]) -> None:
    folder, _ = converted
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOOLWEAVE_")}
    env.update(TOOLWEAVE_HOME=str(folder.parent / "home"), OPENAI_API_KEY="sk-x")
    result = toolweave("validate", str(folder), "--json", env=env, cwd=folder.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    found = {d["id"]: d for d in json.loads(result.stdout)["definitions"]}
    assert set(found) == {"dall-e-3-image", "joycaption", "joycaption.prompt", "joycaption.caption",
                          "string-primitive", "vastmake"}
    assert all(d["valid"] for d in found.values())


def test_the_converted_definitions_keep_what_matters(converted: tuple[Path, Any]) -> None:
    folder, _ = converted
    dalle = yaml.safe_load((folder / "dall-e-3-image.yaml").read_text())
    assert (dalle["service"], dalle["commandName"], dalle["version"]) == ("openai", "image", "1.0.0")
    table = dalle["costingModel"]["priceTable"]
    assert table["by"] == ["model", "size", "quality"] and table["prices"]["dall-e-3"]["1024x1792"]["hd"] == 0.12
    string = yaml.safe_load((folder / "string-primitive.yaml").read_text())
    inputs = {p["name"]: p for p in string["inputSchema"]}
    assert inputs["appendText"]["visibleIf"] == {"field": "operation", "values": ["concat"]}
    assert inputs["operation"]["displayName"] == "Operation"
    vast = yaml.safe_load((folder / "vastmake.yaml").read_text())
    vast_inputs = {p["name"]: p for p in vast["inputSchema"]}
    assert vast_inputs["workflow"]["default"] == "flux-gen" and vast["visibility"] == "hidden"
    assert vast_inputs["customScript"]["visibleIf"] == {"field": "workflow", "values": ["custom"]}


def test_a_file_that_is_not_a_tool_is_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="no toolId"):
        convert({"jobId": "x"})
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOOLWEAVE_")}
    env["TOOLWEAVE_HOME"] = str(tmp_path / "home")
    result = toolweave("import", "predecessor", str(bad), str(tmp_path / "missing.json"), env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: {bad}: not a predecessor tool definition (no toolId)",
        f"error: cannot read {tmp_path / 'missing.json'}: No such file or directory",
    ]


# --- running them ------------------------------------------------------------------------------------


@pytest.fixture
async def openai() -> AsyncIterator[FakeOpenAI]:
    fake = await FakeOpenAI("sk-test-openai").start()
    yield fake
    await fake.stop()


@pytest.fixture
async def space() -> AsyncIterator[FakeGradioSpace]:
    fake = await FakeGradioSpace().start()
    yield fake
    await fake.stop()


@pytest.fixture
async def app(converted: tuple[Path, Any], tmp_path: Path, openai: FakeOpenAI, space: FakeGradioSpace,
              monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[App]:
    folder, _ = converted
    tools = tmp_path / "tools"
    tools.mkdir()
    for path in folder.iterdir():  # the Space is a fake on loopback here
        (tools / path.name).write_text(path.read_text().replace(SPACE, space.base_url))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-openai")
    tw = App(Settings(home=tmp_path / "home", definitions=[tools], media_allow_private_urls=True,
                      services={"openai": {"base_url": f"{openai.base_url}/v1"}}))
    assert tw.definition_problems == []
    yield tw
    await tw.aclose()


async def run(tw: App, target: str, inputs: dict[str, Any]) -> dict[str, Any]:
    run_id = await tw.submit(target, inputs, account_id="acme")
    await tw.make_worker(4, idle_poll_seconds=0.05).run_until_idle(30)
    return await tw.get_run(run_id)


async def test_dall_e_3_runs_and_costs_what_its_table_says(app: App, openai: FakeOpenAI) -> None:
    result = await run(app, "dall-e-3-image", {"prompt": "a blue whale", "quality": "hd"})
    assert result["status"] == "completed", result["error"]
    assert openai.requests[0].json == {"prompt": "a blue whale", "n": 1, "model": "dall-e-3",
                                       "size": "1024x1024", "quality": "hd"}
    assert result["finalOutputs"]["image"]["mimeType"] == "image/png"
    assert Decimal(result["costUsd"]) == Decimal("0.08")
    # The same tool on gpt-image-1: base64 instead of a URL, the table's price for it.
    other = await run(app, "dall-e-3-image", {"prompt": "a whale", "model": "gpt-image-1", "quality": "low"})
    assert other["status"] == "completed", other["error"]
    assert Decimal(other["costUsd"]) == Decimal("0.011")


async def test_the_string_tool_runs_both_operations(app: App) -> None:
    joined = await run(app, "string-primitive", {"operation": "concat", "inputText": "tool", "appendText": "weave"})
    assert joined["status"] == "completed", joined["error"]
    assert joined["finalOutputs"] == {"result": "toolweave"}
    assert [s["status"] for s in joined["stepStatuses"]] == ["succeeded", "skipped", "succeeded"]
    replaced = await run(app, "string-primitive", {"operation": "Replace", "inputText": "a-b-c", "searchText": "-",
                                                   "replacementText": "+", "appendText": "ignored: hidden"})
    assert replaced["status"] == "completed", replaced["error"]
    assert replaced["finalOutputs"] == {"result": "a+b+c"}
    assert "appendText" not in replaced["jobInputs"]  # hidden by visibleIf: not an input of this run


async def test_visible_if_demands_only_what_is_visible(app: App) -> None:
    with pytest.raises(InputError) as caught:
        await app.submit("string-primitive", {"operation": "replace", "inputText": "x"}, account_id="acme")
    assert sorted(p.field for p in caught.value.problems) == ["replacementText", "searchText"]  # not appendText
    with pytest.raises(InputError) as caught:
        await app.submit("string-primitive", {"operation": "concat", "inputText": "x"}, account_id="acme")
    assert [str(p) for p in caught.value.problems] == ["appendText: is required"]


async def test_joycaption_runs_through_the_spaces_gradio_api(app: App, space: FakeGradioSpace) -> None:
    async with serve_asgi(create_app(app, run_worker=False)) as base_url:
        app.settings.public_base_url = base_url  # the Space downloads the image from here
        image = await app.put_media(png((5, 5, 5), (33, 22)), "acme", filename="p.png")
        run_id = await app.submit("joycaption", {"imageUrl": image, "captionType": "straightforward",
                                                 "extraOptions": "Include information about lighting.\n"
                                                                 "Do NOT mention the image's resolution."},
                                  account_id="acme")
        worker = app.make_worker(4, idle_poll_seconds=0.05)
        task = asyncio.create_task(worker.run())
        try:
            result = await app.wait(run_id, timeout=30)
        finally:
            worker.stop()
            await task
    assert result["status"] == "completed", result["error"]
    assert result["finalOutputs"]["description"] == "long straightforward caption for this image: a 33x22 picture"
    calls = [r for r in space.requests if r.method == "POST"]
    assert [r.path for r in calls] == ["/gradio_api/call/build_prompt", "/gradio_api/call/chat_joycaption"]
    assert calls[0].json == {"data": ["Straightforward", "long", ["Include information about lighting.",
                                                                 "Do NOT mention the image's resolution."], ""]}
    image_arg, prompt, temperature, top_p, tokens, log = calls[1].json["data"]
    assert image_arg["meta"] == {"_type": "gradio.FileData"} and image_arg["path"].startswith(f"{base_url}/media/")
    assert prompt.startswith("Write a long straightforward caption for this image. Include information about lighting.")
    assert (temperature, top_p, tokens, log) == (0.6, 0.9, 512, False)
    assert Decimal(result["costUsd"]) == Decimal("0.0019")


async def test_joycaption_without_a_public_url_fails_naming_why(app: App, space: FakeGradioSpace) -> None:
    """The Space takes files only by URL; a data: URI is refused by Gradio, and the run says so."""
    image = await app.put_media(png(), "acme", filename="p.png")
    result = await run(app, "joycaption", {"imageUrl": image})
    assert result["status"] == "failed"
    assert "is not in the upload folder and cannot be accessed" in result["error"]["message"]



def test_visible_if_on_the_command_line(converted: tuple[Path, Any], tmp_path: Path) -> None:
    folder, _ = converted
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOOLWEAVE_")}
    env.update(TOOLWEAVE_HOME=str(tmp_path / "home"), OPENAI_API_KEY="sk-x")
    base = ["run", "string-primitive", "-d", str(folder), "-i", "operation=replace", "-i", "inputText=a-b-c"]
    refused = toolweave(*base, "--wait", env=env, cwd=tmp_path)
    assert refused.returncode == 4
    assert "searchText: is required" in refused.stderr and "replacementText: is required" in refused.stderr
    assert "appendText" not in refused.stderr  # hidden for replace: not demanded
    ran = toolweave(*base, "-i", "searchText=-", "-i", "replacementText=+", "--wait", "--json", env=env, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["finalOutputs"] == {"result": "a+b+c"}
