"""Resolving a step's inputs from job inputs, earlier outputs, static values and templates."""

from __future__ import annotations

from typing import Any

import pytest

from toolweave.engine.mapping import (
    MappingError,
    SourceUnavailable,
    compile_template,
    follow_path,
    mapping_unavailable,
    parse_path,
    render_template,
    resolve_step_inputs,
)
from toolweave.model.definitions import Step

ARTIFACT = {
    "kind": "artifact",
    "sha256": "cd" * 32,
    "mimeType": "image/png",
    "size": 10,
    "uri": "artifact:" + "cd" * 32,
}


def step(*mappings: dict[str, Any], step_id: str = "s") -> Step:
    return Step.model_validate({"stepId": step_id, "toolId": "t", "inputMappings": list(mappings)})


def done(**outputs: Any) -> dict[str, Any]:
    return {"status": "succeeded", "outputs": outputs}


def test_each_kind_of_source() -> None:
    s = step(
        {"sourceJobInput": "prompt", "targetInputName": "text"},
        {"sourceJobInput": "negative", "targetInputName": "negative"},
        {"sourceStepId": "g", "sourceOutputName": "image", "targetInputName": "image"},
        {
            "sourceStepId": "g",
            "sourceOutputName": "meta",
            "path": "boxes[1].label",
            "targetInputName": "label",
        },
        {"value": {"k": [1]}, "targetInputName": "options"},
        {"value": None, "targetInputName": "nothing"},
        {
            "template": "{{ job.prompt }}, ultra detailed, {{ steps.g.outputs.image }}",
            "targetInputName": "prompt_2",
        },
    )
    steps = {"g": done(image=ARTIFACT, meta={"boxes": [{"label": "a"}, {"label": "b"}]})}
    resolved = resolve_step_inputs(s, job={"prompt": "a cat"}, steps=steps)
    assert resolved == {
        "text": "a cat",
        "image": ARTIFACT,
        "label": "b",
        "options": {"k": [1]},
        "nothing": None,
        "prompt_2": f"a cat, ultra detailed, artifact:{'cd' * 32}",
    }
    assert resolved["image"] is ARTIFACT  # media passes through unchanged
    assert "negative" not in resolved  # absent job input: the tool's default applies
    resolved["options"]["k"].append(2)
    assert s.input_mappings[4].value == {"k": [1]}  # static values are copied


def test_a_skipped_source_uses_the_default_or_is_unavailable() -> None:
    with_default = step(
        {"sourceStepId": "g", "sourceOutputName": "image", "targetInputName": "image", "default": None}
    )
    assert resolve_step_inputs(with_default, job={}, steps={"g": {"status": "skipped"}}) == {"image": None}
    without = step({"sourceStepId": "g", "sourceOutputName": "image", "targetInputName": "image"})
    with pytest.raises(SourceUnavailable) as caught:
        resolve_step_inputs(without, job={}, steps={"g": {"status": "failed"}})
    assert str(caught.value) == "input 'image' of step 's' needs output 'image' of step 'g', which failed"
    assert mapping_unavailable(without, {"g": {"status": "skipped"}}) == (
        "input 'image' needs output 'image' of step 'g', which was skipped"
    )
    assert mapping_unavailable(with_default, {"g": {"status": "skipped"}}) is None
    assert mapping_unavailable(without, {"g": done(image=ARTIFACT)}) is None
    templated = step({"template": "{{ steps.g.outputs.text }}", "targetInputName": "t"})
    assert mapping_unavailable(templated, {"g": {"status": "cancelled"}}) == (
        "input 't' is a template that reads step 'g', which was cancelled"
    )


def test_missing_outputs_and_paths() -> None:
    s = step({"sourceStepId": "g", "sourceOutputName": "meta", "path": "a[3]", "targetInputName": "x"})
    with pytest.raises(MappingError, match=r"index 3 is out of range \(the list has 1\)"):
        resolve_step_inputs(s, job={}, steps={"g": done(meta={"a": [1]})})
    absent = step({"sourceStepId": "g", "sourceOutputName": "nope", "targetInputName": "x"})
    with pytest.raises(MappingError, match="which did not produce it"):
        resolve_step_inputs(absent, job={}, steps={"g": done()})


def test_paths() -> None:
    assert parse_path('a.b[0]["c d"][-1]') == ("a", "b", 0, "c d", -1)
    assert follow_path({"a": {"b": [{"c d": [1, 2]}]}}, 'a.b[0]["c d"][-1]') == 2
    for bad in ("", "a..b", ".a", "a[", "a[x]"):
        with pytest.raises(MappingError):
            parse_path(bad)
    with pytest.raises(MappingError, match="there is no key 'z'"):
        follow_path({"a": 1}, "z")
    with pytest.raises(MappingError, match="cannot take 'b' of int"):
        follow_path({"a": 1}, "a.b")


def test_templates_are_sandboxed_strict_and_cached() -> None:
    assert compile_template("{{ job.x }}") is compile_template("{{ job.x }}")
    with pytest.raises(MappingError, match=r"does not parse: .*\(line 1\)"):
        compile_template("{{ job.x ")
    with pytest.raises(MappingError, match="has no attribute 'y'"):
        render_template("{{ job.y }}", job={}, steps={})
    with pytest.raises(MappingError, match="the sandbox forbids"):
        render_template("{{ job.__class__.__mro__ }}", job={}, steps={})
    assert render_template("{{ job.y | default('none') }}", job={}, steps={}) == "none"
