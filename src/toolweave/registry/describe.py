"""Plain-text pictures of definitions (the CLI's ``jobs show``). Pure."""

from __future__ import annotations

import json
from typing import Any

from toolweave.model.definitions import (
    InputMapping,
    InputParam,
    JobDefinition,
    Step,
    ToolDefinition,
    ValueSource,
)
from toolweave.model.graph import dependency_graph, output_source
from toolweave.registry.graph import topological_order


def shown(value: Any) -> str:
    """A value as people write it in a definition or a request: JSON (``"png"``, ``true``,
    ``["image/"]``), never Python's repr (``'png'``, ``True``)."""
    return json.dumps(value, ensure_ascii=False, default=str)


def _value_source(source: ValueSource) -> str:
    if source.source_job_input is not None:
        text = f"job.{source.source_job_input}"
    elif source.source_step_id is not None:
        text = f"{source.source_step_id}.{source.source_output_name}"
    elif source.has_value:
        return f"= {shown(source.value)}"
    else:
        return "(no source)"
    if source.path:
        text += f" → {source.path}"
    return text


def _source(mapping: InputMapping) -> str:
    if mapping.template is not None:
        text = f"template {shown(mapping.template)}"
    elif mapping.source_item:
        text = "the item" + (f" → {mapping.path}" if mapping.path else "")
    elif mapping.collect is not None:
        text = "[" + ", ".join(_value_source(s) for s in mapping.collect) + "]"
    else:
        text = _value_source(mapping)
    if mapping.has_default:
        text += f" (default {shown(mapping.default)})"
    return text


def param_line(param: InputParam) -> str:
    bits = [param.type.value]
    if param.required:
        bits.append("required")
    if param.default is not None:
        bits.append(f"default {shown(param.default)}")
    if param.enum:
        bits.append("one of " + ", ".join(v if isinstance(v, str) else shown(v) for v in param.enum))
    if param.minimum is not None or param.maximum is not None:
        low = "" if param.minimum is None else f"{param.minimum:g}"
        high = "" if param.maximum is None else f"{param.maximum:g}"
        bits.append(f"{low}..{high}")
    line = f"{param.name} ({', '.join(bits)})"
    if param.description:
        line += f" — {param.description}"
    return line


def layers(job: JobDefinition) -> list[list[str]]:
    """Steps grouped by depth: a step sits one layer below the deepest step it waits for."""
    graph = dependency_graph(job.steps)
    depth: dict[str, int] = {}
    for sid in topological_order(job.steps):
        depth[sid] = 1 + max((depth[d] for d in graph[sid]), default=-1)
    out: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for sid in topological_order(job.steps):
        out[depth[sid]].append(sid)
    return out


def _step_head(step: Step, deps: list[str]) -> str:
    kind = f"tool {step.tool_id}" if step.tool_id is not None else f"job {step.job_id}"
    head = f"{step.step_id} · {kind}"
    if deps:
        head += " · after " + ", ".join(deps)
    return head


def job_dag_lines(job: JobDefinition) -> list[str]:
    """The job's steps as a layered graph: each layer runs after the one above it.

    Raises ``DefinitionError`` for a job whose steps form a cycle (a registered job never does).
    """
    graph = dependency_graph(job.steps)
    lines: list[str] = []
    inputs = ", ".join(f"job.{p.name}" for p in job.input_schema) or "(no inputs)"
    lines.append(f"inputs: {inputs}")
    for number, layer in enumerate(layers(job), start=1):
        lines.append("   │")
        lines.append("   ▼")
        parallel = " (in parallel)" if len(layer) > 1 else ""
        lines.append(f"layer {number}{parallel}")
        for position, sid in enumerate(layer):
            step = job.step(sid)
            assert step is not None
            branch = "└─" if position == len(layer) - 1 else "├─"
            rail = "  " if position == len(layer) - 1 else "│ "
            lines.append(f" {branch} {_step_head(step, graph[sid])}")
            if step.condition:
                lines.append(f" {rail}     if {step.condition}")
            for mapping in step.input_mappings:
                lines.append(f" {rail}     {mapping.target_input_name} ← {_source(mapping)}")
            if step.error_handling is not None:
                eh = step.error_handling
                text = f"on error: {eh.strategy.value}"
                if eh.strategy.value == "retry":
                    text += f" up to {eh.max_attempts} attempt{'' if eh.max_attempts == 1 else 's'}, then {eh.then.value}"
                if eh.fallback_tool_id:
                    text += f" (fallback {eh.fallback_tool_id})"
                lines.append(f" {rail}     {text}")
    if job.output_schema:
        lines.append("   │")
        lines.append("   ▼")
        lines.append("outputs")
        for output in job.output_schema:
            source = output_source(job, output)
            where = "(unresolved)" if source is None else f"{source[0]}.{source[1]}"
            if source is not None and source[2]:
                where += f" → {source[2]}"
            lines.append(f"    {output.name} ({output.type.value}) ← {where}")
    return lines


def tool_lines(tool: ToolDefinition) -> list[str]:
    lines = [f"service: {tool.service}", f"command: /{tool.command_name}"]
    if tool.description:
        lines.append(f"description: {tool.description}")
    lines.append("inputs:")
    lines.extend(f"  {param_line(p)}" for p in tool.input_schema)
    if not tool.input_schema:
        lines.append("  (none)")
    lines.append("outputs:")
    lines.extend(
        f"  {o.name} ({o.type.value})" + (f" — {o.description}" if o.description else "")
        for o in tool.output_schema
    )
    if not tool.output_schema:
        lines.append("  (none)")
    if tool.costing_model is not None:
        cm = tool.costing_model
        lines.append(
            f"costing: {cm.rate_source.value}" + (f" ({cm.machine_class})" if cm.machine_class else "")
        )
    if tool.metadata:
        lines.append("metadata: " + ", ".join(f"{k}={v}" for k, v in sorted(tool.metadata.items())))
    return lines


__all__ = ["job_dag_lines", "layers", "param_line", "tool_lines"]
