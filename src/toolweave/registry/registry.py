"""The registry: valid tool and job definitions, kept by ``(id, version)``.

``register`` validates a definition against what is registered and refuses it when it has problems;
``load`` reads files and folders, registers tools before jobs and jobs after the jobs they contain.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from pathlib import Path

from toolweave.model.definitions import JobDefinition, ToolDefinition
from toolweave.registry.graph import find_cycles, nested_job_ids, topological_order
from toolweave.registry.loader import Definition, Loaded, load_files
from toolweave.registry.problems import DefinitionError, Problem
from toolweave.registry.validate import validate_job
from toolweave.registry.validate_tool import ServiceCheck, validate_tool

_VERSION_PART = re.compile(r"(\d+)|(\D+)")


@functools.lru_cache(maxsize=4096)
def version_key(version: str) -> tuple[tuple[int, int, str], ...]:
    """Natural order of versions: ``"2" < "10"``, ``"1.2.0" < "1.10.0"``. Remembered: every
    look-up of a definition's latest version (each submit's) orders its versions by it."""
    return tuple((1, int(num), "") if num else (0, 0, text) for num, text in _VERSION_PART.findall(version))


def _ident(defn: Definition) -> tuple[str, str]:
    if isinstance(defn, ToolDefinition):
        return ("tool", defn.tool_id)
    return ("job", defn.job_id)


class Registry:
    """Tool and job definitions by ``(id, version)``; the latest version answers when none is asked."""

    def __init__(self, service_check: ServiceCheck | None = None) -> None:
        """``service_check(tool)`` says what is wrong with the service a tool names (unknown, not
        configured, bad metadata for it) as ``(path, sentence)`` pairs; None checks nothing."""
        self.service_check = service_check
        self._tools: dict[str, dict[str, ToolDefinition]] = {}
        self._jobs: dict[str, dict[str, JobDefinition]] = {}
        self._refused: set[str] = set()

    # --- Catalog (what validation asks) ------------------------------------------------------------

    def get_tool(self, tool_id: str) -> ToolDefinition | None:
        versions = self._tools.get(tool_id)
        if not versions:
            return None
        return versions[max(versions, key=version_key)]

    def get_job(self, job_id: str) -> JobDefinition | None:
        versions = self._jobs.get(job_id)
        if not versions:
            return None
        return versions[max(versions, key=version_key)]

    def command_owner(self, command_name: str) -> tuple[str, str] | None:
        for tool in self.tools():
            if tool.command_name == command_name:
                return ("tool", tool.tool_id)
        for job in self.jobs():
            if job.command_name == command_name:
                return ("job", job.job_id)
        return None

    def refused(self, definition_id: str) -> bool:
        return definition_id in self._refused

    # --- registration ------------------------------------------------------------------------------

    def add_tools(self, defs: Iterable[ToolDefinition]) -> None:
        """Register trusted tools (built-ins, a backend sync); the same ``(id, version)`` is replaced.

        Raises ``DefinitionError`` (and registers none of them) when any has problems of its own.
        """
        tools = list(defs)
        problems: list[Problem] = []
        for tool in tools:
            problems.extend(validate_tool(tool))
        if problems:
            raise DefinitionError(problems)
        for tool in tools:
            self._tools.setdefault(tool.tool_id, {})[tool.version] = tool

    def register(self, defn: Definition, *, file: str | None = None, prefix: str = "") -> list[Problem]:
        """Validate ``defn`` against what is registered; register it when it has no problems.

        Returns the problems (empty when registered). Registering the same ``(id, version)`` again
        with the same content is a no-op; with different content it is refused.
        """
        source = file if file is not None else defn.source
        problems = self._same_version(defn, source, prefix)
        if problems is not None:
            return problems
        if isinstance(defn, ToolDefinition):
            problems = validate_tool(defn, self, file=source, prefix=prefix, services=self.service_check)
        else:
            problems = validate_job(defn, self, file=source, prefix=prefix)
        if problems:
            self._refused.add(_ident(defn)[1])
            return problems
        self._refused.discard(_ident(defn)[1])
        if isinstance(defn, ToolDefinition):
            self._tools.setdefault(defn.tool_id, {})[defn.version] = defn
        else:
            self._jobs.setdefault(defn.job_id, {})[defn.version] = defn
        return []

    def _same_version(self, defn: Definition, source: str | None, prefix: str) -> list[Problem] | None:
        kind, ident = _ident(defn)
        table: dict[str, dict[str, ToolDefinition]] | dict[str, dict[str, JobDefinition]]
        table = self._tools if kind == "tool" else self._jobs
        existing = table.get(ident, {}).get(defn.version)
        if existing is None:
            return None
        if existing.dump() == defn.dump():
            return []
        where = f" from {existing.source}" if existing.source else ""
        field = "toolId" if kind == "tool" else "jobId"
        path = f"{prefix}.{field}" if prefix else field
        return [
            Problem(
                source,
                path,
                f"{kind} {ident!r} version {defn.version!r} is already registered{where} with "
                "different content; change its version",
            )
        ]

    def load(self, paths: Iterable[Path]) -> list[Problem]:
        """Load, validate and register every definition under ``paths``; returns every problem.

        Valid definitions are registered even when others have problems. Tools come first, then
        jobs, each job after the jobs it contains.
        """
        return self.load_entries(paths)[1]

    def load_entries(self, paths: Iterable[Path]) -> tuple[list[Loaded], list[Problem]]:
        """Like ``load``, and also say what was found: every definition read, registered or not.

        ``is_registered(entry.definition)`` tells which were kept.
        """
        result = load_files(paths)
        problems = list(result.problems)
        entries = self._drop_duplicates(result.entries, problems)
        tools = [e for e in entries if isinstance(e.definition, ToolDefinition)]
        jobs = [e for e in entries if isinstance(e.definition, JobDefinition)]
        for entry in tools:
            problems.extend(self.register(entry.definition, file=entry.file, prefix=entry.pointer))
        for entry in self._job_order(jobs, problems):
            problems.extend(self.register(entry.definition, file=entry.file, prefix=entry.pointer))
        return result.entries, problems

    def is_registered(self, defn: Definition) -> bool:
        """Whether this very definition (or one equal to it) is registered under its ``(id, version)``."""
        kind, ident = _ident(defn)
        table: dict[str, dict[str, ToolDefinition]] | dict[str, dict[str, JobDefinition]]
        table = self._tools if kind == "tool" else self._jobs
        existing = table.get(ident, {}).get(defn.version)
        return existing is not None and (existing is defn or existing.dump() == defn.dump())

    @staticmethod
    def _drop_duplicates(entries: list[Loaded], problems: list[Problem]) -> list[Loaded]:
        """Keep the first of entries with the same kind, id and version; report the others."""
        first: dict[tuple[str, str, str], Loaded] = {}
        kept: list[Loaded] = []
        for entry in entries:
            kind, ident = _ident(entry.definition)
            key = (kind, ident, entry.definition.version)
            if key in first:
                other = first[key]
                where = other.file + (other.pointer if other.pointer else "")
                field = "toolId" if kind == "tool" else "jobId"
                path = f"{entry.pointer}.{field}" if entry.pointer else field
                problems.append(
                    Problem(
                        entry.file,
                        path,
                        f"{kind} {ident!r} version {entry.definition.version!r} is defined twice "
                        f"(first in {where})",
                    )
                )
                continue
            first[key] = entry
            kept.append(entry)
        return kept

    def _job_order(self, jobs: list[Loaded], problems: list[Problem]) -> list[Loaded]:
        """Jobs ordered so that a job comes after the jobs of this batch it contains.

        Jobs that contain each other are reported here (their chain named) and left out.
        """
        batch: dict[str, list[Loaded]] = {}
        for entry in jobs:
            assert isinstance(entry.definition, JobDefinition)
            batch.setdefault(entry.definition.job_id, []).append(entry)
        order = list(batch)
        graph: dict[str, list[str]] = {
            jid: [
                n
                for e in entries
                if isinstance(e.definition, JobDefinition)
                for n in nested_job_ids(e.definition)
                if n in batch and n != jid
            ]
            for jid, entries in batch.items()
        }
        in_cycle: set[str] = set()
        for cycle in find_cycles(graph, order):
            chain = " → ".join([*cycle, cycle[0]])
            for jid in cycle:
                in_cycle.add(jid)
                for entry in batch[jid]:
                    problems.append(
                        Problem(
                            entry.file,
                            f"{entry.pointer}.steps" if entry.pointer else "steps",
                            f"job {jid!r} contains itself through nested jobs: {chain}",
                        )
                    )
                self._refused.add(jid)
        out: list[Loaded] = []
        done: set[str] = set()

        def visit(jid: str, depth: int = 0) -> None:
            if jid in done or jid in in_cycle or depth > len(order):
                return
            done.add(jid)
            for nested in graph.get(jid, []):
                visit(nested, depth + 1)
            out.extend(batch[jid])

        for jid in order:
            visit(jid)
        return out

    # --- queries -----------------------------------------------------------------------------------

    def tool(self, tool_id: str, version: str | None = None) -> ToolDefinition:
        versions = self._tools.get(tool_id)
        if not versions:
            raise KeyError(f"no tool {tool_id!r} is registered")
        if version is None:
            return versions[max(versions, key=version_key)]
        if version not in versions:
            known = ", ".join(sorted(versions, key=version_key))
            raise KeyError(f"tool {tool_id!r} has no version {version!r} (registered versions: {known})")
        return versions[version]

    def job(self, job_id: str, version: str | None = None) -> JobDefinition:
        versions = self._jobs.get(job_id)
        if not versions:
            raise KeyError(f"no job {job_id!r} is registered")
        if version is None:
            return versions[max(versions, key=version_key)]
        if version not in versions:
            known = ", ".join(sorted(versions, key=version_key))
            raise KeyError(f"job {job_id!r} has no version {version!r} (registered versions: {known})")
        return versions[version]

    def tools(self) -> list[ToolDefinition]:
        """The latest version of every tool, by id."""
        return [versions[max(versions, key=version_key)] for _, versions in sorted(self._tools.items())]

    def jobs(self) -> list[JobDefinition]:
        """The latest version of every job, by id."""
        return [versions[max(versions, key=version_key)] for _, versions in sorted(self._jobs.items())]

    def versions(self, definition_id: str) -> list[str]:
        """The registered versions of a tool or job, oldest first."""
        versions = self._tools.get(definition_id) or self._jobs.get(definition_id) or {}
        return sorted(versions, key=version_key)

    def find(self, definition_id: str) -> ToolDefinition | JobDefinition:
        """The latest tool or job with this id."""
        found = self.get_tool(definition_id) or self.get_job(definition_id)
        if found is None:
            raise KeyError(f"no tool or job {definition_id!r} is registered")
        return found

    def by_command(self, name: str) -> ToolDefinition | JobDefinition:
        """The tool or job whose command name is ``name`` (a leading ``/`` is ignored)."""
        name = name.lstrip("/").split("@", 1)[0].lower()
        owner = self.command_owner(name)
        if owner is None:
            raise KeyError(f"no tool or job has the command /{name}")
        return self.tool(owner[1]) if owner[0] == "tool" else self.job(owner[1])

    def topological_order(self, job: JobDefinition | str) -> list[str]:
        """The job's step ids, each after the steps it depends on; ties keep declaration order."""
        definition = self.job(job) if isinstance(job, str) else job
        return topological_order(definition.steps)

    def __len__(self) -> int:
        return sum(len(v) for v in self._tools.values()) + sum(len(v) for v in self._jobs.values())


__all__ = ["Registry", "version_key"]
