"""The builtin service as a whole: its definitions and its side of the Service protocol."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.helpers import LocalHost, generation_context

from toolweave.model.definitions import ParamType, RateSource, ToolDefinition
from toolweave.services.base import Service, ServiceError, WebhookRejected
from toolweave.services.builtin import BuiltinService, builtin_tool_definitions

EXPECTED = {
    "image.resize", "image.upscale", "image.crop", "image.adjust", "image.watermark", "image.grid",
    "image.convert", "text.template", "text.concat", "text.replace", "media.fetch",
}


@pytest.fixture
async def host(tmp_path: Path) -> AsyncIterator[LocalHost]:
    async with LocalHost(tmp_path) as h:
        yield h


def test_every_tool_is_defined() -> None:
    assert {d.tool_id for d in builtin_tool_definitions()} == EXPECTED


@pytest.mark.parametrize("definition", builtin_tool_definitions(test_tools=True), ids=lambda d: d.tool_id)
def test_definitions_are_complete(definition: ToolDefinition) -> None:
    assert definition.service == "builtin"
    assert definition.display_name and definition.display_name != definition.tool_id
    assert definition.description
    assert definition.input_schema and definition.output_schema
    for param in definition.input_schema:
        assert param.description, f"{definition.tool_id}.{param.name} has no description"
        if param.type is ParamType.ENUM:
            assert param.enum and param.default in param.enum
        if param.default is not None and param.type in (ParamType.INTEGER, ParamType.NUMBER):
            if param.minimum is not None:
                assert param.default >= param.minimum
            if param.maximum is not None:
                assert param.default <= param.maximum
    for output in definition.output_schema:
        assert output.description
    assert definition.costing_model is not None
    assert definition.costing_model.rate_source is RateSource.STATIC
    assert definition.costing_model.static_cost is not None and definition.costing_model.static_cost.amount == 0
    assert definition.platform_hints.category
    if not definition.tool_id.startswith("test."):
        assert definition.input(definition.platform_hints.primary_input or "") is not None
    # a definition survives the trip through its file form
    assert ToolDefinition.model_validate(definition.dump()) == definition


def test_definitions_are_fresh_copies(tmp_path: Path) -> None:
    first = builtin_tool_definitions()
    first[0].description = "changed"
    assert builtin_tool_definitions()[0].description != "changed"


async def test_protocol_edges(host: LocalHost) -> None:
    service = BuiltinService(host)
    assert isinstance(service, Service) and service.name == "builtin"
    with pytest.raises(WebhookRejected):
        service.parse_webhook({}, b"{}")
    resize = service.tool("image.resize").definition
    with pytest.raises(ServiceError) as err:
        await service.poll(generation_context(resize, {}))
    assert err.value.code == "not_pollable"
    await service.cancel(generation_context(resize, {}))  # nothing to cancel: no error
    await service.close()


async def test_unknown_tool_and_unknown_inputs(host: LocalHost) -> None:
    service = BuiltinService(host)
    with pytest.raises(ServiceError) as err:
        await service.submit(generation_context(ToolDefinition(tool_id="image.nope", service="builtin"), {}))
    assert err.value.code == "unknown_tool" and "image.resize" in err.value.message
    with pytest.raises(ServiceError) as err:
        await service.submit(generation_context(service.tool("text.template").definition,
                                                {"template": "x", "tempalte": "y"}))
    assert "tempalte: is not an input of this tool" in err.value.message and not err.value.retryable


async def test_numbers_arrive_as_strings(host: LocalHost) -> None:
    service = BuiltinService(host)
    sub = await service.submit(generation_context(service.tool("text.template").definition,
                                                  {"template": "{{ a }}", "variables": {"a": 1}, "strip": "false"}))
    assert sub.update is not None and sub.update.outputs == {"text": "1"}


def test_reference_documents_every_tool_and_input() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "builtin-tools.md").read_text()
    for definition in builtin_tool_definitions(test_tools=True):
        section = doc.split(f"### `{definition.tool_id}`", 1)
        assert len(section) == 2, f"{definition.tool_id} is not documented"
        body = section[1].split("\n### ", 1)[0]
        for param in [*definition.input_schema, *definition.output_schema]:
            assert f"`{param.name}`" in body, f"{definition.tool_id}.{param.name} is not documented"


def test_the_registry_accepts_every_builtin_definition() -> None:
    from toolweave.registry.registry import Registry

    registry = Registry()
    registry.add_tools(builtin_tool_definitions(test_tools=True))
    assert registry.get_tool("image.grid") is not None


async def test_json_inputs_may_arrive_as_text(host: LocalHost) -> None:
    service = BuiltinService(host)
    sub = await service.submit(generation_context(service.tool("text.template").definition,
                                                  {"template": "{{ a }}-{{ b }}", "variables": '{"a": 1, "b": 2}'}))
    assert sub.update is not None and sub.update.outputs == {"text": "1-2"}
    with pytest.raises(ServiceError) as err:
        await service.submit(generation_context(service.tool("text.template").definition,
                                                {"template": "x", "variables": "{nope"}))
    assert "variables: is not valid JSON" in err.value.message
