"""prepare_inputs: defaults, coercion of chat text, unknown fields, bounds, enums, media, seeds."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from toolweave.input_json_schema import json_schema
from toolweave.inputs import SEED_MAX, InputError, classify_media, prepare_inputs, visibility
from toolweave.model.definitions import InputParam


def params(**specs: dict[str, Any]) -> list[InputParam]:
    return [InputParam.model_validate({"name": name, **spec}) for name, spec in specs.items()]


SCHEMA = params(
    prompt={"type": "text", "required": True},
    steps={"type": "integer", "default": 20, "minimum": 1, "maximum": 50},
    cfg={"type": "number", "default": 7.5},
    hires={"type": "boolean", "default": False},
    sampler={"type": "enum", "enum": ["Euler", "DPM++ 2M"], "default": "Euler"},
    image={"type": "image"},
    extra={"type": "json"},
)


def test_defaults_are_merged_and_optional_fields_left_out() -> None:
    assert prepare_inputs(SCHEMA, {"prompt": "a cat"}) == {
        "prompt": "a cat",
        "steps": 20,
        "cfg": 7.5,
        "hires": False,
        "sampler": "Euler",
    }


def test_text_from_chat_is_coerced() -> None:
    out = prepare_inputs(
        SCHEMA,
        {
            "prompt": "a cat",
            "steps": "5",
            "cfg": "3",
            "hires": "true",
            "sampler": "dpm++ 2m",
            "extra": '{"a": [1]}',
        },
    )
    assert out["steps"] == 5 and isinstance(out["steps"], int)
    assert out["cfg"] == 3
    assert out["hires"] is True
    assert out["sampler"] == "DPM++ 2M"
    assert out["extra"] == {"a": [1]}
    assert prepare_inputs(SCHEMA, {"prompt": "x", "hires": "No", "steps": "7.0"})["steps"] == 7


def test_without_coercion_text_is_not_a_number() -> None:
    with pytest.raises(InputError) as caught:
        prepare_inputs(SCHEMA, {"prompt": "x", "steps": "5"}, coerce_text=False)
    assert [str(p) for p in caught.value.problems] == ["steps: must be a whole number, not text"]


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(InputError) as caught:
        prepare_inputs(
            SCHEMA,
            {
                "steps": "99",
                "cfg": "lots",
                "hires": "maybe",
                "sampler": "heun",
                "image": "ftp://x/y.png",
                "colour": "red",
            },
        )
    problems = [str(p) for p in caught.value.problems]
    assert problems == [
        "colour: is not an input of this tool (expected: prompt, steps, cfg, hires, sampler, image, extra)",
        "prompt: is required",
        "steps: must be at most 50 (got 99)",
        "cfg: must be a number (got 'lots')",
        "hires: must be true or false (got 'maybe')",
        "sampler: must be one of Euler, DPM++ 2M (got 'heun')",
        "image: the URL scheme 'ftp' is not supported; use an http(s) URL or a data: URI",
    ]
    assert str(caught.value).startswith("7 problems with the inputs: colour: is not an input")


def test_minimum_and_whole_numbers() -> None:
    with pytest.raises(InputError) as caught:
        prepare_inputs(SCHEMA, {"prompt": "x", "steps": 0})
    assert str(caught.value) == "1 problem with the inputs: steps: must be at least 1 (got 0)"
    with pytest.raises(InputError, match="steps: must be a whole number"):
        prepare_inputs(SCHEMA, {"prompt": "x", "steps": 2.5})
    with pytest.raises(InputError, match="steps: must be a whole number, not a boolean"):
        prepare_inputs(SCHEMA, {"prompt": "x", "steps": True})


def test_media_forms(tmp_path: Path) -> None:
    picture = tmp_path / "p.png"
    picture.write_bytes(b"\x89PNG")
    for value, form in (
        ("https://example.com/a.png", "url"),
        ("data:image/png;base64,iVBORw0KGgo=", "data"),
        (str(picture), "path"),
    ):
        assert classify_media(value) == form
        assert prepare_inputs(SCHEMA, {"prompt": "x", "image": value})["image"] == value
    artifact = {"kind": "artifact", "sha256": "ab" * 32, "mimeType": "image/png", "size": 4}
    assert prepare_inputs(SCHEMA, {"prompt": "x", "image": artifact})["image"] is artifact


def test_media_problems(tmp_path: Path) -> None:
    cases = {
        str(tmp_path / "missing.png"): f"no such file: {tmp_path / 'missing.png'}",
        "data:video/mp4;base64,AAAA": "the data: URI holds video/mp4, not image",
        "data:nonsense": "the data: URI is malformed (expected data:<type>[;base64],<data>)",
        "http://": "the URL 'http://' has no host",
    }
    for value, message in cases.items():
        with pytest.raises(InputError) as caught:
            prepare_inputs(SCHEMA, {"prompt": "x", "image": value})
        assert [p.message for p in caught.value.problems] == [message]
    with pytest.raises(InputError, match="local paths are not accepted here"):
        prepare_inputs(SCHEMA, {"prompt": "x", "image": "/etc/hostname"}, allow_paths=False)
    with pytest.raises(ValueError, match="must be text"):
        classify_media(5)


def test_seeds_are_random_when_absent() -> None:
    schema = params(seed={"type": "seed", "default": 42})
    rng = random.Random(7)
    first = prepare_inputs(schema, {}, rng=rng)["seed"]
    second = prepare_inputs(schema, {"seed": -1}, rng=rng)["seed"]
    assert 0 <= first <= SEED_MAX and 0 <= second <= SEED_MAX
    assert first != second
    assert prepare_inputs(schema, {"seed": "123"}) == {"seed": 123}
    with pytest.raises(InputError, match="a seed must be 0 or more"):
        prepare_inputs(schema, {"seed": -5})


def test_seeds_drawn_for_runs_are_not_fixed_by_the_programs_random() -> None:
    """A host program (or a test framework) seeding ``random`` must not make every run draw the
    same seed, nor have its own sequence moved by the runs' draws."""
    schema = params(seed={"type": "seed"})
    random.seed(3)
    first = prepare_inputs(schema, {})["seed"]
    random.seed(3)
    second = prepare_inputs(schema, {})["seed"]
    assert first != second  # the same only once in 2**32
    random.seed(3)
    expected = random.random()
    random.seed(3)
    prepare_inputs(schema, {})
    assert random.random() == expected


def test_empty_chat_answers_count_as_absent() -> None:
    assert prepare_inputs(SCHEMA, {"prompt": "x", "steps": "  "})["steps"] == 20
    assert prepare_inputs(params(t={"type": "string"}), {"t": ""}) == {"t": ""}


def test_enum_values_keep_their_type() -> None:
    schema = params(scale={"type": "integer", "enum": [2, 4]})
    assert prepare_inputs(schema, {"scale": "4"}) == {"scale": 4}
    with pytest.raises(InputError, match="scale: must be one of 2, 4"):
        prepare_inputs(schema, {"scale": 3})


def test_json_schema() -> None:
    schema = json_schema(SCHEMA + params(seed={"type": "seed"}))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["required"] == ["prompt"]
    assert schema["additionalProperties"] is False
    props = schema["properties"]
    assert props["steps"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 50,
        "default": 20,
        "x-toolweave-type": "integer",
    }
    assert props["sampler"]["enum"] == ["Euler", "DPM++ 2M"]
    assert props["image"]["anyOf"][0]["type"] == "string"
    assert props["seed"]["minimum"] == 0
    assert props["extra"] == {"x-toolweave-type": "json"}


# --- visibleIf ---------------------------------------------------------------------------------------


STRING_OPS = [
    InputParam.model_validate({"name": "operation", "type": "enum", "enum": ["concat", "replace"], "required": True}),
    InputParam.model_validate({"name": "text", "type": "string", "required": True}),
    InputParam.model_validate({"name": "append", "type": "string", "required": True,
                               "visibleIf": {"field": "operation", "values": ["concat"]}}),
    InputParam.model_validate({"name": "search", "type": "string", "required": True,
                               "visibleIf": {"field": "operation", "value": "replace"}}),
    InputParam.model_validate({"name": "flags", "type": "string", "default": "g",
                               "visibleIf": {"field": "search", "values": ["x"]}}),
]


def test_an_input_required_only_when_visible_is_not_demanded_when_hidden() -> None:
    assert prepare_inputs(STRING_OPS, {"operation": "concat", "text": "a", "append": "b"}) == {
        "operation": "concat", "text": "a", "append": "b"}
    # A value given for a hidden input is ignored, not an error; case-insensitive enums count.
    assert prepare_inputs(STRING_OPS, {"operation": "REPLACE", "text": "a", "search": "x", "append": 5}) == {
        "operation": "replace", "text": "a", "search": "x", "flags": "g"}
    with pytest.raises(InputError) as caught:
        prepare_inputs(STRING_OPS, {"operation": "replace", "text": "a"})
    assert [str(p) for p in caught.value.problems] == ["search: is required"]


def test_visibility_follows_chains_and_an_absent_control_hides() -> None:
    assert visibility(STRING_OPS, {"operation": "replace", "search": "x"}) == {
        "operation": True, "text": True, "append": False, "search": True, "flags": True}
    assert visibility(STRING_OPS, {"operation": "concat", "search": "x"})["flags"] is False  # search is hidden
    assert visibility(STRING_OPS, {})["append"] is False
    with pytest.raises(InputError) as caught:
        prepare_inputs(STRING_OPS, {"text": "a"})
    assert [str(p) for p in caught.value.problems] == ["operation: is required"]


def test_the_json_schema_requires_a_visible_input_under_its_condition() -> None:
    schema = json_schema(STRING_OPS)
    assert schema["required"] == ["operation", "text"]
    assert schema["allOf"] == [
        {"if": {"properties": {"operation": {"enum": ["concat"]}}, "required": ["operation"]},
         "then": {"required": ["append"]}},
        {"if": {"properties": {"operation": {"enum": ["replace"]}}, "required": ["operation"]},
         "then": {"required": ["search"]}},
    ]
    assert schema["properties"]["append"]["x-toolweave-visible-if"] == {"field": "operation", "values": ["concat"]}


def test_an_artifact_written_as_text_for_a_media_input_says_how_to_write_it() -> None:
    with pytest.raises(ValueError, match=r'given as \{"kind": "artifact", "sha256": "…"\}, not as artifact: text'):
        classify_media("artifact:" + "ab" * 32)
