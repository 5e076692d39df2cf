"""Validation of a tool definition on its own: its schemas, hints and costing model, its command
name against the catalog and its service against the services known here. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable

from toolweave.model.definitions import ToolDefinition
from toolweave.registry.checks import (
    Catalog,
    T,
    _check_command,
    _check_outputs,
    _check_params,
    _Sink,
    _suggest,
)
from toolweave.registry.problems import Problem

ServiceCheck = Callable[[ToolDefinition], list[tuple[str, str]]]
"""What is wrong with the service a tool names, as ``(JSON path, sentence)`` pairs."""


def validate_tool(
    tool: ToolDefinition,
    catalog: Catalog | None = None,
    *,
    file: str | None = None,
    prefix: str = "",
    services: ServiceCheck | None = None,
) -> list[Problem]:
    """Problems of one tool definition on its own (and its command name against ``catalog``, its
    service against ``services``)."""
    sink = _Sink(file if file is not None else tool.source, prefix)
    if services is not None:
        for path, message in services(tool):
            sink.add(path, message)
    _check_params(sink, "inputSchema", tool.input_schema)
    _check_outputs(sink, "outputSchema", tool.output_schema)
    inputs = [p.name for p in tool.input_schema]
    primary = tool.platform_hints.primary_input
    if primary is not None and primary not in inputs:
        sink.add(
            "platformHints.primaryInput",
            f"primaryInput {primary!r} is not an input of this tool{_suggest(primary, inputs)}",
        )
    costing = tool.costing_model
    outputs = [o.name for o in tool.output_schema]
    if costing is not None and costing.unit_output is not None and costing.unit_output not in outputs:
        sink.add(
            "costingModel.unitOutput",
            f"unitOutput {costing.unit_output!r} is not an output of this tool{_suggest(costing.unit_output, outputs)}",
        )
    table = costing.price_table if costing is not None else None
    if table is not None:
        for name in table.by:
            if name not in inputs:
                sink.add("costingModel.priceTable.by", f"{name!r} is not an input of this tool{_suggest(name, inputs)}")
        factor = tool.input(table.multiply_by) if table.multiply_by else None
        if table.multiply_by and (factor is None or factor.type not in (T.INTEGER, T.NUMBER)):
            sink.add("costingModel.priceTable.multiplyBy",
                     f"multiplyBy {table.multiply_by!r} is not a number input of this tool")
    if catalog is not None and catalog.get_job(tool.tool_id) is not None:
        sink.add("toolId", f"the id {tool.tool_id!r} is already used by a job")
    _check_command(sink, "tool", tool.tool_id, tool.command_name, catalog)
    return sink.problems
