from __future__ import annotations

from typing import Any

import pytest
from tests.unit.comfy_helpers import UI, load

from toolweave.comfy import ObjectInfo, WorkflowImportError, check_prompt, parse_workflow, to_api


@pytest.fixture(scope="module")
def info() -> ObjectInfo:
    return ObjectInfo.default()


def test_real_conversion_pair_matches_the_editor(info: ObjectInfo) -> None:
    ui = load("ui_format_basic_mask_ops.json")
    expected = load("converted_basic_mask_ops.json")
    assert to_api(ui, info) == expected
    assert check_prompt(expected, info) == []


def test_positional_widgets_skip_control_after_generate(info: ObjectInfo) -> None:
    ui = UI()
    ui.node(
        1,
        "KSampler",
        [42, "randomize", 7, 3.5, "euler", "karras", 0.6],
        inputs=[
            ("model", "MODEL"),
            ("positive", "CONDITIONING"),
            ("negative", "CONDITIONING"),
            ("latent_image", "LATENT"),
        ],
    )
    prompt = to_api(ui.build(), info)
    assert prompt["1"]["inputs"] == {
        "seed": 42,
        "steps": 7,
        "cfg": 3.5,
        "sampler_name": "euler",
        "scheduler": "karras",
        "denoise": 0.6,
    }


def test_old_files_with_a_bool_control_value(info: ObjectInfo) -> None:
    ui = UI()
    ui.node(1, "PrimitiveInt", [5, False], outputs=["INT"])
    assert to_api(ui.build(), info)["1"]["inputs"] == {"value": 5}


def test_upload_widget_is_skipped_and_defaults_fill_missing_values(info: ObjectInfo) -> None:
    ui = UI()
    ui.node(1, "LoadImage", ["photo.png", "image"], outputs=["IMAGE", "MASK"])
    ui.node(2, "ImageScaleBy", ["bilinear"], inputs=[("image", "IMAGE")], outputs=["IMAGE"])
    ui.node(3, "SaveImage", None, inputs=[("images", "IMAGE")])
    ui.connect(1, 0, 2, "image", "IMAGE")
    ui.connect(2, 0, 3, "images", "IMAGE")
    prompt = to_api(ui.build(), info)
    assert prompt["1"]["inputs"] == {"image": "photo.png"}
    assert prompt["2"]["inputs"] == {"upscale_method": "bilinear", "scale_by": 1.0, "image": ["1", 0]}
    assert prompt["3"]["inputs"] == {"filename_prefix": "ComfyUI", "images": ["2", 0]}
    assert prompt["3"]["_meta"] == {"title": "Save Image"}
    assert check_prompt(prompt, info) == []


def test_titles_and_list_literals(info: ObjectInfo) -> None:
    ui = UI()
    ui.node(1, "PrimitiveString", [["a", "b"]], outputs=["STRING"], title="My text")
    prompt = to_api(ui.build(), info)
    assert prompt["1"]["inputs"] == {"value": {"__value__": ["a", "b"]}}
    assert prompt["1"]["_meta"]["title"] == "My text"


def _chain(mode_of_middle: int) -> dict[str, Any]:
    ui = UI()
    ui.node(1, "EmptyImage", [64, 48, 1, 0], outputs=["IMAGE"])
    ui.node(2, "ImageInvert", [], inputs=[("image", "IMAGE")], outputs=["IMAGE"], mode=mode_of_middle)
    ui.node(3, "SaveImage", ["out"], inputs=[("images", "IMAGE")])
    ui.node(4, "MarkdownNote", ["# hello"])
    ui.connect(1, 0, 2, "image", "IMAGE")
    ui.connect(2, 0, 3, "images", "IMAGE")
    return ui.build()


def test_bypassed_node_passes_its_input_through(info: ObjectInfo) -> None:
    prompt = to_api(_chain(4), info)
    assert set(prompt) == {"1", "3"}
    assert prompt["3"]["inputs"]["images"] == ["1", 0]


def test_muted_node_is_dropped_with_the_links_to_it(info: ObjectInfo) -> None:
    prompt = to_api(_chain(2), info)
    assert set(prompt) == {"1", "3"}
    assert "images" not in prompt["3"]["inputs"]
    assert check_prompt(prompt, info) == ["node 3 (SaveImage): required input 'images' is missing"]


def test_reroute_and_primitive_node(info: ObjectInfo) -> None:
    ui = UI()
    ui.node(
        1,
        "EmptyImage",
        [64, 48, 1, 0],
        outputs=["IMAGE"],
        inputs=[("width", "INT")],
        widget_inputs=("width",),
    )
    ui.node(2, "Reroute", [], inputs=[("", "*")], outputs=["IMAGE"])
    ui.node(3, "SaveImage", ["x"], inputs=[("images", "IMAGE")])
    ui.node(4, "PrimitiveNode", [320, "fixed"], outputs=["INT"])
    ui.connect(1, 0, 2, "", "IMAGE")
    ui.connect(2, 0, 3, "images", "IMAGE")
    ui.connect(4, 0, 1, "width", "INT")
    prompt = to_api(ui.build(), info)
    assert set(prompt) == {"1", "3"}
    assert prompt["3"]["inputs"]["images"] == ["1", 0]
    assert prompt["1"]["inputs"]["width"] == 320


def test_linked_widget_input_takes_the_link(info: ObjectInfo) -> None:
    ui = UI()
    ui.node(1, "PrimitiveInt", [99, "fixed"], outputs=["INT"])
    ui.node(
        2,
        "EmptyImage",
        [64, 48, 1, 0],
        inputs=[("width", "INT")],
        outputs=["IMAGE"],
        widget_inputs=("width",),
    )
    ui.node(3, "SaveImage", ["x"], inputs=[("images", "IMAGE")])
    ui.connect(1, 0, 2, "width", "INT")
    ui.connect(2, 0, 3, "images", "IMAGE")
    prompt = to_api(ui.build(), info)
    assert prompt["2"]["inputs"]["width"] == ["1", 0]
    assert prompt["2"]["inputs"]["height"] == 48
    assert check_prompt(prompt, info) == []


def _subgraph(sub_id: str, *, inner_widgets: list[Any]) -> dict[str, Any]:
    """A subgraph: IMAGE in → ImageBlur(radius from a subgraph INT input) → IMAGE out."""
    return {
        "id": sub_id,
        "version": 1,
        "name": "Blur",
        "inputs": [
            {"id": "a", "name": "image", "type": "IMAGE", "linkIds": [1]},
            {"id": "b", "name": "blur_radius", "type": "INT", "linkIds": [2]},
        ],
        "outputs": [{"id": "c", "name": "IMAGE", "type": "IMAGE", "linkIds": [3]}],
        "widgets": [],
        "nodes": [
            {
                "id": 7,
                "type": "ImageBlur",
                "mode": 0,
                "inputs": [
                    {"name": "image", "type": "IMAGE", "link": 1},
                    {"name": "blur_radius", "type": "INT", "link": 2, "widget": {"name": "blur_radius"}},
                ],
                "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [3]}],
                "widgets_values": inner_widgets,
            },
            {"id": 8, "type": "Note", "mode": 0, "widgets_values": ["inside"]},
        ],
        "links": [
            {"id": 1, "origin_id": -10, "origin_slot": 0, "target_id": 7, "target_slot": 0, "type": "IMAGE"},
            {"id": 2, "origin_id": -10, "origin_slot": 1, "target_id": 7, "target_slot": 1, "type": "INT"},
            {"id": 3, "origin_id": 7, "origin_slot": 0, "target_id": -20, "target_slot": 0, "type": "IMAGE"},
        ],
    }


def _with_subgraph(instance_widgets: list[Any], inner_widgets: list[Any]) -> dict[str, Any]:
    ui = UI()
    ui.node(1, "EmptyImage", [64, 48, 1, 0], outputs=["IMAGE"])
    ui.node(5, "sub-1", instance_widgets, inputs=[("image", "IMAGE")], outputs=["IMAGE"])
    ui.node(3, "SaveImage", ["x"], inputs=[("images", "IMAGE")])
    ui.connect(1, 0, 5, "image", "IMAGE")
    ui.connect(5, 0, 3, "images", "IMAGE")
    ui.subgraphs.append(_subgraph("sub-1", inner_widgets=inner_widgets))
    return ui.build()


def test_subgraph_is_flattened_with_instance_widget_values(info: ObjectInfo) -> None:
    prompt = to_api(_with_subgraph([9], [3, 0.5]), info)
    assert set(prompt) == {"1", "5:7", "3"}
    assert prompt["5:7"]["inputs"] == {"blur_radius": 9, "sigma": 0.5, "image": ["1", 0]}
    assert prompt["3"]["inputs"]["images"] == ["5:7", 0]
    assert check_prompt(prompt, info) == []


def test_subgraph_with_proxy_widgets_keeps_the_inner_value(info: ObjectInfo) -> None:
    prompt = to_api(_with_subgraph([], [3, 0.5]), info)
    assert prompt["5:7"]["inputs"]["blur_radius"] == 3


def test_nested_subgraphs_get_path_ids(info: ObjectInfo) -> None:
    inner = _subgraph("inner", inner_widgets=[4, 1.0])
    outer = {
        "id": "outer",
        "version": 1,
        "name": "Outer",
        "inputs": [{"id": "i", "name": "image", "type": "IMAGE", "linkIds": [1]}],
        "outputs": [{"id": "o", "name": "IMAGE", "type": "IMAGE", "linkIds": [2]}],
        "nodes": [
            {
                "id": 11,
                "type": "inner",
                "mode": 0,
                "inputs": [{"name": "image", "type": "IMAGE", "link": 1}],
                "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [2]}],
                "widgets_values": [6],
            }
        ],
        "links": [
            {"id": 1, "origin_id": -10, "origin_slot": 0, "target_id": 11, "target_slot": 0, "type": "IMAGE"},
            {"id": 2, "origin_id": 11, "origin_slot": 0, "target_id": -20, "target_slot": 0, "type": "IMAGE"},
        ],
    }
    ui = UI()
    ui.node(1, "EmptyImage", [64, 48, 1, 0], outputs=["IMAGE"])
    ui.node(20, "outer", [], inputs=[("image", "IMAGE")], outputs=["IMAGE"])
    ui.node(3, "SaveImage", ["x"], inputs=[("images", "IMAGE")])
    ui.connect(1, 0, 20, "image", "IMAGE")
    ui.connect(20, 0, 3, "images", "IMAGE")
    ui.subgraphs.extend([outer, inner])
    prompt = to_api(ui.build(), info)
    assert set(prompt) == {"1", "20:11:7", "3"}
    assert prompt["20:11:7"]["inputs"]["blur_radius"] == 6
    assert prompt["20:11:7"]["inputs"]["image"] == ["1", 0]
    assert prompt["3"]["inputs"]["images"] == ["20:11:7", 0]


def test_bypassed_subgraph_instance_passes_through(info: ObjectInfo) -> None:
    workflow = _with_subgraph([9], [3, 0.5])
    next(n for n in workflow["nodes"] if n["id"] == 5)["mode"] = 4
    prompt = to_api(workflow, info)
    assert set(prompt) == {"1", "3"}
    assert prompt["3"]["inputs"]["images"] == ["1", 0]


def test_missing_classes_are_named(info: ObjectInfo) -> None:
    ui = UI()
    ui.node(1, "NoSuchNode", [1])
    ui.node(2, "AnotherMissing", [])
    ui.node(3, "AlsoMissingButMuted", [], mode=2)
    with pytest.raises(WorkflowImportError) as caught:
        to_api(ui.build(), info)
    assert caught.value.reason == "missing_nodes"
    assert caught.value.missing_classes == ["AnotherMissing", "NoSuchNode"]
    assert "AnotherMissing, NoSuchNode" in str(caught.value)


def test_api_format_is_returned_unchanged_after_a_check(info: ObjectInfo) -> None:
    prompt = load("converted_basic_mask_ops.json")
    assert to_api(prompt, info) == prompt
    broken = {"1": {"class_type": "NoSuchNode", "inputs": {}}}
    with pytest.raises(WorkflowImportError) as caught:
        to_api(broken, info)
    assert caught.value.missing_classes == ["NoSuchNode"]


@pytest.mark.parametrize("workflow", [{}, {"foo": 1}, {"1": {"inputs": {}}}])
def test_unsupported_formats(info: ObjectInfo, workflow: dict[str, Any]) -> None:
    with pytest.raises(WorkflowImportError) as caught:
        to_api(workflow, info)
    assert caught.value.reason == "unsupported_format"


def test_parse_workflow_errors() -> None:
    with pytest.raises(WorkflowImportError) as caught:
        parse_workflow("{nope", source="w.json")
    assert caught.value.reason == "invalid_json"
    assert "w.json" in str(caught.value)
    with pytest.raises(WorkflowImportError) as caught:
        parse_workflow("[1, 2]")
    assert caught.value.reason == "unsupported_format"


def test_malformed_links_are_a_clear_error(info: ObjectInfo) -> None:
    workflow = _chain(0)
    workflow["links"].append(["x"])
    with pytest.raises(WorkflowImportError) as caught:
        to_api(workflow, info)
    assert caught.value.reason == "invalid_workflow"


def test_group_nodes_are_refused(info: ObjectInfo) -> None:
    workflow = _chain(0)
    workflow["extra"]["groupNodes"] = {"g": {}}
    with pytest.raises(WorkflowImportError) as caught:
        to_api(workflow, info)
    assert caught.value.reason == "unsupported_feature"


def test_check_prompt_finds_structural_problems(info: ObjectInfo) -> None:
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "ImageToMask", "inputs": {"image": ["1", 0], "channel": "red"}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["1", 3]}},
        "5": {"class_type": "PreviewImage", "inputs": {"images": ["99", 0]}},
        "6": {"class_type": "ImageInvert", "inputs": {}},  # not reachable: ignored, like the server
        "7": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}},
        "8": {"class_type": "PreviewImage", "inputs": {"images": [1, 2, 3]}},
    }
    problems = check_prompt(prompt, info)
    assert problems == [
        "node 3 (SaveImage): input 'images' expects IMAGE but node 2 (ImageToMask) output 0 is MASK",
        "node 4 (PreviewImage): input 'images' links to output 3 of node 1 (EmptyImage), which has 1 output(s)",
        "node 5 (PreviewImage): input 'images' links to missing node 99",
        "node 7 (SaveImage): required input 'filename_prefix' is missing",
        "node 8 (PreviewImage): input 'images' is a bare list, not a [node_id, slot] link",
    ]
    assert check_prompt({"1": {"class_type": "Nope", "inputs": {}}}, info) == [
        "node 1: unknown node class Nope"
    ]
    assert check_prompt({"1": {"class_type": "ImageInvert", "inputs": {}}}, info) == [
        "the prompt has no output node"
    ]
