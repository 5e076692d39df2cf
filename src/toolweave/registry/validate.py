"""Validation of job definitions and their cross-references: each step's tool or nested job, its
input mappings, templates and condition, map steps, fallbacks, cycles and the job's outputs. Pure:
no I/O. The pieces every check shares are in ``checks`` (with the type compatibility table),
a tool's own checks in ``validate_tool``, the step graph in ``graph``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from toolweave.engine.conditions import ConditionError, compile_condition
from toolweave.engine.mapping import (
    MAP_TEMPLATE_VARIABLES,
    TEMPLATE_VARIABLES,
    MappingError,
    parse_path,
    template_job_references,
    template_references,
)
from toolweave.inputs import check_value, classify_media
from toolweave.model.definitions import (
    MEDIA_TYPES,
    ErrorStrategy,
    InputMapping,
    InputParam,
    JobDefinition,
    JobOutput,
    OutputParam,
    ParamType,
    Step,
    ValueSource,
)
from toolweave.model.graph import dependency_graph, output_source, sink_steps
from toolweave.registry.asking import ask_contract, ask_problems
from toolweave.registry.checks import (
    _TEXT,
    Catalog,
    _and,
    _article,
    _check_command,
    _check_outputs,
    _check_params,
    _quote_list,
    _Sink,
    _suggest,
    compatible,
)
from toolweave.registry.expressions import TOO_COSTLY, compile_allowance, too_long
from toolweave.registry.graph import _cycle_message, _nested_chain, ancestors, find_cycles
from toolweave.registry.problems import Problem, join_path


@dataclass
class _Target:
    """What a step runs: a tool or a nested job, seen through its inputs and outputs."""

    kind: str
    ident: str
    inputs: list[InputParam]
    outputs: list[OutputParam | JobOutput]

    def input(self, name: str) -> InputParam | None:
        return next((p for p in self.inputs if p.name == name), None)

    def output(self, name: str) -> OutputParam | JobOutput | None:
        return next((o for o in self.outputs if o.name == name), None)

    @property
    def label(self) -> str:
        return f"{self.kind} {self.ident!r}"


def _target_of(step: Step, catalog: Catalog) -> _Target | None:
    if step.tool_id is not None:
        tool = catalog.get_tool(step.tool_id)
        if tool is not None:
            return _Target("tool", tool.tool_id, list(tool.input_schema), list(tool.output_schema))
    elif step.job_id is not None:
        job = catalog.get_job(step.job_id)
        if job is not None:
            return _Target("job", job.job_id, list(job.input_schema), list(job.output_schema))
    return None


class _JobCheck:
    def __init__(self, job: JobDefinition, catalog: Catalog, sink: _Sink) -> None:
        self.job = job
        self.catalog = catalog
        self.sink = sink
        self.steps = {s.step_id: s for s in job.steps}
        self.graph = dependency_graph(job.steps)
        self.targets: dict[str, _Target | None] = {}
        self.job_inputs = {p.name: p for p in job.input_schema}

    def run(self) -> None:
        job, sink = self.job, self.sink
        _check_params(sink, "inputSchema", job.input_schema)
        _check_outputs(sink, "outputSchema", job.output_schema)
        if self.catalog.get_tool(job.job_id) is not None:
            sink.add("jobId", f"the id {job.job_id!r} is already used by a tool")
        _check_command(sink, "job", job.job_id, job.command_name, self.catalog)
        seen: set[str] = set()
        for i, step in enumerate(job.steps):
            if step.step_id in seen:
                sink.add(f"steps[{i}].stepId", f"the step id {step.step_id!r} is used twice")
            seen.add(step.step_id)
        for i, step in sorted(enumerate(job.steps), key=lambda found: found[1].ask is not None):  # ask steps last
            self.targets[step.step_id] = self._target(i, step)
        for i, step in enumerate(job.steps):
            self._step(i, step)
        self._cycles()
        self._outputs()

    # steps -------------------------------------------------------------------------------------

    def _target(self, i: int, step: Step) -> _Target | None:
        path = f"steps[{i}]"
        if step.ask is not None:  # a step that asks a person (registry.asking)
            for where, message in ask_problems(step):
                self.sink.add(f"{path}.{where}", message)
            inputs, outputs = ask_contract(step, self._output_of)
            return _Target("ask step", step.step_id, inputs, list(outputs))
        if step.tool_id is not None and step.job_id is not None:
            self.sink.add(path, f"step {step.step_id!r} names both a toolId and a jobId; give one")
            return None
        if step.tool_id is None and step.job_id is None:
            self.sink.add(path, f"step {step.step_id!r} names neither a toolId nor a jobId")
            return None
        if step.job_id is not None:
            if step.job_id == self.job.job_id:
                self.sink.add(
                    f"{path}.jobId", f"job {self.job.job_id!r} contains itself (step {step.step_id!r})"
                )
                return None
            chain = _nested_chain(self.job, self.catalog, step.job_id)
            if chain is not None:
                self.sink.add(
                    f"{path}.jobId",
                    f"job {self.job.job_id!r} contains itself through nested jobs: {' → '.join(chain)}",
                )
                return None
        target = _target_of(step, self.catalog)
        if target is None:
            kind, ident = ("tool", step.tool_id) if step.tool_id is not None else ("job", step.job_id)
            field = "toolId" if kind == "tool" else "jobId"
            if ident is not None and self.catalog.refused(ident):
                self.sink.add(f"{path}.{field}", f"{kind} {ident!r} was refused (see its own problems)")
            else:
                self.sink.add(f"{path}.{field}", f"{kind} {ident!r} is not registered")
        return target

    def _output_of(self, step_id: str, name: str) -> tuple[OutputParam | JobOutput, bool] | None:
        target, source = self.targets.get(step_id), self.steps.get(step_id)
        output = target.output(name) if target is not None else None
        return None if output is None or source is None else (output, source.map is not None)

    def _step(self, i: int, step: Step) -> None:
        path = f"steps[{i}]"
        target = self.targets.get(step.step_id)
        for k, dep in enumerate(step.dependencies):
            if dep not in self.steps:
                self.sink.add(
                    f"{path}.dependencies[{k}]",
                    f"step {step.step_id!r} depends on step {dep!r}, which is not in this job"
                    + _suggest(dep, self.steps),
                )
        mapped: dict[str, InputMapping] = {}
        for j, mapping in enumerate(step.input_mappings):
            mpath = f"{path}.inputMappings[{j}]"
            if mapping.target_input_name in mapped:
                self.sink.add(
                    f"{mpath}.targetInputName",
                    f"the input {mapping.target_input_name!r} is mapped twice in step {step.step_id!r}",
                )
            mapped[mapping.target_input_name] = mapping
            self._mapping(mpath, step, mapping, target)
        if target is not None:
            self._required(path, step, target, mapped)
        self._fallback(path, step, mapped)
        if step.condition is not None:
            self._condition(f"{path}.condition", step)
        if step.map is not None:
            self._map(f"{path}.map", step)
        if step.cache is not None and step.cache.enabled and step.job_id is not None:
            self.sink.add(
                f"{path}.cache",
                f"step {step.step_id!r} runs a job; cache applies to the tools its steps run (set it there)",
            )

    def _mapping(self, path: str, step: Step, mapping: InputMapping, target: _Target | None) -> None:
        sources = mapping.sources
        if not sources:
            self.sink.add(
                path,
                f"the mapping of {mapping.target_input_name!r} names no source; give one of "
                "sourceJobInput, sourceStepId with sourceOutputName, value, template, sourceItem or collect",
            )
            return
        if len(sources) > 1:
            self.sink.add(
                path,
                f"the mapping of {mapping.target_input_name!r} names {len(sources)} sources "
                f"({', '.join(sources)}); give exactly one",
            )
            return
        param: InputParam | None = None
        if target is not None:
            param = target.input(mapping.target_input_name)
            if param is None and step.ask is None:  # (an ask step shows the person what else it is given)
                names = [p.name for p in target.inputs]
                self.sink.add(
                    f"{path}.targetInputName",
                    f"{target.label} has no input {mapping.target_input_name!r} (its inputs: "
                    f"{_quote_list(names)}){_suggest(mapping.target_input_name, names)}",
                )
        if mapping.path is not None and mapping.source_step_id is None and not mapping.source_item:
            self.sink.add(f"{path}.path", "path only applies to a mapping from sourceStepId or sourceItem")
        kind = sources[0]
        if kind == "sourceJobInput":
            self._from_job_input(path, mapping, param)
        elif kind == "sourceStepId":
            self._from_step(path, step, mapping, param)
        elif kind == "value":
            self._from_value(path, mapping, param)
        elif kind == "sourceItem":
            self._from_item(path, step, mapping, param)
        elif kind == "collect":
            self._collect(path, step, mapping, param)
        else:
            self._from_template(path, step, mapping, param)

    def _from_item(self, path: str, step: Step, mapping: InputMapping, param: InputParam | None) -> None:
        if step.map is None:
            self.sink.add(
                f"{path}.sourceItem",
                f"sourceItem reads the item of a map step, and step {step.step_id!r} has no map",
            )
            return
        if mapping.path is not None:
            try:
                parse_path(mapping.path)
            except MappingError as exc:
                self.sink.add(f"{path}.path", str(exc))
            return
        item_type = self._item_type(step)
        if item_type is not None:
            self._type_check(path, f"an item of the list step {step.step_id!r} maps over", item_type, param)

    def _item_type(self, step: Step) -> ParamType | None:
        """The type of a map step's items when it can be told (a map over another map step's output)."""
        assert step.map is not None
        over = step.map.over
        if over.source_step_id is None or over.path is not None:
            return None
        source = self.steps.get(over.source_step_id)
        target = self.targets.get(over.source_step_id)
        if source is None or source.map is None or target is None:
            return None
        output = target.output(over.source_output_name or "")
        return output.type if output is not None else None

    def _collect(self, path: str, step: Step, mapping: InputMapping, param: InputParam | None) -> None:
        if param is not None and param.type is not ParamType.JSON:
            self.sink.add(
                f"{path}.collect",
                f"collect gives a list, but input {param.name!r} takes {_article(param.type)}; "
                "it may only feed a json input",
            )
        if not mapping.collect:
            self.sink.add(f"{path}.collect", "collect lists no sources; give one or more")
            return
        for k, part in enumerate(mapping.collect):
            self._source(f"{path}.collect[{k}]", step, part, f"part {k} of the list collected into {mapping.target_input_name!r}")

    def _source(self, path: str, step: Step, source: ValueSource, what: str) -> None:
        """A plain source (of a ``collect`` part or a map's list): exactly one of a job input, a step's
        output or a value, naming things that exist."""
        kinds = source.sources
        if len(kinds) != 1:
            self.sink.add(
                path,
                f"{what} names {len(kinds) or 'no'} source{'s' if len(kinds) != 1 else ''}"
                f"{' (' + ', '.join(kinds) + ')' if kinds else ''}; give exactly one of sourceJobInput, "
                "sourceStepId with sourceOutputName, or value",
            )
            return
        if source.path is not None and source.source_step_id is None:
            self.sink.add(f"{path}.path", "path only applies to a source from sourceStepId")
        if kinds[0] == "sourceJobInput":
            name = source.source_job_input or ""
            if name not in self.job_inputs:
                self.sink.add(
                    f"{path}.sourceJobInput",
                    f"the job has no input {name!r} (its inputs: {_quote_list(self.job_inputs)})"
                    + _suggest(name, self.job_inputs),
                )
        elif kinds[0] == "sourceStepId":
            self._step_output(path, step, source)

    def _step_output(self, path: str, step: Step, source: ValueSource) -> OutputParam | JobOutput | None:
        """Check a source from a step's output; the output when it can be found."""
        source_id, output_name = source.source_step_id, source.source_output_name
        if source_id is None or output_name is None:
            missing = "sourceOutputName" if output_name is None else "sourceStepId"
            self.sink.add(path, f"a mapping from a step needs both sourceStepId and sourceOutputName; {missing} is missing")
            return None
        if source_id == step.step_id:
            self.sink.add(f"{path}.sourceStepId", f"step {step.step_id!r} cannot read its own outputs")
            return None
        if source_id not in self.steps:
            self.sink.add(f"{path}.sourceStepId", f"step {source_id!r} is not in this job{_suggest(source_id, self.steps)}")
            return None
        if source.path is not None:
            try:
                parse_path(source.path)
            except MappingError as exc:
                self.sink.add(f"{path}.path", str(exc))
        target = self.targets.get(source_id)
        if target is None:
            return None
        output = target.output(output_name)
        if output is None:
            names = [o.name for o in target.outputs]
            self.sink.add(
                f"{path}.sourceOutputName",
                f"step {source_id!r} ({target.label}) has no output {output_name!r} "
                f"(its outputs: {_quote_list(names)}){_suggest(output_name, names)}",
            )
        return output

    def _map(self, path: str, step: Step) -> None:
        assert step.map is not None
        over = step.map.over
        self._source(f"{path}.over", step, over, f"the list step {step.step_id!r} maps over")
        kinds = over.sources
        if kinds == ["value"] and not isinstance(over.value, list):
            self.sink.add(f"{path}.over.value", f"a map runs over a list; the value is {type(over.value).__name__}")
        elif kinds == ["sourceJobInput"]:
            param = self.job_inputs.get(over.source_job_input or "")
            if param is not None and param.type is not ParamType.JSON:
                self.sink.add(
                    f"{path}.over",
                    f"a map runs over a list, and job input {param.name!r} is {_article(param.type)}; "
                    "declare it as json (a list of items)",
                )
        elif kinds == ["sourceStepId"] and over.path is None:
            source = self.steps.get(over.source_step_id or "")
            target = self.targets.get(over.source_step_id or "")
            output = target.output(over.source_output_name or "") if target is not None else None
            if source is not None and source.map is None and output is not None and output.type is not ParamType.JSON:
                self.sink.add(
                    f"{path}.over",
                    f"a map runs over a list, and output {output.name!r} of step {source.step_id!r} is "
                    f"{_article(output.type)}",
                )
        handling = step.error_handling
        if handling is not None and ErrorStrategy.FALLBACK in (handling.strategy, handling.then) and step.job_id:
            self.sink.add(f"{path}", "a map step of a nested job cannot fall back to a tool")

    def _type_check(self, path: str, what: str, source: ParamType, param: InputParam | None) -> None:
        if param is None:
            return
        if not compatible(source, param.type, target_takes_url=param.accepts_url):
            hint = ""
            if source in MEDIA_TYPES and param.type in _TEXT:
                hint = " (it would take the URL only if the input declared acceptsUrl: true)"
            self.sink.add(
                path,
                f"{what} is {_article(source)}, but input {param.name!r} takes {_article(param.type)}{hint}",
            )

    def _from_job_input(self, path: str, mapping: InputMapping, param: InputParam | None) -> None:
        name = mapping.source_job_input or ""
        source = self.job_inputs.get(name)
        if source is None:
            self.sink.add(
                f"{path}.sourceJobInput",
                f"the job has no input {name!r} (its inputs: {_quote_list(self.job_inputs)})"
                + _suggest(name, self.job_inputs),
            )
            return
        self._type_check(path, f"job input {name!r}", source.type, param)

    def _from_step(self, path: str, step: Step, mapping: InputMapping, param: InputParam | None) -> None:
        output = self._step_output(path, step, mapping)
        if output is None:
            return
        source_id, output_name = mapping.source_step_id or "", mapping.source_output_name or ""
        if mapping.path is None:
            source_step = self.steps[source_id]
            if source_step.map is not None:
                if param is not None and param.type is not ParamType.JSON:
                    self.sink.add(
                        path,
                        f"output {output_name!r} of step {source_id!r} is a list (one {output.type.value} per item "
                        f"of the map step), but input {param.name!r} takes {_article(param.type)}; feed it to a "
                        "json input, map over it, or take one item with path",
                    )
                return
            self._type_check(path, f"output {output_name!r} of step {source_id!r}", output.type, param)

    def _from_value(self, path: str, mapping: InputMapping, param: InputParam | None) -> None:
        if param is None or mapping.value is None:
            return
        try:
            if param.type.is_media:
                classify_media(mapping.value)
            else:
                check_value(param, mapping.value, coerce_text=False, allow_paths=False)
        except ValueError as exc:
            self.sink.add(
                f"{path}.value", f"the value {mapping.value!r} does not fit input {param.name!r}: {exc}"
            )

    def _from_template(self, path: str, step: Step, mapping: InputMapping, param: InputParam | None) -> None:
        src = mapping.template or ""
        try:
            free, refs, _ = template_references(src)
        except MappingError as exc:
            self.sink.add(f"{path}.template", str(exc))
            return
        allowed = TEMPLATE_VARIABLES | (MAP_TEMPLATE_VARIABLES if step.map is not None else frozenset())
        unknown = sorted(free - allowed)
        if unknown:
            also = " (item and index only in a map step)" if set(unknown) & MAP_TEMPLATE_VARIABLES else ""
            self.sink.add(
                f"{path}.template",
                f"template {src!r} uses {_quote_list(unknown)}; only {_and(sorted(allowed))} are available{also}",
            )
        self._step_refs(f"{path}.template", step, refs, "template")
        self._job_refs(f"{path}.template", template_job_references(src), "template")
        if param is not None and param.type.is_media:
            self.sink.add(
                path, f"a template gives text, but input {param.name!r} takes {_article(param.type)}"
            )

    def _step_refs(self, path: str, step: Step, refs: Iterable[str], what: str) -> None:
        before = ancestors(self.graph, step.step_id)
        for ref in sorted(refs):
            if ref not in self.steps:
                self.sink.add(
                    path,
                    f"the {what} reads step {ref!r}, which is not in this job{_suggest(ref, self.steps)}",
                )
            elif ref == step.step_id:
                self.sink.add(path, f"the {what} of step {step.step_id!r} reads the step itself")
            elif ref not in before:
                self.sink.add(
                    path,
                    f"the {what} reads step {ref!r}, which step {step.step_id!r} does not depend on; "
                    "add it to dependencies",
                )

    def _job_refs(self, path: str, names: Iterable[str], what: str) -> None:
        for name in sorted(names):
            if name not in self.job_inputs:
                self.sink.add(
                    path,
                    f"the {what} reads job input {name!r}, which the job does not declare"
                    + _suggest(name, self.job_inputs),
                )

    def _required(self, path: str, step: Step, target: _Target, mapped: Mapping[str, InputMapping]) -> None:
        for param in target.inputs:
            if not param.required or param.default is not None or param.type is ParamType.SEED:
                continue
            if param.visible_if is not None:
                continue  # required only when shown; whether it is depends on the run's values
            mapping = mapped.get(param.name)
            if mapping is None:
                self.sink.add(
                    f"{path}.inputMappings",
                    f"the required input {param.name!r} of {target.label} is neither mapped nor defaulted",
                )
                continue
            job_input = self.job_inputs.get(mapping.source_job_input or "")
            if (
                job_input is not None
                and not job_input.required
                and job_input.default is None
                and not mapping.has_default
            ):
                self.sink.add(
                    f"{path}.inputMappings",
                    f"the required input {param.name!r} of {target.label} comes from the optional job "
                    f"input {job_input.name!r}, which has no default; make it required or give it a default",
                )

    def _fallback(self, path: str, step: Step, mapped: Mapping[str, InputMapping]) -> None:
        handling = step.error_handling
        if handling is None or handling.fallback_tool_id is None:
            return
        tool = self.catalog.get_tool(handling.fallback_tool_id)
        if tool is None:
            self.sink.add(
                f"{path}.errorHandling.fallbackToolId",
                f"the fallback tool {handling.fallback_tool_id!r} is not registered",
            )
            return
        names = [p.name for p in tool.input_schema]
        for name in mapped:
            if tool.input(name) is None:
                self.sink.add(
                    f"{path}.errorHandling.fallbackToolId",
                    f"the fallback tool {tool.tool_id!r} has no input {name!r}, which this step maps "
                    f"(its inputs: {_quote_list(names)})",
                )

    def _condition(self, path: str, step: Step) -> None:
        try:
            compiled = compile_condition(step.condition or "")
        except ConditionError as exc:
            self.sink.add(path, str(exc))
            return
        self._step_refs(path, step, compiled.step_refs, "condition")
        self._job_refs(path, compiled.job_refs, "condition")

    # the whole job -----------------------------------------------------------------------------

    def _cycles(self) -> None:
        order = [s.step_id for s in self.job.steps]
        position = {sid: i for i, sid in enumerate(order)}
        for cycle in find_cycles(self.graph, order):
            self.sink.add(f"steps[{position[cycle[0]]}]", _cycle_message(cycle))

    def _outputs(self) -> None:
        for output in self.job.output_schema:
            path = f"outputSchema.{output.name}"
            if output.source_step_id is not None and output.source_step_id not in self.steps:
                self.sink.add(
                    f"{path}.sourceStepId",
                    f"step {output.source_step_id!r} is not in this job{_suggest(output.source_step_id, self.steps)}",
                )
                continue
            source = output_source(self.job, output)
            if source is None:
                sinks = sink_steps(self.job.steps)
                self.sink.add(
                    path,
                    f"the output {output.name!r} names no sourceStepId and the job has "
                    f"{len(sinks)} final steps ({_quote_list(sinks)}); add sourceStepId",
                )
                continue
            step_id, output_name, out_path = source
            if out_path is not None:
                try:
                    parse_path(out_path)
                except MappingError as exc:
                    self.sink.add(f"{path}.path", str(exc))
            target = self.targets.get(step_id)
            if target is None:
                continue
            produced = target.output(output_name)
            if produced is None:
                names = [o.name for o in target.outputs]
                implied = "" if output.source_step_id is not None else " (its final step)"
                self.sink.add(
                    path,
                    f"step {step_id!r}{implied} ({target.label}) has no output {output_name!r} "
                    f"(its outputs: {_quote_list(names)}){_suggest(output_name, names)}",
                )
                continue
            if out_path is None and self.steps[step_id].map is not None:
                if output.type is not ParamType.JSON:
                    self.sink.add(
                        path,
                        f"output {output_name!r} of step {step_id!r} is a list (one per item of the map step), "
                        f"but the job output {output.name!r} is {_article(output.type)}; declare it as json",
                    )
                continue
            if out_path is None and not compatible(produced.type, output.type, target_takes_url=True):
                self.sink.add(
                    path,
                    f"output {output_name!r} of step {step_id!r} is {_article(produced.type)}, "
                    f"but the job output {output.name!r} is {_article(output.type)}",
                )


def validate_job(
    job: JobDefinition, catalog: Catalog, *, file: str | None = None, prefix: str = ""
) -> list[Problem]:
    """Problems of a job against what ``catalog`` knows (tools, nested jobs, command names). One
    that is too costly to check (``registry.expressions``) has that one problem."""
    sink = _Sink(file if file is not None else job.source, prefix)

    def costly(message: str) -> Problem:
        return Problem(sink.file, join_path(prefix, "steps"), message, code=TOO_COSTLY)

    refused = too_long(job, costly)
    if refused is not None:  # none of them is compiled
        return [refused]
    with compile_allowance(job, costly) as refusal:
        _JobCheck(job, catalog, sink).run()
    return refusal or sink.problems


def as_dict(problems: Iterable[Problem]) -> list[dict[str, Any]]:
    return [p.as_dict() for p in problems]


__all__ = ["validate_job"]
