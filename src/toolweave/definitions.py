"""The definitions an ``App`` knows: its registry, loaded from the definition files and the
jobs registered through the API (kept in the store, so every process knows them), and the look-ups
the front ends make by id and version (``UnknownDefinition``, ``InvalidDefinition``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolweave.engine.submission import tool_job
from toolweave.model.definitions import JobDefinition, ToolDefinition, Visibility
from toolweave.registry import Problem, Registry, load_definitions
from toolweave.settings import Settings
from toolweave.store import definitions as registered_q
from toolweave.store.db import Store

if TYPE_CHECKING:
    from toolweave.services.catalog import ServiceCatalog

log = logging.getLogger("toolweave")


class UnknownDefinition(LookupError):
    """No tool or job has that id."""


class InvalidDefinition(UnknownDefinition):
    """A definition file declares that id, but the definition was refused: ``problems`` say why."""

    def __init__(self, message: str, problems: list[Problem]) -> None:
        super().__init__(message)
        self.problems = problems


KEPT_DEFINITIONS = 512
_TOOL_JOBS: dict[int, tuple[ToolDefinition, JobDefinition]] = {}
"""The one-step job of each tool object submitted lately, by the object's id (the entry holds the
object, so the id is not reused while it is kept)."""


def _retrieved(shared: asyncio.Task[None]) -> None:
    """A shared read's error is its callers' (callers cancelled meanwhile have not read it)."""
    if not shared.cancelled():
        shared.exception()


class Definitions:
    """The ``App``'s definitions (a part of ``App``)."""

    settings: Settings
    store: Store
    registry: Registry
    catalog: ServiceCatalog
    definition_problems: list[Problem]
    _registered_seq: int
    _sync_pending: asyncio.Task[None] | None = None
    definition_reads = 0
    """Reads of the registered jobs made by ``sync_definitions`` (for tests and benchmarks)."""

    def reload_definitions(self) -> list[Problem]:
        from toolweave.services.builtin import builtin_tool_definitions

        registry = Registry(service_check=self.catalog.check_tool)
        registry.add_tools(builtin_tool_definitions(self.settings.test_tools))
        paths = list(self.settings.definitions)
        problems = registry.load(paths) if paths else []
        self.registry = registry
        self.definition_problems = problems
        self._registered_seq = 0
        self._import_registered_files()
        self._apply_registered(self.store.read_sync(registered_q.since, 0))
        return self.definition_problems

    def _import_registered_files(self) -> None:
        """Jobs registered through the API before they lived in the store were files under
        ``$TOOLWEAVE_HOME/registered``: they are brought into the store (once; the same id and
        version again is a no-op)."""
        folder = self.settings.home / "registered"
        if not folder.is_dir():
            return
        loaded, problems = load_definitions([folder])
        self.definition_problems.extend(problems)
        for defn in loaded:
            if isinstance(defn, JobDefinition):
                self.store.run_sync(registered_q.register, defn.job_id, defn.version, defn.dump(), time.time())

    def _apply_registered(self, rows: list[Any]) -> None:
        """Register jobs read from the store, in the order they were registered."""
        for row in rows:
            self._registered_seq = max(self._registered_seq, int(row.seq))
            try:
                defn = JobDefinition.model_validate(row.body)
            except ValueError as exc:
                self.definition_problems.append(Problem("store", f"registered job {row.job_id}", str(exc)))
                continue
            problems = self.registry.register(defn, file="store")
            if problems:
                log.warning("registered job %s version %s is refused now: %s", row.job_id, row.version,
                            "; ".join(str(p) for p in problems))
                self.definition_problems.extend(problems)

    async def sync_definitions(self) -> None:
        """Take in the jobs other processes registered since this one last looked (one indexed
        read; the front ends call it before they answer with definitions).

        The callers of one turn of the event loop share one read, which begins after all of them
        called (a server's concurrent submits each made a read transaction of their own): what
        was registered before a caller called is known when its call returns, as when each read
        alone."""
        loop = asyncio.get_running_loop()
        shared = self._sync_pending
        if shared is None or shared.get_loop() is not loop or shared.done():
            shared = self._sync_pending = loop.create_task(self._sync_shared())
            shared.add_done_callback(_retrieved)
        await asyncio.shield(shared)

    async def _sync_shared(self) -> None:
        await asyncio.sleep(0)  # the rest of this turn's callers join
        if self._sync_pending is asyncio.current_task():
            self._sync_pending = None  # from here on a caller waits for a read that begins later
        self.definition_reads += 1
        rows = await self.store.read(registered_q.since, self._registered_seq)
        if rows:
            self._apply_registered(rows)

    def check_definition(self, raw: Any) -> tuple[JobDefinition | None, list[Problem]]:
        """Validate a posted job definition (a mapping) against the registry without registering it."""
        from toolweave.registry.loader import _build
        from toolweave.registry.validate import validate_job

        problems: list[Problem] = []
        if isinstance(raw, dict) and ("toolId" in raw or "tool_id" in raw):
            return None, [Problem(None, "toolId", "only jobs can be registered here; tools come from definition files")]
        defn = _build(raw, "", "", problems)
        if defn is None or problems:
            return None, problems
        assert isinstance(defn, JobDefinition)
        defn._source = None
        existing = self.registry.get_job(defn.job_id)
        if existing is not None and existing.version == defn.version and existing.dump() != defn.dump():
            return defn, [Problem(None, "version", f"job {defn.job_id!r} version {defn.version!r} is already "
                                  "registered with different content; change its version")]
        return defn, validate_job(defn, self.registry, file="")

    async def register_job(self, raw: Any) -> tuple[JobDefinition | None, list[Problem]]:
        """Validate a job definition, keep it in the store (every process then knows it) and
        register it here."""
        await self.sync_definitions()
        # parsing its conditions and templates is bounded (a CPU budget each) and runs off the loop
        defn, problems = await asyncio.to_thread(self.check_definition, raw)
        if defn is None or problems:
            return defn, problems
        row = await self.store.tx(registered_q.register, defn.job_id, defn.version, defn.dump(), time.time())
        if row.body != defn.dump():  # another process registered this version first, differently
            return defn, [Problem(None, "version", f"job {defn.job_id!r} version {defn.version!r} is already "
                                  "registered with different content; change its version")]
        await self.sync_definitions()
        return defn, []

    def list_services(self) -> list[dict[str, Any]]:
        """Every service known here: name, kind, where it comes from, whether it is configured (and
        why not), and how many registered tools name it."""
        counts: dict[str, int] = {}
        for tool in self.registry.tools():
            counts[tool.service] = counts.get(tool.service, 0) + 1
        return [dict(row, tools=counts.get(row["name"], 0)) for row in self.catalog.rows()]

    def list_tools(self, *, include_hidden: bool = False) -> list[ToolDefinition]:
        tools = self.registry.tools()
        return [t for t in tools if include_hidden or t.visibility is Visibility.PUBLIC]

    def list_jobs(self, *, include_hidden: bool = False) -> list[JobDefinition]:
        jobs = self.registry.jobs()
        return [j for j in jobs if include_hidden or j.visibility is Visibility.PUBLIC]

    def definition(self, target_id: str, version: str | None = None) -> ToolDefinition | JobDefinition:
        """The tool or job with this id: the given version, or the latest. ``UnknownDefinition``
        names the registered versions when the id is known but the version is not."""
        if self.registry.get_job(target_id) is None and self.registry.get_tool(target_id) is None:
            self._refused(target_id)
            raise UnknownDefinition(f"no tool or job named {target_id!r}{self._did_you_mean(target_id)}")
        if version is None:
            return self.registry.find(target_id)
        try:
            found: ToolDefinition | JobDefinition = (
                self.registry.job(target_id, version) if self.registry.get_job(target_id) else self.registry.tool(target_id, version)
            )
        except KeyError as exc:
            raise UnknownDefinition(str(exc.args[0])) from None
        return found

    def _did_you_mean(self, target_id: str) -> str:
        import difflib

        known = [t.tool_id for t in self.registry.tools()] + [j.job_id for j in self.registry.jobs()]
        close = difflib.get_close_matches(target_id, known, n=1, cutoff=0.75)
        return f"; did you mean {close[0]!r}?" if close else ""

    def _refused(self, target_id: str) -> None:
        """Raise ``InvalidDefinition`` when a loaded file declares ``target_id`` but was refused."""
        from toolweave.registry.loader import declared_ids

        files = sorted({p.file for p in self.definition_problems if p.file})
        for file in files:
            if target_id in declared_ids(Path(file)):
                problems = [p for p in self.definition_problems if p.file == file]
                raise InvalidDefinition(
                    f"{target_id!r} is defined in {file} but cannot be used: "
                    f"{len(problems)} problem{'s' if len(problems) != 1 else ''} (see `toolweave validate {file}`)",
                    problems,
                )

    def versions(self, target_id: str) -> list[ToolDefinition | JobDefinition]:
        """Every registered version of a tool or job, oldest first (``UnknownDefinition`` if none)."""
        found = [self.definition(target_id, v) for v in self.registry.versions(target_id)]
        if not found:
            raise UnknownDefinition(f"no tool or job named {target_id!r}")
        return found

    def job_for(self, target_id: str, version: str | None = None) -> JobDefinition:
        definition = self.definition(target_id, version)
        if not isinstance(definition, ToolDefinition):
            return definition
        # a tool's one-step job, made once per registered tool object: the engine keeps a
        # definition's content hash by the object, so each submit of a tool need not dump and
        # hash it again
        kept = _TOOL_JOBS.get(id(definition))
        if kept is None or kept[0] is not definition:
            if len(_TOOL_JOBS) >= KEPT_DEFINITIONS:
                _TOOL_JOBS.pop(next(iter(_TOOL_JOBS)))
            kept = (definition, tool_job(definition))
            _TOOL_JOBS[id(definition)] = kept
        return kept[1]
