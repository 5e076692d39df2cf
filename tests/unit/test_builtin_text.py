"""The text tools: text.template (sandboxed Jinja rendering and its limits), text.concat, text.replace."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.helpers import LocalHost, generation_context

from toolweave.services.base import ServiceError
from toolweave.services.builtin import BuiltinService
from toolweave.services.builtin.text import render


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


async def test_a_nested_loop_fails_within_the_budget_in_an_evaluator_process(service: BuiltinService) -> None:
    with pytest.raises(ServiceError) as err:
        await render_tool(service, {"template": "{% for i in range(100000) %}{% for j in range(100000) %}"
                                                "{% endfor %}{% endfor %}"})
    assert err.value.code == "evaluation_budget" and not err.value.retryable


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
