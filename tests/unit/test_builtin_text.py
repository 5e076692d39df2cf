"""The text tools: text.template (sandboxed Jinja rendering and its limits), text.concat, text.replace."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.helpers import LocalHost, generation_context

from toolweave.services.base import ServiceError
from toolweave.services.builtin import BuiltinService
from toolweave.services.builtin.text import HERE_MAX_TEMPLATE_CHARS, render, render_here


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[BuiltinService]:
    async with LocalHost(tmp_path) as host:
        yield BuiltinService(host)


async def render_tool(service: BuiltinService, inputs: dict[str, Any]) -> str:
    sub = await service.submit(generation_context(service.tool("text.template").definition, inputs))
    assert sub.update is not None and sub.update.outputs is not None
    text = sub.update.outputs["text"]
    assert isinstance(text, str)
    return text


async def test_renders_variables_filters_and_loops(service: BuiltinService) -> None:
    text = await render_tool(service, {
        "template": "A photo of {{ subject | upper }}, {{ style | default('film') }}"
                    "{% for t in tags %}, {{ t }}{% endfor %}  ",
        "variables": {"subject": "a fox", "tags": ["snow", "dusk"]},
    })
    assert text == "A photo of A FOX, film, snow, dusk"
    kept = await render_tool(service, {"template": " x ", "strip": False})
    assert kept == " x "


async def test_undefined_variable_is_named(service: BuiltinService) -> None:
    with pytest.raises(ServiceError) as err:
        await render_tool(service, {"template": "Hello {{ name }}"})
    assert err.value.code == "template_undefined" and "'name'" in err.value.message
    assert not err.value.retryable


async def test_syntax_error_names_the_line(service: BuiltinService) -> None:
    with pytest.raises(ServiceError) as err:
        await render_tool(service, {"template": "line one\n{% for x in %}"})
    assert err.value.code == "template_syntax" and "line 2" in err.value.message


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ x.__class__.__subclasses__() }}",
    ],
)
async def test_sandbox_blocks_internals(service: BuiltinService, template: str) -> None:
    with pytest.raises(ServiceError) as err:
        await render_tool(service, {"template": template, "variables": {"x": 1}})
    assert not err.value.retryable
    assert err.value.code in ("template_security", "template_undefined")


async def test_output_and_time_limits() -> None:
    """(``render`` is what the evaluator process runs; here it runs in this one.)"""
    long = render({"source": "{% for i in range(100000) %}xxxxxxxxxxxxxxxxxxxx{% endfor %}", "variables": {},
                   "seconds": 5.0, "max_chars": 1000})
    assert long["code"] == "template_too_long"
    slow = render({"source": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
                   "variables": {}, "seconds": 0.2})
    assert slow["code"] == "evaluation_budget" and "0.2" not in slow["error"] and "200 ms" in slow["error"]
    huge = render({"source": "{{ 'x' * 1000000000 }}", "variables": {}, "seconds": 5.0})
    assert huge["code"] == "template_security"


async def test_a_nested_loop_fails_within_the_budget_in_an_evaluator_process(tmp_path: Path) -> None:
    async with LocalHost(tmp_path) as host:
        with pytest.raises(ServiceError) as err:
            await render_tool(BuiltinService(host), {"template": "{% for i in range(100000) %}"
                                                                 "{% for j in range(100000) %}{% endfor %}{% endfor %}"})
        assert err.value.code == "evaluation_budget" and not err.value.retryable
        assert host.evaluator.started == 1


async def test_a_straight_line_template_renders_without_an_evaluator_process(tmp_path: Path) -> None:
    """Like a step's straight-line template in the planner: rendered where it stands (no process
    started for it), with the same sandbox, errors and strictness as in an evaluator."""
    async with LocalHost(tmp_path) as host:
        service = BuiltinService(host)
        text = await render_tool(service, {
            "template": "A photo of {{ subject | upper }}, {{ style | default('film') }}{% if night %}, at night"
                        "{% endif %} ({{ tags | join(', ') }}; {{ tags | length }} tags, {{ size.w ~ 'x' ~ size['h'] }})",
            "variables": {"subject": "a fox", "night": True, "tags": ["snow", "dusk"], "size": {"w": 640, "h": 480}},
        })
        assert text == "A photo of A FOX, film, at night (snow, dusk; 2 tags, 640x480)"
        for template, code in (("Hello {{ name }}", "template_undefined"), ("{{ x.__class__ }}", "template_security"),
                               ("a\n{{ x }", "template_syntax"), ("{% if %}", "template_syntax"),
                               ("{{ x + 'a' }}", "template_error")):
            with pytest.raises(ServiceError) as err:
                await render_tool(service, {"template": template, "variables": {"x": 1}})
            assert err.value.code == code and not err.value.retryable, (template, err.value)
        assert host.evaluator.started == 0


HOSTILE_STRAIGHT_LINES = {
    # each node is linear in what it reads, but what it reads grows: doubled by every tojson of a quote
    "doubling filters": ("{{ q" + " | tojson" * 60 + " }}", {"q": '"'}),
    # one join of 200 copies of a 100,000-character value, built before the output cap can look at it
    "one long concatenation": ("{{ " + " ~ ".join(["v"] * 200) + " }}", {"v": "x" * 100_000}),
    # a separator as long as the list: quadratic in one C call
    "join by a value": ("{{ v | list | join(v) }}", {"v": "x" * 100_000}),
    # 10 ** precision in one C call
    "round to a precision from a value": ("{{ 1.5 | round(p, 'floor') }}", {"p": 100_000_000}),
    "round to a huge precision": ("{{ 1.5 | round(100000000, 'floor') }}", {}),
    # a gigabyte of indentation in one C call
    "tojson with an indent": ("{{ [[1]] | tojson(1000000000) }}", {}),
    "long template": ("{{ x }}" * (HERE_MAX_TEMPLATE_CHARS // 7 + 1), {"x": 1}),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_STRAIGHT_LINES))
def test_a_straight_line_template_that_may_build_much_is_not_rendered_in_the_worker(case: str) -> None:
    template, variables = HOSTILE_STRAIGHT_LINES[case]
    assert render_here(template, variables, 0.1) is None


async def test_a_straight_line_template_that_may_build_much_goes_to_an_evaluator(tmp_path: Path) -> None:
    async with LocalHost(tmp_path) as host:
        with pytest.raises(ServiceError) as err:
            await render_tool(BuiltinService(host), {"template": "{{ " + " ~ ".join(["v"] * 200) + " }}",
                                                     "variables": {"v": "x" * 10_000}})
        assert err.value.code == "template_too_long"  # 2,000,000 characters: refused there, not here
        assert host.evaluator.started == 1


async def test_variables_must_be_an_object(service: BuiltinService) -> None:
    with pytest.raises(ServiceError) as err:
        await render_tool(service, {"template": "x", "variables": [1, 2]})
    assert "'variables'" in err.value.message



async def text_of(service: BuiltinService, tool_id: str, inputs: dict[str, Any]) -> Any:
    sub = await service.submit(generation_context(service.tool(tool_id).definition, inputs))
    assert sub.update is not None and sub.update.outputs is not None
    return sub.update.outputs["text"]


async def test_concat_and_replace(service: BuiltinService) -> None:
    from toolweave.services.builtin.text import MAX_OUTPUT_CHARS

    assert await text_of(service, "text.concat", {"text": "tool", "append": "weave"}) == "toolweave"
    assert await text_of(service, "text.concat", {"text": "a", "append": "b", "separator": ", "}) == "a, b"
    assert await text_of(service, "text.concat", {"text": "", "append": "b", "separator": ", "}) == "b"
    assert await text_of(service, "text.replace", {"text": "a-b-c", "search": "-", "replacement": "+"}) == "a+b+c"
    assert await text_of(service, "text.replace", {"text": "a-b-c", "search": "-", "count": 1}) == "ab-c"
    assert await text_of(service, "text.replace", {"text": "a-b-c", "search": "x", "replacement": "y"}) == "a-b-c"
    for inputs, code in (
        ({"text": "abc", "search": ""}, "bad_input"),
        ({"text": "a" * 1000, "search": "a", "replacement": "b" * 2000}, "too_long"),
    ):
        with pytest.raises(ServiceError) as caught:
            await text_of(service, "text.replace", inputs)
        assert caught.value.code == code and not caught.value.retryable
    with pytest.raises(ServiceError) as caught:
        await text_of(service, "text.concat", {"text": "a" * MAX_OUTPUT_CHARS, "append": "b"})
    assert caught.value.code == "too_long"
