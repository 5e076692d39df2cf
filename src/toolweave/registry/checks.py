"""What every definition check shares: the sink problems are added to (file, JSON path, one plain
sentence each, so an author sees everything wrong at once) and the phrasing of its sentences; the
``Catalog`` checks look other definitions up in; the type compatibility table used for mappings
(``compatible``; docs/definitions.md documents it); the checks of an input or output schema and of
a command name, which tools and jobs both have.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from toolweave.inputs import check_value, classify_media
from toolweave.model.definitions import (
    MEDIA_TYPES,
    InputParam,
    JobDefinition,
    JobOutput,
    OutputParam,
    ParamType,
    ToolDefinition,
)
from toolweave.registry.problems import Problem, join_path

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
