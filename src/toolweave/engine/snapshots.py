"""The engine's state and its caches of definition snapshots: each distinct tool and job body is
stored once, by content hash, and read back once per process; a run's inputs are kept while it is in
progress.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from toolweave.accounting.gate import Gate
from toolweave.engine import plan
from toolweave.model.definitions import JobDefinition, ToolDefinition
from toolweave.store import runs as runs_q
from toolweave.store.db import Tx

INPUTS_KEPT = 4096
CONTENTS_KEPT = 1024


class Snapshots:
    """The engine's settings and its caches of definition snapshots (the base of ``Engine``)."""

    def __init__(self, *, rates: Mapping[str, Decimal], secret: bytes, lease_seconds: float = 30.0) -> None:
        self.rates = dict(rates)
        self.secret = secret
        self.lease_seconds = lease_seconds
        self._jobs: dict[str, tuple[JobDefinition, tuple[str, ...]]] = {}
        self._tools: dict[str, ToolDefinition] = {}
        self._stored: set[str] = set()
        """Snapshots known to be committed: a submit skips inserting these. A snapshot enters it only
        after the transaction that inserted it committed, so a concurrent submit never relies on
        a row another transaction may still roll back (or has not yet made visible)."""
        self._contents: dict[int, tuple[ToolDefinition | JobDefinition, str, dict[str, Any]]] = {}
        """Content hash and body of definitions submitted lately, by object (``_content``)."""
        self._run_inputs: dict[str, dict[str, Any]] = {}
        """Inputs of runs in progress, by run id (at most ``INPUTS_KEPT``, the oldest dropped first)."""
        self.notification_rules: list[Any] = []
        self.approver_rules: list[Any] = []
        """Callables ``(tx, run_row, approvers) -> list[(channel, target)]``: who among the approvers an
        ask step names hears that a question waits for them (``engine.ask_steps``)."""
        """Callables ``(run_row, status) -> list[(channel, target)]`` deciding who hears of a run's end."""
        self.gate = Gate()
        """What a submit decides in its transaction: limits, credit holds, the fair place (``accounting``)."""

    def _job(self, tx: Tx, sha: str) -> tuple[JobDefinition, tuple[str, ...]]:
        cached = self._jobs.get(sha)
        if cached is None:
            job = JobDefinition.model_validate(runs_q.get_snapshot(tx, sha))
            cached = (job, tuple(plan.topological_order(job)))
            self._jobs[sha] = cached
        return cached

    def _tool(self, tx: Tx, sha: str) -> ToolDefinition:
        tool = self._tools.get(sha)
        if tool is None:
            tool = ToolDefinition.model_validate(runs_q.get_snapshot(tx, sha))
            self._tools[sha] = tool
        return tool

    def _snapshot(self, tx: Tx, kind: str, definition: ToolDefinition | JobDefinition, now: float) -> str:
        sha, body = self._content(definition)
        if sha not in self._stored:
            def_id = definition.tool_id if isinstance(definition, ToolDefinition) else definition.job_id
            runs_q.put_snapshot(tx, sha, kind, def_id, definition.version, body, now)
            tx.after_commit(lambda: self._stored.add(sha))
            if isinstance(definition, ToolDefinition):
                self._tools.setdefault(sha, definition)
            elif sha not in self._jobs:
                self._jobs[sha] = (definition, tuple(plan.topological_order(definition)))
        return sha

    def _content(self, definition: ToolDefinition | JobDefinition) -> tuple[str, dict[str, Any]]:
        """(content hash, body) of a definition, computed once per definition object: a registered
        definition is one object, and dumping and hashing it for every submit cost a tenth of a
        submit's CPU. Kept by the object's id; the entry holds the object, so the id is not reused
        while it is kept. Definitions are not changed in place (a new version is a new object)."""
        kept = self._contents.get(id(definition))
        if kept is not None and kept[0] is definition:
            return kept[1], kept[2]
        body = definition.dump()
        sha = runs_q.snapshot_sha(body)
        if len(self._contents) >= CONTENTS_KEPT:
            self._contents.pop(next(iter(self._contents)))
        self._contents[id(definition)] = (definition, sha, body)
        return sha, body

    def _inputs(self, tx: Tx, run: Any) -> dict[str, Any]:
        """A run's inputs: from its row when it was read whole, else read once and kept (they never
        change, and a map step's list may be long: each transition would decode it again)."""
        if "job_inputs" in run:
            return dict(run["job_inputs"] or {})
        found = self._run_inputs.get(run["run_id"])
        if found is None:
            found = runs_q.inputs(tx, run["run_id"])
            self._keep_inputs(run["run_id"], found)
        return found

    def _keep_inputs(self, run_id: str, inputs: dict[str, Any]) -> None:
        if len(self._run_inputs) >= INPUTS_KEPT:
            self._run_inputs.pop(next(iter(self._run_inputs)))
        self._run_inputs[run_id] = inputs
