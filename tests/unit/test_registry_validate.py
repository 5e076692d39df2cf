"""One test per validation rule of tool and job definitions."""

from __future__ import annotations

from typing import Any

import pytest

from toolweave.model.definitions import JobDefinition, ParamType, ToolDefinition
from toolweave.registry import (
    DefinitionError,
    MemoryCatalog,
    Registry,
    compatible,
    validate_job,
    validate_tool,
)


def tool(
    tool_id: str, inputs: dict[str, Any] | None = None, outputs: dict[str, Any] | None = None, **extra: Any
) -> ToolDefinition:
    return ToolDefinition.model_validate(
        {
            "toolId": tool_id,
            "service": "builtin",
            "inputSchema": inputs or {},
            "outputSchema": outputs or {},
            **extra,
        }
    )


def job(steps: list[dict[str, Any]], **extra: Any) -> JobDefinition:
    data: dict[str, Any] = {"jobId": "j", "steps": steps}
    data.update(extra)
    return JobDefinition.model_validate(data)


GEN = tool(
    "gen",
    {"prompt": {"type": "string", "required": True}},
    {"image": {"type": "image"}, "meta": {"type": "json"}},
)
COUNT = tool(
    "count",
    {"n": {"type": "number", "required": True}, "k": {"type": "integer"}},
    {"total": {"type": "integer"}},
)
UPSCALE = tool(
    "upscale",
    {
        "image": {"type": "image", "required": True},
        "scale": {"type": "integer", "default": 2, "minimum": 1, "maximum": 4},
    },
    {"image": {"type": "image"}},
)
CAPTION = tool(
    "caption",
    {"text": {"type": "string", "required": True}, "url": {"type": "string", "acceptsUrl": True}},
    {"text": {"type": "string"}},
)


def catalog(*extra_jobs: JobDefinition) -> MemoryCatalog:
    return MemoryCatalog(tools=[GEN, COUNT, UPSCALE, CAPTION], jobs=list(extra_jobs))


PROMPT = {"prompt": {"type": "string", "required": True}}


def gen_step(step_id: str = "g", **extra: Any) -> dict[str, Any]:
    return {
        "stepId": step_id,
        "toolId": "gen",
        "inputMappings": [{"sourceJobInput": "prompt", "targetInputName": "prompt"}],
        **extra,
    }


def messages(problems: list[Any]) -> list[str]:
    return [f"{p.path}: {p.message}" for p in problems]


def check(definition: JobDefinition, *jobs: JobDefinition) -> list[str]:
    return messages(validate_job(definition, catalog(*jobs)))


def test_a_valid_job_has_no_problems() -> None:
    definition = job(
        [
            gen_step(),
            {
                "stepId": "u",
                "toolId": "upscale",
                "inputMappings": [
                    {"sourceStepId": "g", "sourceOutputName": "image", "targetInputName": "image"}
                ],
            },
        ],
        inputSchema=PROMPT,
    )
    assert check(definition) == []


def test_duplicate_step_ids() -> None:
    assert check(job([gen_step(), gen_step()], inputSchema=PROMPT)) == [
        "steps[1].stepId: the step id 'g' is used twice"
    ]


def test_duplicate_ids_across_files_are_reported(tmp_path: Any) -> None:
    (tmp_path / "a.yaml").write_text("toolId: t\nservice: builtin\n")
    (tmp_path / "b.yaml").write_text("toolId: t\nservice: builtin\ndescription: other\n")
    problems = Registry().load([tmp_path])
    assert [str(p) for p in problems] == [
        f"{tmp_path / 'b.yaml'}: toolId: tool 't' version '1' is defined twice (first in {tmp_path / 'a.yaml'})"
    ]


def test_a_job_id_may_not_reuse_a_tool_id() -> None:
    definition = JobDefinition.model_validate(
        {"jobId": "gen", "commandName": "gen_job", "inputSchema": PROMPT, "steps": [gen_step()]}
    )
    assert check(definition) == ["jobId: the id 'gen' is already used by a tool"]


def test_duplicate_input_names_in_a_tool() -> None:
    bad = ToolDefinition.model_validate(
        {
            "toolId": "t",
            "service": "builtin",
            "inputSchema": [{"name": "a", "type": "string"}, {"name": "a", "type": "integer"}],
        }
    )
    assert messages(validate_tool(bad)) == ["inputSchema.a: the input 'a' is declared twice"]


def test_unknown_tool() -> None:
    assert check(job([{"stepId": "s", "toolId": "nope"}])) == [
        "steps[0].toolId: tool 'nope' is not registered"
    ]


def test_unknown_nested_job() -> None:
    assert check(job([{"stepId": "s", "jobId": "nope"}])) == ["steps[0].jobId: job 'nope' is not registered"]


def test_a_step_needs_exactly_one_of_tool_and_job() -> None:
    assert check(job([{"stepId": "s"}])) == ["steps[0]: step 's' names neither a toolId nor a jobId"]
    both = check(job([{"stepId": "s", "toolId": "gen", "jobId": "x"}]))
    assert both == ["steps[0]: step 's' names both a toolId and a jobId; give one"]


def test_unknown_target_input_with_suggestion() -> None:
    definition = job(
        [
            {
                "stepId": "g",
                "toolId": "gen",
                "inputMappings": [{"sourceJobInput": "prompt", "targetInputName": "promt"}],
            }
        ],
        inputSchema=PROMPT,
    )
    assert check(definition) == [
        "steps[0].inputMappings[0].targetInputName: tool 'gen' has no input 'promt' (its inputs: 'prompt'); did you mean 'prompt'?",
        "steps[0].inputMappings: the required input 'prompt' of tool 'gen' is neither mapped nor defaulted",
    ]


def test_unknown_job_input() -> None:
    definition = job([gen_step()], inputSchema={"text": {"type": "string", "required": True}})
    assert check(definition) == [
        "steps[0].inputMappings[0].sourceJobInput: the job has no input 'prompt' (its inputs: 'text')"
    ]


def test_unknown_source_output() -> None:
    definition = job(
        [
            gen_step(),
            {
                "stepId": "u",
                "toolId": "upscale",
                "inputMappings": [
                    {"sourceStepId": "g", "sourceOutputName": "img", "targetInputName": "image"}
                ],
            },
        ],
        inputSchema=PROMPT,
    )
    assert check(definition) == [
        "steps[1].inputMappings[0].sourceOutputName: step 'g' (tool 'gen') has no output 'img' (its outputs: 'image', 'meta'); did you mean 'image'?"
    ]


def test_unknown_source_step() -> None:
    definition = job(
        [
            {
                "stepId": "u",
                "toolId": "upscale",
                "inputMappings": [
                    {"sourceStepId": "gen", "sourceOutputName": "image", "targetInputName": "image"}
                ],
            }
        ]
    )
    assert check(definition) == ["steps[0].inputMappings[0].sourceStepId: step 'gen' is not in this job"]


def test_unknown_dependency() -> None:
    definition = job([gen_step(dependencies=["h"])], inputSchema=PROMPT)
    assert check(definition) == [
        "steps[0].dependencies[0]: step 'g' depends on step 'h', which is not in this job"
    ]


def test_a_mapping_with_no_source() -> None:
    definition = job([{"stepId": "g", "toolId": "gen", "inputMappings": [{"targetInputName": "prompt"}]}])
    assert check(definition) == [
        "steps[0].inputMappings[0]: the mapping of 'prompt' names no source; give one of sourceJobInput, "
        "sourceStepId with sourceOutputName, value, template, sourceItem or collect"
    ]


def test_a_mapping_with_two_sources() -> None:
    definition = job(
        [
            {
                "stepId": "g",
                "toolId": "gen",
                "inputMappings": [{"sourceJobInput": "prompt", "value": "x", "targetInputName": "prompt"}],
            }
        ],
        inputSchema=PROMPT,
    )
    assert check(definition) == [
        "steps[0].inputMappings[0]: the mapping of 'prompt' names 2 sources (sourceJobInput, value); give exactly one"
    ]


def test_a_step_mapping_needs_an_output_name() -> None:
    definition = job(
        [
            gen_step(),
            {
                "stepId": "u",
                "toolId": "upscale",
                "inputMappings": [{"sourceStepId": "g", "targetInputName": "image"}],
            },
        ],
        inputSchema=PROMPT,
    )
    assert check(definition) == [
        "steps[1].inputMappings[0]: a mapping from a step needs both sourceStepId and sourceOutputName; sourceOutputName is missing"
    ]


def test_type_mismatch_image_into_number() -> None:
    definition = job(
        [
            gen_step(),
            {
                "stepId": "c",
                "toolId": "count",
                "inputMappings": [{"sourceStepId": "g", "sourceOutputName": "image", "targetInputName": "n"}],
            },
        ],
        inputSchema=PROMPT,
    )
    assert check(definition) == [
        "steps[1].inputMappings[0]: output 'image' of step 'g' is an image, but input 'n' takes a number"
    ]


def test_integer_into_number_is_fine_and_number_into_integer_is_not() -> None:
    definition = job(
        [
            {"stepId": "a", "toolId": "count", "inputMappings": [{"value": 2, "targetInputName": "n"}]},
            {
                "stepId": "b",
                "toolId": "count",
                "inputMappings": [{"sourceStepId": "a", "sourceOutputName": "total", "targetInputName": "n"}],
            },
            {
                "stepId": "c",
                "toolId": "count",
                "inputMappings": [
                    {"value": 1, "targetInputName": "n"},
                    {"sourceJobInput": "x", "targetInputName": "k"},
                ],
            },
        ],
        inputSchema={"x": {"type": "number", "default": 1.5}},
    )
    assert check(definition) == [
        "steps[2].inputMappings[1]: job input 'x' is a number, but input 'k' takes an integer"
    ]


def test_image_into_string_needs_a_target_that_takes_urls() -> None:
    refused = job(
        [
            gen_step(),
            {
                "stepId": "c",
                "toolId": "caption",
                "inputMappings": [
                    {"sourceStepId": "g", "sourceOutputName": "image", "targetInputName": "text"}
                ],
            },
        ],
        inputSchema=PROMPT,
    )
    assert check(refused) == [
        "steps[1].inputMappings[0]: output 'image' of step 'g' is an image, but input 'text' takes a string "
        "(it would take the URL only if the input declared acceptsUrl: true)"
    ]
    accepted = job(
        [
            gen_step(),
            {
                "stepId": "c",
                "toolId": "caption",
                "inputMappings": [
                    {"value": "describe", "targetInputName": "text"},
                    {"sourceStepId": "g", "sourceOutputName": "image", "targetInputName": "url"},
                ],
            },
        ],
        inputSchema=PROMPT,
    )
    assert check(accepted) == []


def test_compatibility_table() -> None:
    T = ParamType
    assert compatible(T.INTEGER, T.NUMBER)
    assert compatible(T.SEED, T.INTEGER)
    assert not compatible(T.NUMBER, T.INTEGER)
    assert not compatible(T.IMAGE, T.STRING)
    assert compatible(T.IMAGE, T.STRING, target_takes_url=True)
    assert compatible(T.IMAGE, T.FILE)
    assert compatible(T.FILE, T.IMAGE)  # checked when the step reads it (docs/definitions.md)
    assert not compatible(T.STRING, T.IMAGE)
    assert compatible(T.BOOLEAN, T.JSON)
    assert not compatible(T.JSON, T.STRING)


def test_a_static_value_must_fit_its_input() -> None:
    definition = job(
        [
            gen_step(),
            {
                "stepId": "u",
                "toolId": "upscale",
                "inputMappings": [
                    {"sourceStepId": "g", "sourceOutputName": "image", "targetInputName": "image"},
                    {"value": 8, "targetInputName": "scale"},
                ],
            },
        ],
        inputSchema=PROMPT,
    )
    assert check(definition) == [
        "steps[1].inputMappings[1].value: the value 8 does not fit input 'scale': must be at most 4 (got 8)"
    ]


def test_required_inputs_neither_mapped_nor_defaulted() -> None:
    definition = job(
        [{"stepId": "u", "toolId": "upscale", "inputMappings": [{"value": 2, "targetInputName": "scale"}]}]
    )
    assert check(definition) == [
        "steps[0].inputMappings: the required input 'image' of tool 'upscale' is neither mapped nor defaulted"
    ]


def test_required_input_from_an_optional_job_input_without_default() -> None:
    definition = job([gen_step()], inputSchema={"prompt": {"type": "string"}})
    assert check(definition) == [
        "steps[0].inputMappings: the required input 'prompt' of tool 'gen' comes from the optional job input "
        "'prompt', which has no default; make it required or give it a default"
    ]


def test_a_two_step_cycle_names_both_steps() -> None:
    definition = job(
        [gen_step("a", dependencies=["b"]), gen_step("b", dependencies=["a"])],
        inputSchema=PROMPT,
    )
    assert check(definition) == ["steps[0]: steps 'a', 'b' form a cycle (a → b → a; each waits for the next)"]


def test_a_longer_cycle_names_every_step() -> None:
    definition = job(
        [
            gen_step("ok"),
            gen_step("a", dependencies=["c"]),
            gen_step("b", dependencies=["a"]),
            gen_step("c", dependencies=["b"]),
        ],
        inputSchema=PROMPT,
    )
    assert check(definition) == [
        "steps[1]: steps 'a', 'c', 'b' form a cycle (a → c → b → a; each waits for the next)"
    ]


def test_a_step_that_depends_on_itself() -> None:
    definition = job([gen_step("a", dependencies=["a"])], inputSchema=PROMPT)
    assert check(definition) == ["steps[0]: step 'a' depends on itself"]


def test_topological_order_refuses_a_cycle() -> None:
    definition = job(
        [gen_step("a", dependencies=["b"]), gen_step("b", dependencies=["a"])], inputSchema=PROMPT
    )
    with pytest.raises(DefinitionError) as caught:
        Registry().topological_order(definition)
    assert "form a cycle" in str(caught.value)


def test_a_condition_that_does_not_parse() -> None:
    definition = job([gen_step(condition="job.prompt ==")], inputSchema=PROMPT)
    assert check(definition) == ["steps[0].condition: condition 'job.prompt ==' does not parse at column 12"]


def test_a_condition_that_reads_a_step_it_does_not_depend_on() -> None:
    definition = job(
        [
            gen_step("a"),
            gen_step("b", condition="steps.a.status == 'succeeded'"),
            gen_step("c", condition="steps.zz.status == 'x'"),
        ],
        inputSchema=PROMPT,
    )
    assert check(definition) == [
        "steps[1].condition: the condition reads step 'a', which step 'b' does not depend on; add it to dependencies",
        "steps[2].condition: the condition reads step 'zz', which is not in this job",
    ]


def test_a_condition_with_an_unknown_variable() -> None:
    definition = job([gen_step(condition="input.x > 1")], inputSchema=PROMPT)
    assert check(definition) == [
        "steps[0].condition: condition 'input.x > 1' uses 'input'; only job and steps are available"
    ]


def test_a_template_that_does_not_parse() -> None:
    definition = job(
        [
            {
                "stepId": "g",
                "toolId": "gen",
                "inputMappings": [{"template": "{{ job.prompt ", "targetInputName": "prompt"}],
            }
        ]
    )
    problems = check(definition)
    assert len(problems) == 1
    assert problems[0].startswith(
        "steps[0].inputMappings[0].template: template '{{ job.prompt ' does not parse: "
    )


def test_a_template_with_unknown_variables_or_steps() -> None:
    definition = job(
        [
            gen_step("a"),
            {
                "stepId": "b",
                "toolId": "gen",
                "inputMappings": [
                    {"template": "{{ prompt }} {{ steps.a.outputs.meta }}", "targetInputName": "prompt"}
                ],
            },
        ],
        inputSchema=PROMPT,
    )
    assert check(definition) == [
        "steps[1].inputMappings[0].template: template '{{ prompt }} {{ steps.a.outputs.meta }}' uses 'prompt'; only job and steps are available",
        "steps[1].inputMappings[0].template: the template reads step 'a', which step 'b' does not depend on; add it to dependencies",
    ]


def test_a_template_cannot_feed_a_media_input() -> None:
    definition = job(
        [
            {
                "stepId": "u",
                "toolId": "upscale",
                "inputMappings": [{"template": "x", "targetInputName": "image"}],
            }
        ]
    )
    assert check(definition) == [
        "steps[0].inputMappings[0]: a template gives text, but input 'image' takes an image"
    ]


def test_a_malformed_path() -> None:
    definition = job(
        [
            gen_step(),
            {
                "stepId": "c",
                "toolId": "count",
                "inputMappings": [
                    {"sourceStepId": "g", "sourceOutputName": "meta", "path": "a..b", "targetInputName": "n"}
                ],
            },
        ],
        inputSchema=PROMPT,
    )
    assert check(definition) == [
        "steps[1].inputMappings[0].path: path 'a..b' is malformed at character 2; write it like a.b[0]"
    ]


def test_command_name_collisions() -> None:
    registry = Registry()
    registry.add_tools([tool("one", commandName="draw")])
    problems = registry.register(tool("two", commandName="draw"))
    assert messages(problems) == [
        "commandName: the command name 'draw' is already used by tool 'one'; set a different commandName"
    ]
    # A new version of the same tool may keep its command name.
    assert registry.register(tool("one", commandName="draw", version="2")) == []


def test_a_job_that_contains_itself_directly() -> None:
    definition = JobDefinition.model_validate({"jobId": "loop", "steps": [{"stepId": "s", "jobId": "loop"}]})
    assert check(definition) == ["steps[0].jobId: job 'loop' contains itself (step 's')"]


def test_a_job_that_contains_itself_through_nested_jobs() -> None:
    inner = JobDefinition.model_validate({"jobId": "inner", "steps": [{"stepId": "s", "jobId": "outer"}]})
    outer = JobDefinition.model_validate({"jobId": "outer", "steps": [{"stepId": "s", "jobId": "inner"}]})
    assert check(outer, inner) == [
        "steps[0].jobId: job 'outer' contains itself through nested jobs: outer → inner → outer"
    ]


def test_nested_jobs_in_one_load_that_contain_each_other(tmp_path: Any) -> None:
    (tmp_path / "jobs.yaml").write_text(
        "- {jobId: a, steps: [{stepId: s, jobId: b}]}\n- {jobId: b, steps: [{stepId: s, jobId: a}]}\n"
    )
    problems = Registry().load([tmp_path])
    assert [str(p) for p in problems] == [
        f"{tmp_path / 'jobs.yaml'}: [0].steps: job 'a' contains itself through nested jobs: a → b → a",
        f"{tmp_path / 'jobs.yaml'}: [1].steps: job 'b' contains itself through nested jobs: a → b → a",
    ]


def test_nested_job_mappings_are_checked_against_its_schemas() -> None:
    inner = JobDefinition.model_validate(
        {
            "jobId": "inner",
            "inputSchema": PROMPT,
            "outputSchema": {"picture": {"type": "image", "sourceStepId": "g", "sourceOutputName": "image"}},
            "steps": [gen_step()],
        }
    )
    outer = job(
        [
            {
                "stepId": "n",
                "jobId": "inner",
                "inputMappings": [{"sourceJobInput": "prompt", "targetInputName": "prompt"}],
            },
            {
                "stepId": "c",
                "toolId": "count",
                "inputMappings": [
                    {"sourceStepId": "n", "sourceOutputName": "picture", "targetInputName": "n"}
                ],
            },
            {
                "stepId": "m",
                "jobId": "inner",
                "inputMappings": [{"sourceJobInput": "prompt", "targetInputName": "text"}],
            },
        ],
        inputSchema=PROMPT,
    )
    assert check(outer, inner) == [
        "steps[1].inputMappings[0]: output 'picture' of step 'n' is an image, but input 'n' takes a number",
        "steps[2].inputMappings[0].targetInputName: job 'inner' has no input 'text' (its inputs: 'prompt')",
        "steps[2].inputMappings: the required input 'prompt' of job 'inner' is neither mapped nor defaulted",
    ]


def test_job_outputs_resolve_to_the_single_final_step_or_need_a_source() -> None:
    implied = job([gen_step()], inputSchema=PROMPT, outputSchema={"image": {"type": "image"}})
    assert check(implied) == []
    as_url = job([gen_step()], inputSchema=PROMPT, outputSchema={"image": {"type": "string"}})
    assert check(as_url) == []
    wrong = job([gen_step()], inputSchema=PROMPT, outputSchema={"picture": {"type": "image"}})
    assert check(wrong) == [
        "outputSchema.picture: step 'g' (its final step) (tool 'gen') has no output 'picture' (its outputs: 'image', 'meta')"
    ]
    two_sinks = job(
        [gen_step("a"), gen_step("b")], inputSchema=PROMPT, outputSchema={"image": {"type": "image"}}
    )
    assert check(two_sinks) == [
        "outputSchema.image: the output 'image' names no sourceStepId and the job has 2 final steps ('a', 'b'); add sourceStepId"
    ]
    mismatch = job(
        [gen_step()],
        inputSchema=PROMPT,
        outputSchema={"n": {"type": "number", "sourceStepId": "g", "sourceOutputName": "image"}},
    )
    assert check(mismatch) == [
        "outputSchema.n: output 'image' of step 'g' is an image, but the job output 'n' is a number"
    ]


def test_a_fallback_tool_must_exist() -> None:
    definition = job(
        [gen_step(errorHandling={"strategy": "fallback", "fallbackToolId": "gen2"})],
        inputSchema=PROMPT,
    )
    assert check(definition) == [
        "steps[0].errorHandling.fallbackToolId: the fallback tool 'gen2' is not registered"
    ]


def test_tool_defaults_enums_and_bounds() -> None:
    bad = tool(
        "t",
        {
            "mode": {"type": "enum"},
            "n": {"type": "integer", "default": "many", "minimum": 5, "maximum": 1},
            "u": {"type": "integer", "acceptsUrl": True},
        },
        platformHints={"primaryInput": "prompt"},
    )
    assert messages(validate_tool(bad)) == [
        "inputSchema.mode: the enum input 'mode' lists no allowed values (enum: [...])",
        "inputSchema.n: minimum 5.0 is greater than maximum 1.0",
        "inputSchema.n.default: the default 'many' does not fit: must be a whole number, not text",
        "inputSchema.u: acceptsUrl only applies to string or text inputs, not integer",
        "platformHints.primaryInput: primaryInput 'prompt' is not an input of this tool",
    ]


def test_visible_if_names_another_input_and_values_it_can_take() -> None:
    bad = tool(
        "t",
        {
            "mode": {"type": "enum", "enum": ["a", "b"]},
            "x": {"type": "string", "visibleIf": {"field": "mdoe", "values": ["a"]}},
            "y": {"type": "string", "visibleIf": {"field": "mode", "values": ["c"]}},
            "z": {"type": "string", "visibleIf": {"field": "z", "values": ["a"]}},
            "p": {"type": "string", "visibleIf": {"field": "q", "values": ["1"]}},
            "q": {"type": "string", "visibleIf": {"field": "p", "values": ["1"]}},
        },
    )
    assert messages(validate_tool(bad)) == [
        "inputSchema.x.visibleIf: visibleIf names 'mdoe', which is not another input of this schema; did you mean 'mode'?",
        "inputSchema.y.visibleIf: the value 'c' can never be input 'mode''s: must be one of a, b (got 'c')",
        "inputSchema.z.visibleIf: visibleIf names 'z', which is not another input of this schema",
        "inputSchema.p.visibleIf: visibleIf goes round in a circle: p → q → p",
        "inputSchema.q.visibleIf: visibleIf goes round in a circle: q → p → q",
    ]


def test_a_tool_input_required_only_when_visible_need_not_be_mapped() -> None:
    ops = tool("ops", {
        "operation": {"type": "enum", "enum": ["concat", "replace"], "required": True},
        "append": {"type": "string", "required": True, "visibleIf": {"field": "operation", "values": ["concat"]}},
    })
    catalog = MemoryCatalog(tools=[ops])
    only_replace = job([{"stepId": "s", "toolId": "ops",
                         "inputMappings": [{"value": "replace", "targetInputName": "operation"}]}])
    assert validate_job(only_replace, catalog) == []


def test_price_tables_name_inputs() -> None:
    priced = tool("t", {"size": {"type": "enum", "enum": ["s"]}, "n": {"type": "string"}},
                  costingModel={"rateSource": "table", "priceTable": {"by": ["size", "qualty"], "prices": {},
                                                                      "multiplyBy": "n"}})
    assert messages(validate_tool(priced)) == [
        "costingModel.priceTable.by: 'qualty' is not an input of this tool",
        "costingModel.priceTable.multiplyBy: multiplyBy 'n' is not a number input of this tool",
    ]


def test_registration_refuses_invalid_and_keeps_valid_by_id_and_version() -> None:
    registry = Registry()
    registry.add_tools([GEN, UPSCALE])
    bad = job([{"stepId": "s", "toolId": "nope"}])
    assert registry.register(bad) != []
    with pytest.raises(KeyError, match="no job 'j' is registered"):
        registry.job("j")
    v1 = JobDefinition.model_validate({"jobId": "j", "inputSchema": PROMPT, "steps": [gen_step()]})
    v2 = JobDefinition.model_validate(
        {"jobId": "j", "version": "2", "inputSchema": PROMPT, "steps": [gen_step("other")]}
    )
    v10 = JobDefinition.model_validate(
        {"jobId": "j", "version": "10", "inputSchema": PROMPT, "steps": [gen_step("ten")]}
    )
    assert registry.register(v1) == []
    assert registry.register(v10) == []
    assert registry.register(v2) == []
    assert registry.job("j").version == "10"
    assert registry.job("j", "2").steps[0].step_id == "other"
    assert registry.versions("j") == ["1", "2", "10"]
    with pytest.raises(KeyError, match="job 'j' has no version '3'"):
        registry.job("j", "3")
    assert registry.register(v1) == []  # the same content again is a no-op
    changed = JobDefinition.model_validate(
        {"jobId": "j", "inputSchema": PROMPT, "steps": [gen_step("changed")]}
    )
    assert messages(registry.register(changed)) == [
        "jobId: job 'j' version '1' is already registered with different content; change its version"
    ]
    assert registry.find("gen") is GEN
    assert registry.find("j").version == "10"
    assert registry.by_command("/gen").tool_id == "gen"
    with pytest.raises(KeyError, match="no tool or job 'zz' is registered"):
        registry.find("zz")
    assert [t.tool_id for t in registry.tools()] == ["gen", "upscale"]
    assert [j.job_id for j in registry.jobs()] == ["j"]


def test_add_tools_refuses_invalid_tools() -> None:
    registry = Registry()
    with pytest.raises(DefinitionError) as caught:
        registry.add_tools([tool("ok"), tool("bad", {"e": {"type": "enum"}})])
    assert [str(p) for p in caught.value.problems] == [
        "inputSchema.e: the enum input 'e' lists no allowed values (enum: [...])"
    ]
    assert registry.tools() == []


def test_load_registers_jobs_after_the_jobs_they_contain(tmp_path: Any) -> None:
    (tmp_path / "tools.yaml").write_text(
        "toolId: gen\nservice: builtin\ninputSchema: {prompt: {type: string, required: true}}\noutputSchema: {image: {type: image}}\n"
    )
    (tmp_path / "a_outer.yaml").write_text(
        "jobId: outer\ninputSchema: {prompt: {type: string, required: true}}\n"
        "steps: [{stepId: n, jobId: inner, inputMappings: [{sourceJobInput: prompt, targetInputName: prompt}]}]\n"
    )
    (tmp_path / "b_inner.yaml").write_text(
        "jobId: inner\ninputSchema: {prompt: {type: string, required: true}}\n"
        "outputSchema: {image: {type: image}}\n"
        "steps: [{stepId: g, toolId: gen, inputMappings: [{sourceJobInput: prompt, targetInputName: prompt}]}]\n"
    )
    registry = Registry()
    assert registry.load([tmp_path]) == []
    assert [j.job_id for j in registry.jobs()] == ["inner", "outer"]


def test_a_job_referring_to_a_refused_job_says_so(tmp_path: Any) -> None:
    (tmp_path / "jobs.yaml").write_text(
        "- {jobId: outer, steps: [{stepId: n, jobId: inner}]}\n- {jobId: inner, steps: [{stepId: s, toolId: nope}]}\n"
    )
    problems = [str(p) for p in Registry().load([tmp_path])]
    assert problems == [
        f"{tmp_path / 'jobs.yaml'}: [1].steps[0].toolId: tool 'nope' is not registered",
        f"{tmp_path / 'jobs.yaml'}: [0].steps[0].jobId: job 'inner' was refused (see its own problems)",
    ]


def test_conditions_and_templates_may_only_read_declared_job_inputs() -> None:
    definition = job(
        [
            gen_step("a", condition="has(job.negative) || job.promt != ''"),
            {
                "stepId": "b",
                "toolId": "gen",
                "inputMappings": [
                    {"template": "{{ job.prompt }} {{ job['style'] }}", "targetInputName": "prompt"}
                ],
            },
        ],
        inputSchema=PROMPT,
    )
    assert check(definition) == [
        "steps[0].condition: the condition reads job input 'negative', which the job does not declare",
        "steps[0].condition: the condition reads job input 'promt', which the job does not declare; did you mean 'prompt'?",
        "steps[1].inputMappings[0].template: the template reads job input 'style', which the job does not declare",
    ]
