from __future__ import annotations

import copy
from typing import Any

import pytest
from tests.unit.comfy_helpers import UI, load

from toolweave.comfy import (
    ObjectInfo,
    WorkflowImportError,
    apply_inputs,
    check_prompt,
    extract_outputs,
    notes_of,
    parse_bot_line,
    tool_from_workflow,
)
from toolweave.model import ParamType, ToolDefinition


@pytest.fixture(scope="module")
def info() -> ObjectInfo:
    return ObjectInfo.default()


def deploy_workflow() -> dict[str, Any]:
    """External inputs → core nodes → a ComfyDeploy output, a preview and a text preview."""
    ui = UI()
    ui.node(
        1,
        "ComfyUIDeployExternalImage",
        ["input_image", "Photo", "The photo to invert", ""],
        inputs=[("default_value", "IMAGE")],
        outputs=["IMAGE"],
    )
    ui.node(2, "ImageInvert", [], inputs=[("image", "IMAGE")], outputs=["IMAGE"])
    ui.node(3, "ComfyDeployOutputImage", ["ComfyUI", "webp", 80, "inverted"], inputs=[("images", "IMAGE")])
    ui.node(4, "PreviewImage", [], inputs=[("images", "IMAGE")])
    ui.node(5, "ComfyUIDeployExternalText", ["prompt", "a cat", "Prompt", "What to say"], outputs=["STRING"])
    ui.node(
        6,
        "StringConcatenate",
        ["", "!", ""],
        inputs=[("string_a", "STRING")],
        outputs=["STRING"],
        widget_inputs=("string_a",),
    )
    ui.node(7, "PreviewAny", [], inputs=[("source", "*")])
    ui.node(
        8, "ComfyUIDeployExternalNumberSlider", ["strength", 0.7, 0.1, 0.9, "Strength", ""], outputs=["FLOAT"]
    )
    ui.node(9, "ComfyUIDeployExternalEnum", ["style", "b", "a\nb\nc", "", ""], outputs=["*"])
    ui.node(10, "ComfyUIDeployExternalSeed", ["seed", -1, 1, 1000, "", ""], outputs=["INT"])
    ui.node(11, "ComfyUIDeployExternalBoolean", ["flag", True, "", ""], outputs=["BOOLEAN"])
    ui.node(12, "ComfyUIDeployExternalText", ["prompt", "", "", ""], outputs=["STRING"])
    ui.node(
        13, "MarkdownNote", ["Inverts a photo.\n@bot telegram send-as=document,filename=x.png"], pos=(0, 10)
    )
    ui.node(14, "Note", ["First line of the description."], pos=(0, -10))
    ui.connect(1, 0, 2, "image", "IMAGE")
    ui.connect(2, 0, 3, "images", "IMAGE")
    ui.connect(2, 0, 4, "images", "IMAGE")
    ui.connect(5, 0, 6, "string_a", "STRING")
    ui.connect(6, 0, 7, "source", "STRING")
    return ui.build()


def test_external_nodes_become_typed_inputs(info: ObjectInfo) -> None:
    tool = tool_from_workflow(
        deploy_workflow(), service="comfydeploy", object_info=info, deployment_id="dep-1", name="Invert photo"
    )
    assert tool.tool_id == "comfy-invert-photo"
    assert tool.display_name == "Invert photo"
    params = {p.name: p for p in tool.input_schema}
    assert list(params) == ["input_image", "prompt", "strength", "style", "seed", "flag"]
    image = params["input_image"]
    assert (image.type, image.required, image.display_name, image.description) == (
        ParamType.IMAGE,
        True,
        "Photo",
        "The photo to invert",
    )
    prompt = params["prompt"]
    assert (prompt.type, prompt.default, prompt.display_name) == (ParamType.TEXT, "a cat", "Prompt")
    strength = params["strength"]
    assert (strength.type, strength.default, strength.minimum, strength.maximum) == (
        ParamType.NUMBER,
        0.7,
        0.1,
        0.9,
    )
    style = params["style"]
    assert (style.type, style.enum, style.default) == (ParamType.ENUM, ["a", "b", "c"], "b")
    seed = params["seed"]
    assert (seed.type, seed.default, seed.minimum, seed.maximum) == (ParamType.SEED, None, 1, 1000)
    assert (params["flag"].type, params["flag"].default) == (ParamType.BOOLEAN, True)
    meta = tool.metadata
    assert meta["deploymentId"] == "dep-1"
    assert meta["inputMap"]["input_image"] == {"node": "1", "input": "input_id"}
    # Two External nodes share input_id "prompt": one input, written to both.
    assert meta["inputMap"]["prompt"] == [
        {"node": "5", "input": "default_value"},
        {"node": "12", "input": "default_value"},
    ]
    assert meta["inputMap"]["seed"] == {"node": "10", "input": "default_value"}
    assert meta["customNodes"] == ["comfyui-deploy"]
    merged = info.with_fallback(ObjectInfo.comfydeploy_nodes())
    assert check_prompt(meta["workflow"], merged) == []


def test_outputs_description_hints_category(info: ObjectInfo) -> None:
    tool = tool_from_workflow(deploy_workflow(), service="comfyui", object_info=info)
    assert [(o.name, o.type) for o in tool.output_schema] == [
        ("inverted", ParamType.IMAGE),
        ("text", ParamType.TEXT),
    ]
    assert tool.metadata["outputMap"] == {
        "inverted": {"node": "3", "kind": "images"},
        "text": {"node": "7", "kind": "text"},
    }
    assert tool.description == "First line of the description.\n\nInverts a photo."
    assert tool.delivery_hints == {"telegram": {"send-as": "document", "filename": "x.png"}}
    assert tool.platform_hints.primary_input == "input_image"
    assert tool.platform_hints.category == "image-to-image"
    assert tool.tool_id == "comfy-workflow"
    # The definition survives a round trip through its file form.
    assert ToolDefinition.model_validate(tool.dump()) == tool


def test_previews_are_outputs_when_nothing_else_is(info: ObjectInfo) -> None:
    tool = tool_from_workflow(
        load("ui_format_basic_mask_ops.json"), service="comfyui", object_info=info, tool_id="masks"
    )
    assert len(tool.output_schema) == 18
    assert all(o.type is ParamType.IMAGE for o in tool.output_schema)
    assert tool.metadata["outputMap"]["image_326"] == {"node": "326", "kind": "images"}
    # Its LoadImage (node 374) feeds nothing: ComfyUI never runs it, so it is not an input.
    assert tool.metadata["workflow"]["374"]["class_type"] == "LoadImage"
    assert tool.input_schema == [] and tool.metadata["inputMap"] == {}
    assert tool.description.startswith("Masks are grayscale maps")


def test_plain_workflow_prompts_and_primitives(info: ObjectInfo) -> None:
    ui = UI()
    ui.node(1, "CheckpointLoaderSimple", ["m.safetensors"], outputs=["MODEL", "CLIP", "VAE"])
    ui.node(2, "CLIPTextEncode", ["a red fox"], inputs=[("clip", "CLIP")], outputs=["CONDITIONING"])
    ui.node(3, "CLIPTextEncode", ["blurry"], inputs=[("clip", "CLIP")], outputs=["CONDITIONING"])
    ui.node(
        4,
        "EmptyLatentImage",
        [512, 512, 1],
        inputs=[("width", "INT")],
        outputs=["LATENT"],
        widget_inputs=("width",),
    )
    ui.node(
        5,
        "KSampler",
        [1, "fixed", 20, 7, "euler", "normal", 1],
        inputs=[
            ("model", "MODEL"),
            ("positive", "CONDITIONING"),
            ("negative", "CONDITIONING"),
            ("latent_image", "LATENT"),
        ],
        outputs=["LATENT"],
    )
    ui.node(6, "VAEDecode", [], inputs=[("samples", "LATENT"), ("vae", "VAE")], outputs=["IMAGE"])
    ui.node(7, "SaveImage", ["out"], inputs=[("images", "IMAGE")])
    ui.node(8, "PrimitiveInt", [768, "fixed"], outputs=["INT"], title="Width")
    for origin, slot, target, name in [
        (1, 1, 2, "clip"),
        (1, 1, 3, "clip"),
        (1, 0, 5, "model"),
        (2, 0, 5, "positive"),
        (3, 0, 5, "negative"),
        (4, 0, 5, "latent_image"),
        (5, 0, 6, "samples"),
        (1, 2, 6, "vae"),
        (6, 0, 7, "images"),
        (8, 0, 4, "width"),
    ]:
        ui.connect(origin, slot, target, name)
    tool = tool_from_workflow(ui.build(), service="comfyui", object_info=None, name="t2i")
    params = {p.name: p for p in tool.input_schema}
    assert list(params) == ["width", "prompt", "negative_prompt"]
    assert (params["width"].type, params["width"].default) == (ParamType.INTEGER, 768)
    assert params["prompt"].default == "a red fox"
    assert tool.metadata["inputMap"]["prompt"] == {"node": "2", "input": "text"}
    assert tool.platform_hints.primary_input == "prompt"
    assert tool.platform_hints.category == "text-to-image"
    assert check_prompt(tool.metadata["workflow"], info) == []


def test_refusals(info: ObjectInfo) -> None:
    with pytest.raises(WorkflowImportError) as caught:
        tool_from_workflow(deploy_workflow(), service="comfydeploy", object_info=info)
    assert caught.value.reason == "missing_deployment_id"
    with pytest.raises(WorkflowImportError) as caught:
        tool_from_workflow(deploy_workflow(), service="replicate", object_info=info)
    assert caught.value.reason == "invalid_arguments"
    ui = UI()
    ui.node(1, "EmptyImage", [8, 8, 1, 0], outputs=["IMAGE"])
    with pytest.raises(WorkflowImportError) as caught:
        tool_from_workflow(ui.build(), service="comfyui", object_info=info)
    assert caught.value.reason == "no_outputs"
    ui.node(2, "OpenAIGPTImage1", ["a cat"], outputs=["IMAGE"])
    with pytest.raises(WorkflowImportError) as caught:
        tool_from_workflow(ui.build(), service="comfyui", object_info=info)
    assert caught.value.reason == "api_nodes"
    assert caught.value.classes == ["OpenAIGPTImage1"]


def test_external_node_without_literal_input_id(info: ObjectInfo) -> None:
    prompt = {
        "1": {"class_type": "PrimitiveString", "inputs": {"value": "x"}},
        "2": {"class_type": "ComfyUIDeployExternalText", "inputs": {"input_id": ["1", 0]}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
    }
    with pytest.raises(WorkflowImportError) as caught:
        tool_from_workflow(prompt, service="comfyui", object_info=info)
    assert caught.value.reason == "invalid_inputs"


def test_parse_bot_line_and_notes() -> None:
    assert parse_bot_line("@bot telegram send-as=photo caption") == (
        "telegram",
        {"send-as": "photo", "caption": True},
    )
    assert parse_bot_line("not a hint") is None
    workflow = {
        "nodes": [{"id": 1, "type": "Note", "pos": {"0": 0, "1": 0}, "widgets_values": ["@bot web x=1"]}]
    }
    assert notes_of(workflow) == ("", {"web": {"x": "1"}})


def test_apply_inputs() -> None:
    workflow = {
        "1": {
            "class_type": "ComfyUIDeployExternalText",
            "inputs": {"input_id": "prompt", "default_value": "a"},
        },
        "2": {
            "class_type": "ComfyUIDeployExternalText",
            "inputs": {"input_id": "prompt", "default_value": "a"},
        },
        "3": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
        "4": {
            "class_type": "ComfyUIDeployExternalImageBatch",
            "inputs": {"input_id": "imgs", "images": "[]"},
        },
        "5": {"class_type": "PrimitiveString", "inputs": {"value": "x"}},
    }
    original = copy.deepcopy(workflow)
    input_map = {
        "prompt": [{"node": "1", "input": "default_value"}, {"node": "2", "input": "default_value"}],
        "image": {"node": "3", "input": "image"},
        "imgs": {"node": "4", "input": "images", "encode": "json"},
        "tags": {"node": "5", "input": "value"},
        "unused": {"node": "5", "input": "value"},
    }
    result = apply_inputs(
        workflow,
        input_map,
        {
            "prompt": "a dog",
            "image": "uploads/cat.png",
            "imgs": ["https://x/1.png"],
            "tags": ["a", "b"],
            "unused": None,
        },
    )
    assert workflow == original
    assert result["1"]["inputs"]["default_value"] == "a dog"
    assert result["2"]["inputs"]["default_value"] == "a dog"
    assert result["3"]["inputs"]["image"] == "uploads/cat.png"
    assert result["4"]["inputs"]["images"] == '["https://x/1.png"]'
    assert result["5"]["inputs"]["value"] == {"__value__": ["a", "b"]}
    with pytest.raises(ValueError, match="'nope' is not in the tool's inputMap"):
        apply_inputs(workflow, input_map, {"nope": 1})
    with pytest.raises(ValueError, match="missing node '9'"):
        apply_inputs(workflow, {"x": {"node": "9", "input": "v"}}, {"x": 1})


def test_extract_outputs_from_real_history() -> None:
    history = load("converted_basic_mask_ops_history.json")
    outputs = next(iter(history.values()))["outputs"]
    result = extract_outputs(
        outputs, {"first": {"node": "326", "kind": "images"}, "missing": {"node": "999", "kind": "images"}}
    )
    assert result["missing"] == []
    assert result["first"] == [outputs["326"]["images"][0]]
    assert result["first"][0]["type"] == "temp"


def test_extract_outputs_kinds() -> None:
    history = {
        "9": {"images": [{"filename": "v.mp4", "subfolder": "video", "type": "output"}], "animated": [True]},
        "4": {"text": ["hello world"]},
        "5": {
            "audio": [{"filename": "a.flac", "subfolder": "", "type": "output"}],
            "files": [{"filename": "f.bin", "subfolder": "", "type": "output"}],
        },
    }
    result = extract_outputs(
        history,
        {
            "video": {"node": "9", "kind": "images"},
            "text": {"node": "4", "kind": "text"},
            "any": {"node": "5", "kind": "*"},
        },
    )
    assert result["video"] == [
        {"filename": "v.mp4", "subfolder": "video", "type": "output", "animated": True}
    ]
    assert result["text"] == [{"text": "hello world"}]
    assert [i["filename"] for i in result["any"]] == ["a.flac", "f.bin"]


def scale_and_mirror_prompt() -> dict[str, Any]:
    """A loader that feeds the graph, one that feeds nothing, a titled scale primitive, a titled save."""
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}, "_meta": {"title": "Photo"}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "unused.png"}, "_meta": {"title": "Load Image"}},
        "3": {"class_type": "PrimitiveFloat", "inputs": {"value": 2.0}, "_meta": {"title": "scale"}},
        "4": {
            "class_type": "ImageScaleBy",
            "inputs": {"image": ["1", 0], "upscale_method": "bilinear", "scale_by": ["3", 0]},
        },
        "5": {"class_type": "ImageFlip", "inputs": {"image": ["4", 0], "flip_method": "x-axis (vertically)"}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "m"}, "_meta": {"title": "mirrored"}},
        "7": {"class_type": "PrimitiveInt", "inputs": {"value": 3}, "_meta": {"title": "unused number"}},
    }


def test_only_nodes_the_server_runs_become_inputs(info: ObjectInfo) -> None:
    prompt = scale_and_mirror_prompt()
    if not info.has("ImageFlip"):
        prompt["5"] = {"class_type": "ImageInvert", "inputs": {"image": ["4", 0]}}
    tool = tool_from_workflow(prompt, service="comfyui", object_info=info, tool_id="mirror")
    names = [p.name for p in tool.input_schema]
    # Node 2 loads an image nobody uses and node 7 feeds nothing: ComfyUI never runs them.
    assert names == ["photo", "scale"]
    assert tool.metadata["inputMap"]["photo"] == {"node": "1", "input": "image"}


def test_primitives_take_the_bounds_of_the_widget_they_feed(info: ObjectInfo) -> None:
    from toolweave.inputs import InputError, prepare_inputs
    from toolweave.registry.validate_tool import validate_tool

    tool = tool_from_workflow(scale_and_mirror_prompt(), service="comfyui", object_info=info, tool_id="mirror")
    scale = tool.input("scale")
    assert scale is not None
    spec = info.input_spec("ImageScaleBy", "scale_by")
    assert spec is not None
    assert (scale.type, scale.minimum, scale.maximum, scale.default) == (
        ParamType.NUMBER, spec.options["min"], spec.options["max"], 2.0
    )
    assert "scale_by" in scale.description
    assert validate_tool(tool) == []
    photo = "data:image/png;base64,iVBORw0KGgo="
    with pytest.raises(InputError) as caught:
        prepare_inputs(tool.input_schema, {"photo": photo, "scale": "0"})
    assert "scale: must be at least 0.01 (got 0)" in str(caught.value)
    with pytest.raises(InputError) as caught:
        prepare_inputs(tool.input_schema, {"photo": photo, "scale": 9})
    assert "scale: must be at most 8 (got 9)" in str(caught.value)
    assert prepare_inputs(tool.input_schema, {"photo": photo, "scale": "8"})["scale"] == 8


def test_primitive_bounds_intersect_clamp_and_follow_int_and_combo_widgets(info: ObjectInfo) -> None:
    prompt = {
        "1": {"class_type": "PrimitiveFloat", "inputs": {"value": 20.0}, "_meta": {"title": "size"}},
        "2": {"class_type": "EmptyImage", "inputs": {"width": ["3", 0], "height": ["3", 0], "batch_size": 1, "color": 0}},
        "3": {"class_type": "PrimitiveInt", "inputs": {"value": 0}, "_meta": {"title": "side"}},
        "4": {"class_type": "ImageScaleBy", "inputs": {"image": ["2", 0], "upscale_method": ["5", 0], "scale_by": ["1", 0]}},
        "5": {"class_type": "PrimitiveString", "inputs": {"value": "lanczos"}, "_meta": {"title": "method"}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "x"}},
    }
    tool = tool_from_workflow(prompt, service="comfyui", object_info=info, tool_id="sized")
    params = {p.name: p for p in tool.input_schema}
    # 20 is past ImageScaleBy's maximum of 8: the default is clamped into the widget's bounds.
    assert (params["size"].maximum, params["size"].default) == (8.0, 8.0)
    width = info.input_spec("EmptyImage", "width")
    assert width is not None
    assert (params["side"].type, params["side"].minimum, params["side"].default) == (
        ParamType.INTEGER, width.options["min"], width.options["min"]
    )
    assert params["method"].type is ParamType.ENUM and "lanczos" in (params["method"].enum or [])
    assert params["method"].default == "lanczos"


def test_output_names_come_from_node_titles(info: ObjectInfo) -> None:
    tool = tool_from_workflow(scale_and_mirror_prompt(), service="comfyui", object_info=info, tool_id="mirror")
    assert [o.name for o in tool.output_schema] == ["mirrored"]
    assert tool.metadata["outputMap"] == {"mirrored": {"node": "6", "kind": "images"}}


def test_imported_deploy_tools_validate(info: ObjectInfo) -> None:
    from toolweave.registry.validate_tool import validate_tool

    tool = tool_from_workflow(deploy_workflow(), service="comfydeploy", object_info=info, deployment_id="dep-1")
    image = tool.input("input_image")
    assert image is not None and image.type is ParamType.IMAGE and not image.accepts_url
    assert validate_tool(tool) == []
    assert validate_tool(ToolDefinition.model_validate(tool.dump())) == []
