"""Registration of map steps and collected lists: what is refused, each with its path and one sentence."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from tests.unit.test_registry_validate import catalog, job

from toolweave.model.definitions import JobDefinition
from toolweave.registry import validate_job

LISTS = {"prompts": {"type": "json", "required": True}, "prompt": {"type": "string", "default": "a cat"}}


def check(definition: JobDefinition) -> list[str]:
    return [f"{p.path}: {p.message}" for p in validate_job(definition, catalog())]


def mapped(**fields: Any) -> dict[str, Any]:
    return {
        "stepId": "each", "toolId": "gen", "map": {"over": {"sourceJobInput": "prompts"}, **fields.pop("map", {})},
        "inputMappings": fields.pop("inputMappings", [{"sourceItem": True, "targetInputName": "prompt"}]), **fields,
    }


def test_a_map_over_a_json_input_with_the_item_and_templates_is_accepted() -> None:
    ok = job([mapped(inputMappings=[{"template": "{{ index }}: {{ item.text }}", "targetInputName": "prompt"}]),
              {"stepId": "up", "toolId": "upscale", "map": {"over": {"sourceStepId": "each", "sourceOutputName": "image"}},
               "inputMappings": [{"sourceItem": True, "targetInputName": "image"}]}],
             inputSchema=LISTS, outputSchema={"images": {"type": "json", "sourceStepId": "up", "sourceOutputName": "image"}})
    assert check(ok) == []


def test_what_a_map_step_refuses() -> None:
    assert check(job([mapped(map={"over": {"sourceJobInput": "prompt"}})], inputSchema=LISTS)) == [
        "steps[0].map.over: a map runs over a list, and job input 'prompt' is a string; declare it as json (a list of items)"
    ]
    assert check(job([mapped(map={"over": {"sourceJobInput": "nope"}})], inputSchema=LISTS)) == [
        "steps[0].map.over.sourceJobInput: the job has no input 'nope' (its inputs: 'prompts', 'prompt')"
    ]
    assert check(job([mapped(map={"over": {"value": "abc"}})], inputSchema=LISTS)) == [
        "steps[0].map.over.value: a map runs over a list; the value is str"
    ]
    both = check(job([mapped(map={"over": {"sourceJobInput": "prompts", "value": [1]}})], inputSchema=LISTS))
    assert both == ["steps[0].map.over: the list step 'each' maps over names 2 sources (sourceJobInput, value); "
                    "give exactly one of sourceJobInput, sourceStepId with sourceOutputName, or value"]
    over_image = job([{"stepId": "g", "toolId": "gen", "inputMappings": [{"sourceJobInput": "prompt", "targetInputName": "prompt"}]},
                      mapped(map={"over": {"sourceStepId": "g", "sourceOutputName": "image"}})], inputSchema=LISTS)
    assert check(over_image) == ["steps[1].map.over: a map runs over a list, and output 'image' of step 'g' is an image"]


def test_the_item_and_map_outputs_are_typed() -> None:
    outside = job([{"stepId": "g", "toolId": "gen", "inputMappings": [{"sourceItem": True, "targetInputName": "prompt"}]}])
    assert check(outside) == ["steps[0].inputMappings[0].sourceItem: sourceItem reads the item of a map step, and step 'g' has no map"]
    template = job([{"stepId": "g", "toolId": "gen", "inputMappings": [{"template": "{{ item }}", "targetInputName": "prompt"}]}])
    assert check(template) == [
        "steps[0].inputMappings[0].template: template '{{ item }}' uses 'item'; only job and steps are available "
        "(item and index only in a map step)"
    ]
    into_image = job([mapped(), {"stepId": "up", "toolId": "upscale",
                                 "inputMappings": [{"sourceStepId": "each", "sourceOutputName": "image", "targetInputName": "image"}]}],
                     inputSchema=LISTS)
    assert check(into_image) == [
        "steps[1].inputMappings[0]: output 'image' of step 'each' is a list (one image per item of the map step), but "
        "input 'image' takes an image; feed it to a json input, map over it, or take one item with path"
    ]
    one = job([mapped(), {"stepId": "up", "toolId": "upscale", "inputMappings": [
        {"sourceStepId": "each", "sourceOutputName": "image", "path": "[0]", "targetInputName": "image"}]}], inputSchema=LISTS)
    assert check(one) == []
    item_type = job([mapped(), {"stepId": "c", "toolId": "count", "map": {"over": {"sourceStepId": "each", "sourceOutputName": "image"}},
                                "inputMappings": [{"sourceItem": True, "targetInputName": "n"}]}], inputSchema=LISTS)
    assert check(item_type) == [
        "steps[1].inputMappings[0]: an item of the list step 'c' maps over is an image, but input 'n' takes a number"
    ]
    output = job([mapped()], inputSchema=LISTS, outputSchema={"image": {"type": "image", "sourceStepId": "each", "sourceOutputName": "image"}})
    assert check(output) == [
        "outputSchema.image: output 'image' of step 'each' is a list (one per item of the map step), but the job "
        "output 'image' is an image; declare it as json"
    ]


def test_collect_feeds_a_json_input_from_existing_sources() -> None:
    grid = {"stepId": "c", "toolId": "count", "inputMappings": [{"targetInputName": "n", "collect": [
        {"sourceStepId": "g", "sourceOutputName": "image"}, {"sourceStepId": "g", "sourceOutputName": "nope"},
        {"sourceJobInput": "missing"}, {"value": 1, "sourceJobInput": "prompt"}]}]}
    g = {"stepId": "g", "toolId": "gen", "inputMappings": [{"sourceJobInput": "prompt", "targetInputName": "prompt"}]}
    assert check(job([g, grid], inputSchema=LISTS)) == [
        "steps[1].inputMappings[0].collect: collect gives a list, but input 'n' takes a number; it may only feed a json input",
        "steps[1].inputMappings[0].collect[1].sourceOutputName: step 'g' (tool 'gen') has no output 'nope' (its outputs: 'image', 'meta')",
        "steps[1].inputMappings[0].collect[2].sourceJobInput: the job has no input 'missing' (its inputs: 'prompts', 'prompt')",
        "steps[1].inputMappings[0].collect[3]: part 3 of the list collected into 'n' names 2 sources (sourceJobInput, value); "
        "give exactly one of sourceJobInput, sourceStepId with sourceOutputName, or value",
    ]
    assert job([g, grid], inputSchema=LISTS).step("c").all_dependencies == ["g"]  # type: ignore[union-attr]


@pytest.mark.parametrize("spec", [{"concurrency": 0}, {"concurrency": 101}, {"minSuccess": -1}, {"minSuccess": "150%"},
                                  {"minSuccess": "most"}, {"maxItems": 100_001}])
def test_map_settings_out_of_bounds_are_refused_when_loaded(spec: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        job([mapped(map=spec)], inputSchema=LISTS)
