"""Validation of tool and job definitions and their cross-references. Pure: no I/O.

Every check appends a ``Problem`` (file, JSON path, one plain sentence) instead of stopping, so a
definition's author sees everything that is wrong at once. The type compatibility table used for
mappings is ``compatible`` below; docs/definitions.md documents it.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

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
    ToolDefinition,
    ValueSource,
)
from toolweave.model.graph import dependency_graph, output_source, reachable, sink_steps, step_order
from toolweave.registry.problems import DefinitionError, Problem, join_path

T = ParamType
_TEXT = frozenset({T.STRING, T.TEXT})
_INTEGERS = frozenset({T.INTEGER, T.SEED})

COMPATIBLE: dict[ParamType, frozenset[ParamType]] = {
    T.STRING: frozenset({T.STRING, T.TEXT, T.ENUM, T.JSON}),
    T.TEXT: frozenset({T.STRING, T.TEXT, T.ENUM, T.JSON}),
    T.ENUM: frozenset({T.STRING, T.TEXT, T.ENUM, T.JSON}),
    T.INTEGER: frozenset({T.INTEGER, T.SEED, T.NUMBER, T.JSON}),
    T.SEED: frozenset({T.INTEGER, T.SEED, T.NUMBER, T.JSON}),
    T.NUMBER: frozenset({T.NUMBER, T.JSON}),
    T.BOOLEAN: frozenset({T.BOOLEAN, T.JSON}),
    T.JSON: frozenset({T.JSON}),
    T.IMAGE: frozenset({T.IMAGE, T.FILE}),
    T.VIDEO: frozenset({T.VIDEO, T.FILE}),
    T.AUDIO: frozenset({T.AUDIO, T.FILE}),
    T.FILE: frozenset({T.FILE, T.IMAGE, T.VIDEO, T.AUDIO}),
}
"""source type → the target types it may feed (before the URL rule for media, see ``compatible``).
A ``file`` (e.g. ``media.fetch``'s output) may feed an image, video or audio input: what the file
is shows only at run time, where the tool refuses a file of the wrong kind (not retryable)."""


def compatible(source: ParamType, target: ParamType, *, target_takes_url: bool = False) -> bool:
    """Whether a value of type ``source`` may be mapped into a target of type ``target``.

    Media (image, video, audio, file) may also feed a string or text target that takes a URL
    (an input with ``acceptsUrl: true``, or a job output of type string): it is passed as its URL.
    """
    if target in COMPATIBLE[source]:
        return True
    return source in MEDIA_TYPES and target in _TEXT and target_takes_url


class Catalog(Protocol):
    """What validation needs to know about what is registered."""

    def get_tool(self, tool_id: str) -> ToolDefinition | None: ...

    def get_job(self, job_id: str) -> JobDefinition | None: ...

    def command_owner(self, command_name: str) -> tuple[str, str] | None:
        """``(kind, id)`` of the tool or job that has ``command_name``, if any."""
        ...

    def refused(self, definition_id: str) -> bool:
        """Whether a definition with this id was refused in the same load (for clearer messages)."""
        ...


@dataclass
class MemoryCatalog:
    """A ``Catalog`` over plain lists (the latest version of each id wins); for tests and tools."""

    tools: Sequence[ToolDefinition] = ()
    jobs: Sequence[JobDefinition] = ()

    def get_tool(self, tool_id: str) -> ToolDefinition | None:
        return next((t for t in reversed(self.tools) if t.tool_id == tool_id), None)

    def get_job(self, job_id: str) -> JobDefinition | None:
        return next((j for j in reversed(self.jobs) if j.job_id == job_id), None)

    def command_owner(self, command_name: str) -> tuple[str, str] | None:
        for tool in self.tools:
            if tool.command_name == command_name:
                return ("tool", tool.tool_id)
        for job in self.jobs:
            if job.command_name == command_name:
                return ("job", job.job_id)
        return None

    def refused(self, definition_id: str) -> bool:
        return False


class _Sink:
    def __init__(self, file: str | None, prefix: str) -> None:
        self.file = file
        self.prefix = prefix
        self.problems: list[Problem] = []

    def add(self, path: str, message: str) -> None:
        self.problems.append(Problem(self.file, join_path(self.prefix, path), message))


def _quote_list(names: Iterable[str]) -> str:
    items = [repr(n) for n in names]
    return ", ".join(items) if items else "none"


def _and(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _suggest(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _article(kind: ParamType) -> str:
    return ("an " if kind.value[0] in "aeiou" else "a ") + kind.value


# --- graph helpers ------------------------------------------------------------------------------


def find_cycles(graph: Mapping[str, Sequence[str]], order: Sequence[str]) -> list[list[str]]:
    """One cycle per strongly connected component that has one, each starting at its earliest step.

    ``graph`` maps a node to the nodes it depends on; ``order`` is the declaration order.
    """
    index_of = {node: i for i, node in enumerate(order)}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for root in order:
        if root in index:
            continue
        # Iterative Tarjan: (node, iterator position)
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, pos = work.pop()
            if pos == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            deps = graph.get(node, [])
            recurse = False
            for i in range(pos, len(deps)):
                dep = deps[i]
                if dep not in index:
                    work.append((node, i + 1))
                    work.append((dep, 0))
                    recurse = True
                    break
                if dep in on_stack:
                    low[node] = min(low[node], index[dep])
            if recurse:
                continue
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    cycles: list[list[str]] = []
    for component in components:
        members = set(component)
        if len(component) == 1 and component[0] not in graph.get(component[0], []):
            continue
        start = min(component, key=lambda n: index_of.get(n, 0))
        cycles.append(_cycle_through(graph, start, members, index_of))
    cycles.sort(key=lambda c: index_of.get(c[0], 0))
    return cycles


def _cycle_through(
    graph: Mapping[str, Sequence[str]], start: str, members: set[str], index_of: Mapping[str, int]
) -> list[str]:
    """A shortest cycle from ``start`` back to itself inside one strongly connected component."""
    previous: dict[str, str] = {}
    frontier = [start]
    seen = {start}
    while frontier:
        following: list[str] = []
        for node in frontier:
            for dep in sorted(graph.get(node, []), key=lambda n: index_of.get(n, 0)):
                if dep not in members:
                    continue
                if dep == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return list(reversed(path))
                if dep not in seen:
                    seen.add(dep)
                    previous[dep] = node
                    following.append(dep)
        frontier = following
    return [start]  # pragma: no cover - a component with a cycle always has one through start


def topological_order(steps: Sequence[Step]) -> list[str]:
    """Step ids so that every step comes after the steps it depends on; ties keep declaration order.

    Raises ``DefinitionError`` when the steps form a cycle.
    """
    out = step_order(steps)
    if len(out) != len(steps):
        cycles = find_cycles(dependency_graph(steps), [s.step_id for s in steps])
        raise DefinitionError([Problem(None, "steps", _cycle_message(c)) for c in cycles])
    return out


def _cycle_message(cycle: list[str]) -> str:
    if len(cycle) == 1:
        return f"step {cycle[0]!r} depends on itself"
    names = ", ".join(repr(s) for s in cycle)
    chain = " → ".join([*cycle, cycle[0]])
    return f"steps {names} form a cycle ({chain}; each waits for the next)"


def ancestors(graph: Mapping[str, Sequence[str]], step_id: str) -> set[str]:
    """Every step ``step_id`` waits for, directly or not (cycle-safe)."""
    return reachable(graph, graph.get(step_id, []))


def _check_default(sink: _Sink, path: str, param: InputParam) -> None:
    if param.default is None:
        return
    try:
        if param.type.is_media:
            classify_media(param.default)
        else:
            check_value(param, param.default, coerce_text=False, allow_paths=False)
    except ValueError as exc:
        sink.add(f"{path}.default", f"the default {param.default!r} does not fit: {exc}")


def _check_params(sink: _Sink, where: str, params: Sequence[InputParam]) -> None:
    seen: set[str] = set()
    for param in params:
        path = f"{where}.{param.name}"
        if param.name in seen:
            sink.add(path, f"the input {param.name!r} is declared twice")
        seen.add(param.name)
        if param.type is ParamType.ENUM and not param.enum:
            sink.add(path, f"the enum input {param.name!r} lists no allowed values (enum: [...])")
        if param.minimum is not None and param.maximum is not None and param.minimum > param.maximum:
            sink.add(path, f"minimum {param.minimum} is greater than maximum {param.maximum}")
        if param.accepts_url and param.type not in _TEXT:
            sink.add(path, f"acceptsUrl only applies to string or text inputs, not {param.type.value}")
        _check_default(sink, path, param)
    _check_visible_if(sink, where, params)


def _check_visible_if(sink: _Sink, where: str, params: Sequence[InputParam]) -> None:
    """``visibleIf`` names another input, lists values that input can take, and no input hides
    behind itself through others."""
    by_name = {p.name: p for p in params}
    for param in params:
        condition = param.visible_if
        if condition is None:
            continue
        path = f"{where}.{param.name}.visibleIf"
        control = by_name.get(condition.field)
        if control is None or control is param:
            others = [n for n in by_name if n != param.name]
            sink.add(path, f"visibleIf names {condition.field!r}, which is not another input of this schema"
                     f"{_suggest(condition.field, others)}")
            continue
        for value in condition.values:
            try:
                check_value(control, value, coerce_text=True, allow_paths=False)
            except ValueError as exc:
                sink.add(path, f"the value {value!r} can never be input {control.name!r}'s: {exc}")
        chain = [param.name]
        current = control
        while current.visible_if is not None and current.visible_if.field in by_name:
            if current.name in chain:
                break
            chain.append(current.name)
            current = by_name[current.visible_if.field]
            if current.name == param.name:
                sink.add(path, f"visibleIf goes round in a circle: {' → '.join([*chain, param.name])}")
                break


def _check_outputs(sink: _Sink, where: str, outputs: Sequence[OutputParam | JobOutput]) -> None:
    seen: set[str] = set()
    for output in outputs:
        if output.name in seen:
            sink.add(f"{where}.{output.name}", f"the output {output.name!r} is declared twice")
        seen.add(output.name)


def _check_command(sink: _Sink, kind: str, ident: str, command: str | None, catalog: Catalog | None) -> None:
    if catalog is None or command is None:
        return
    owner = catalog.command_owner(command)
    if owner is not None and owner != (kind, ident):
        sink.add(
            "commandName",
            f"the command name {command!r} is already used by {owner[0]} {owner[1]!r}; "
            "set a different commandName",
        )


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


# --- jobs ---------------------------------------------------------------------------------------


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


def _nested_chain(job: JobDefinition, catalog: Catalog, start: str) -> list[str] | None:
    """The chain of job ids from ``start`` back to ``job`` through nested jobs, if there is one."""
    todo: list[tuple[str, list[str]]] = [(start, [job.job_id, start])]
    seen: set[str] = set()
    while todo:
        current, chain = todo.pop()
        if current == job.job_id:
            return chain
        if current in seen:
            continue
        seen.add(current)
        nested = catalog.get_job(current)
        if nested is None:
            continue
        for step in nested.steps:
            if step.job_id is not None:
                todo.append((step.job_id, [*chain, step.job_id]))
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
        for i, step in enumerate(job.steps):
            self.targets[step.step_id] = self._target(i, step)
        for i, step in enumerate(job.steps):
            self._step(i, step)
        self._cycles()
        self._outputs()

    # steps -------------------------------------------------------------------------------------

    def _target(self, i: int, step: Step) -> _Target | None:
        path = f"steps[{i}]"
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
            if param is None:
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
    """Problems of a job against what ``catalog`` knows (tools, nested jobs, command names)."""
    sink = _Sink(file if file is not None else job.source, prefix)
    _JobCheck(job, catalog, sink).run()
    return sink.problems


def nested_job_ids(job: JobDefinition) -> list[str]:
    """The ids of the jobs this job's steps run, in order, without repeats."""
    out: list[str] = []
    for step in job.steps:
        if step.job_id is not None and step.job_id not in out:
            out.append(step.job_id)
    return out


def as_dict(problems: Iterable[Problem]) -> list[dict[str, Any]]:
    return [p.as_dict() for p in problems]


__all__ = [
    "COMPATIBLE",
    "Catalog",
    "MemoryCatalog",
    "ancestors",
    "compatible",
    "dependency_graph",
    "find_cycles",
    "nested_job_ids",
    "output_source",
    "sink_steps",
    "topological_order",
    "validate_job",
    "validate_tool",
]
