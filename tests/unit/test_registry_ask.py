"""Registration of ask steps: what is refused, each with its path and one sentence, and what the
steps after one may read from it (typed outputs)."""

from __future__ import annotations

from typing import Any

from tests.unit.test_registry_validate import PROMPT, check, job

GENERATE = {"stepId": "each", "toolId": "gen", "map": {"over": {"value": ["a", "b", "c", "d"]}},
            "inputMappings": [{"sourceItem": True, "targetInputName": "prompt"}]}


def pick(**fields: Any) -> dict[str, Any]:
    mappings = fields.pop("inputMappings", [{"sourceStepId": "each", "sourceOutputName": "image", "targetInputName": "candidates"}])
    return {"stepId": "pick", "ask": {"kind": "choose", "question": "Which?", **fields.pop("ask", {})},
            "inputMappings": mappings, **fields}


def upscale(output: str = "chosen", **extra: Any) -> dict[str, Any]:
    return {"stepId": "up", "toolId": "upscale",
            "inputMappings": [{"sourceStepId": "pick", "sourceOutputName": output, "targetInputName": "image"}], **extra}


def test_generate_four_choose_one_upscale_it_is_accepted() -> None:
    assert check(job([GENERATE, pick(), upscale()], inputSchema=PROMPT)) == []


def test_what_an_ask_step_refuses() -> None:
    assert check(job([GENERATE, pick(toolId="gen", map={"over": {"value": [1]}}, cache=True, timeoutSeconds=5,
                                     errorHandling={"strategy": "retry"})], inputSchema=PROMPT)) == [
        "steps[1].toolId: step 'pick' asks a person (ask); it cannot also run tool 'gen'",
        "steps[1].map: step 'pick' asks a person; an ask step cannot map over a list",
        "steps[1].cache: step 'pick' asks a person; there is nothing to cache",
        "steps[1].timeoutSeconds: step 'pick' asks a person; its time to answer is ask.timeout",
        "steps[1].errorHandling: step 'pick' asks a person; its errorHandling strategy is halt or skip "
        "(what a rejection or a failed question does)",
    ]
    assert check(job([GENERATE, pick(inputMappings=[])], inputSchema=PROMPT)) == [
        "steps[1].inputMappings: step 'pick' asks to choose; map the list to choose from into 'candidates'"
    ]
    approve = pick(ask={"kind": "approve"})
    assert check(job([GENERATE, approve], inputSchema=PROMPT)) == [
        "steps[1].inputMappings: step 'pick' asks to approve; only a choose question takes 'candidates'"
    ]


def test_the_steps_after_an_ask_step_read_typed_outputs() -> None:
    assert check(job([GENERATE, pick(), upscale("approved")], inputSchema=PROMPT)) == [
        "steps[2].inputMappings[0]: output 'approved' of step 'pick' is a boolean, but input 'image' takes an image"
    ]
    assert check(job([GENERATE, pick(ask={"maxChoices": 2}), upscale()], inputSchema=PROMPT)) == [
        "steps[2].inputMappings[0]: output 'chosen' of step 'pick' is a json, but input 'image' takes an image"
    ]
    assert check(job([GENERATE, pick(), upscale("choice")], inputSchema=PROMPT))[0].startswith(
        "steps[2].inputMappings[0].sourceOutputName: step 'pick' (ask step 'pick') has no output 'choice' "
        "(its outputs: 'approved', 'answeredBy', 'timedOut', 'comment', 'chosen', 'chosenIndexes')"
    )


def test_an_edit_step_prefills_its_fields_from_mappings_of_their_type() -> None:
    edit = {"stepId": "review", "ask": {"kind": "edit", "question": "Check", "fields": {"n": {"type": "integer"}}},
            "inputMappings": [{"sourceJobInput": "prompt", "targetInputName": "n"},
                              {"sourceJobInput": "prompt", "targetInputName": "anything_shown"}]}
    assert check(job([edit], inputSchema=PROMPT)) == [
        "steps[0].inputMappings[0]: job input 'prompt' is a string, but input 'n' takes an integer"
    ]
