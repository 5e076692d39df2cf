"""Load tool and job definitions from files and folders of ``.yaml``, ``.yml`` and ``.json``.

- A folder is searched recursively (hidden files and folders are skipped), in name order.
- A file holds one definition (a mapping) or a list of them.
- A mapping with ``toolId`` is a tool, one with ``jobId`` a job.
- JSON may carry ``//`` and ``/* */`` comments and trailing commas (as the seed's example does).
- YAML aliases may not expand the document past ``MAX_EXPANDED_NODES`` values, nor refer to
  themselves: a few hundred bytes of nested aliases (a "billion laughs") would otherwise become
  gigabytes once validated, printed or stored.

Problems (unreadable files, syntax errors, fields that do not fit the models) are collected, each with
its file and a JSON path; cross-references are checked later by ``toolweave.registry.validate``.
"""

from __future__ import annotations

import difflib
import functools
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from toolweave.files import read_regular_file
from toolweave.model.definitions import (
    CostingModel,
    ErrorHandling,
    InputMapping,
    InputParam,
    JobDefinition,
    JobOutput,
    OutputParam,
    PlatformHints,
    Step,
    ToolDefinition,
)
from toolweave.registry.problems import Problem, join_path

if TYPE_CHECKING:
    import yaml

SUFFIXES = (".yaml", ".yml", ".json")
MAX_FILE_BYTES = 32 * 1024 * 1024
"""The largest definition file read (a tool imported from a big workflow is a few hundred KB): a
file past it is refused unread rather than filling memory."""
MAX_EXPANDED_NODES = 100_000
"""The most values (scalars, lists, mappings, with every alias counted as the copy it stands for)
one YAML document may expand to; a large workflow definition has a few thousand."""
Definition = ToolDefinition | JobDefinition

_MODELS: tuple[type[BaseModel], ...] = (
    ToolDefinition,
    JobDefinition,
    Step,
    InputMapping,
    InputParam,
    OutputParam,
    JobOutput,
    ErrorHandling,
    CostingModel,
    PlatformHints,
)
_KNOWN_FIELDS = sorted({f.alias or n for m in _MODELS for n, f in m.model_fields.items()})
_HOME: dict[str, str] = {"category": "platformHints", "primaryInput": "platformHints", "handlerType": "platformHints"}
"""Fields people put at the top of a tool that belong in a section of it."""


@dataclass
class Loaded:
    """One definition and where it came from (``pointer`` is ``[i]`` inside a list file, else empty)."""

    definition: Definition
    file: str
    pointer: str = ""


@dataclass
class LoadResult:
    entries: list[Loaded] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def definitions(self) -> list[Definition]:
        return [e.definition for e in self.entries]


def strip_json_comments(text: str) -> str:
    """Remove ``//`` and ``/* */`` comments and trailing commas outside strings.

    Comments become spaces (newlines are kept) so that line and column numbers stay right.
    """
    out: list[str] = []
    i = 0
    n = len(text)
    in_string = False
    pending_comma: int | None = None  # index in ``out`` of a comma that may be trailing
    while i < n:
        ch = text[i]
        if in_string:
            out.append(ch)
            if ch == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 2
                continue
            if ch == '"':
                in_string = False
            i += 1
            continue
        if ch == "/" and i + 1 < n and text[i + 1] == "/":
            end = text.find("\n", i)
            end = n if end == -1 else end
            out.append(" " * (end - i))
            i = end
            continue
        if ch == "/" and i + 1 < n and text[i + 1] == "*":
            end = text.find("*/", i + 2)
            end = n if end == -1 else end + 2
            out.append("".join(c if c == "\n" else " " for c in text[i:end]))
            i = end
            continue
        if ch in "]}" and pending_comma is not None:
            out[pending_comma] = " "
            pending_comma = None
        elif ch == ",":
            pending_comma = len(out)
        elif not ch.isspace():
            pending_comma = None
        if ch == '"':
            in_string = True
        out.append(ch)
        i += 1
    return "".join(out)


class _DuplicateKeys(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKeys(key)
        out[key] = value
    return out


class _AliasBomb(ValueError):
    pass


def _check_expansion(root: yaml.Node) -> None:
    import yaml

    """Count the values ``root`` stands for with every alias expanded (each distinct node once,
    without building anything); raise ``_AliasBomb`` past ``MAX_EXPANDED_NODES`` or on an alias
    inside its own anchor."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        if children_done:
            open_nodes.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in children)
            if sizes[key] > MAX_EXPANDED_NODES:
                raise _AliasBomb(
                    f"its aliases expand to more than {MAX_EXPANDED_NODES:,} values (an alias bomb?); "
                    "write the repeated parts out, or use fewer levels of aliases"
                )
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            line = node.start_mark.line + 1 if node.start_mark is not None else "?"
            raise _AliasBomb(f"an alias refers to the anchor that contains it (line {line})")
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in children if id(child) not in sizes)


@functools.cache
def _bounded_loader() -> type[yaml.SafeLoader]:
    """``yaml.safe_load``'s loader with the alias expansion checked before anything is built (made
    when a YAML file is first read: a command that reads none does not import PyYAML)."""
    import yaml

    class BoundedLoader(yaml.SafeLoader):
        def construct_document(self, node: yaml.Node) -> Any:
            _check_expansion(node)
            return super().construct_document(node)

    return BoundedLoader


def parse_text(text: str, suffix: str) -> Any:
    """Parse a file's text by its suffix; raise ``ValueError`` with a plain sentence."""
    try:
        return _parse(text, suffix)
    except RecursionError:
        raise ValueError("is nested too deeply to read") from None


def _parse(text: str, suffix: str) -> Any:
    if suffix == ".json":
        try:
            return json.loads(strip_json_comments(text), object_pairs_hook=_no_duplicates)
        except _DuplicateKeys as exc:
            raise ValueError(f"the key {exc.args[0]!r} appears twice in one object") from None
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
            ) from None
    import yaml

    try:
        return yaml.load(text, Loader=_bounded_loader())  # a SafeLoader, with the expansion bounded
    except _AliasBomb as exc:
        raise ValueError(f"cannot be read: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or "syntax error"
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ValueError(f"is not valid YAML: {problem}{where}") from None


def iter_files(paths: Iterable[Path]) -> Iterator[tuple[Path, Problem | None]]:
    """Each definition file under ``paths`` (or a problem for a path that cannot be used)."""
    for path in paths:
        path = Path(path)
        if path.is_dir():
            found = False
            for candidate in sorted(path.rglob("*")):
                rel = candidate.relative_to(path)
                if any(part.startswith(".") for part in rel.parts):
                    continue
                if candidate.is_file() and candidate.suffix.lower() in SUFFIXES:
                    found = True
                    yield candidate, None
            if not found:
                yield path, Problem(str(path), "", "the folder holds no .yaml, .yml or .json files")
        elif path.is_file():
            if path.suffix.lower() not in SUFFIXES:
                yield path, Problem(str(path), "", "is not a .yaml, .yml or .json file")
            else:
                yield path, None
        elif path.exists():
            yield path, Problem(str(path), "", "is not a regular file (a device, pipe or socket); it is not read")
        else:
            yield path, Problem(str(path), "", "does not exist")


def read_definition_text(path: Path) -> str:
    """A definition file's text (``read_regular_file`` with ``MAX_FILE_BYTES``);
    ``UnicodeDecodeError`` for one that is not UTF-8."""
    return read_regular_file(path, MAX_FILE_BYTES).decode("utf-8")


def format_loc(loc: tuple[int | str, ...], raw: Any) -> str:
    """A pydantic error location as a JSON path, naming schema entries written as mappings by key."""
    out = ""
    node = raw
    for part in loc:
        if isinstance(part, int):
            if isinstance(node, dict):  # a named list written as a mapping
                keys = list(node.keys())
                key = keys[part] if 0 <= part < len(keys) else str(part)
                out += f".{key}" if out else str(key)
                node = node.get(key)
                continue
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and 0 <= part < len(node) else None
        else:
            out += f".{part}" if out else str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return out


def _message(error: dict[str, Any]) -> str:
    kind = error.get("type", "")
    loc = error.get("loc", ())
    name = str(loc[-1]) if loc else ""
    if kind == "missing":
        return f"{name} is required" if name else "a required field is missing"
    if kind == "extra_forbidden":
        if name in _HOME and len(loc) == 1:
            return f"{name!r} is not a known field here; it belongs under {_HOME[name]}"
        close = difflib.get_close_matches(name, [f for f in _KNOWN_FIELDS if f != name], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"{name!r} is not a known field{hint}"
    msg = str(error.get("msg", "is invalid"))
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    first, _, rest = msg.partition(" ")
    if first in ("Input", "List", "String", "Value", "Dictionary") and rest.startswith("should "):
        msg = rest
        if "input" in error and not isinstance(error["input"], dict | list):
            msg += f" (got {error['input']!r})"
    return msg


def _build(raw: Any, file: str, pointer: str, problems: list[Problem]) -> Definition | None:
    if not isinstance(raw, dict):
        problems.append(Problem(file, pointer, "a definition must be a mapping of fields"))
        return None
    is_tool = "toolId" in raw or "tool_id" in raw
    is_job = "jobId" in raw or "job_id" in raw
    if is_tool and is_job:
        problems.append(Problem(file, pointer, "a definition has either a toolId or a jobId, not both"))
        return None
    if not (is_tool or is_job):
        problems.append(
            Problem(file, pointer, "a definition needs a toolId (for a tool) or a jobId (for a job)")
        )
        return None
    model: type[ToolDefinition] | type[JobDefinition] = ToolDefinition if is_tool else JobDefinition
    try:
        definition = model.model_validate(raw)
    except ValidationError as exc:
        for error in exc.errors():
            loc = tuple(error.get("loc", ()))
            problems.append(Problem(file, join_path(pointer, format_loc(loc, raw)), _message(dict(error))))
        return None
    definition._source = file
    return definition


def declared_ids(path: Path) -> set[str]:
    """The ``toolId``/``jobId`` values a definition file declares, however invalid the rest of it is
    (empty when it cannot be read or parsed)."""
    try:
        data = parse_text(read_definition_text(path), path.suffix.lower())
    except (OSError, UnicodeDecodeError, ValueError):
        return set()
    items = data if isinstance(data, list) else [data]
    found: set[str] = set()
    for item in items:
        if isinstance(item, dict):
            for key in ("toolId", "tool_id", "jobId", "job_id"):
                if isinstance(item.get(key), str):
                    found.add(item[key])
    return found


def load_file(path: Path, result: LoadResult) -> None:
    file = str(path)
    try:
        text = read_definition_text(path)
    except UnicodeDecodeError as exc:
        result.problems.append(Problem(file, "", f"is not UTF-8 text (byte {exc.start})"))
        return
    except OSError as exc:
        result.problems.append(Problem(file, "", f"cannot be read: {exc.strerror or exc}"))
        return
    try:
        data = parse_text(text, path.suffix.lower())
    except ValueError as exc:
        result.problems.append(Problem(file, "", str(exc)))
        return
    if data is None:
        result.problems.append(Problem(file, "", "the file holds no definitions"))
        return
    items: list[tuple[str, Any]]
    if isinstance(data, list):
        if not data:
            result.problems.append(Problem(file, "", "the file holds an empty list"))
        items = [(f"[{i}]", item) for i, item in enumerate(data)]
    else:
        items = [("", data)]
    for pointer, raw in items:
        definition = _build(raw, file, pointer, result.problems)
        if definition is not None:
            result.entries.append(Loaded(definition, file, pointer))


def load_files(paths: Iterable[Path]) -> LoadResult:
    """Load every definition under ``paths``, keeping where each came from."""
    result = LoadResult()
    for path, problem in iter_files(paths):
        if problem is not None:
            result.problems.append(problem)
            continue
        load_file(path, result)
    return result


def load_definitions(paths: Iterable[Path]) -> tuple[list[Definition], list[Problem]]:
    """Load definitions from files and folders; returns the definitions and every problem found.

    Only syntax and field problems are found here; ``Registry.load`` also checks cross-references.
    """
    result = load_files(paths)
    return result.definitions, result.problems


__all__ = [
    "MAX_EXPANDED_NODES",
    "MAX_FILE_BYTES",
    "SUFFIXES",
    "Definition",
    "LoadResult",
    "Loaded",
    "format_loc",
    "iter_files",
    "load_definitions",
    "load_file",
    "load_files",
    "parse_text",
    "read_definition_text",
    "strip_json_comments",
]
