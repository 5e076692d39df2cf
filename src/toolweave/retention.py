"""Retention: remove finished runs older than a cutoff, and the artifacts nothing refers to any more.

``prune`` works in bounded batches, each its own short transaction, so workers go on meanwhile:

1. runs — the oldest top-level finished runs, a batch of whole trees (a run and its nested runs)
   at a time, each tree only when every run of it has ended and nothing works on it any more
   (``store.prune``); its events, steps, items, generations, tasks, notifications and the cache
   entries it made go with it;
2. expired cache entries;
3. artifacts — an account's records of artifacts older than the cutoff that name no remaining run
   and that nothing of the account mentions (``store.prune.unreferenced``); a file no account
   holds any more is queued for removal in the same transaction;
4. files — the queued ones, each renamed aside, checked against the store again, then dropped or
   put back (``ArtifactStore.set_aside``); an interrupted prune leaves them queued, and the next
   one finishes them first.

A dry run reads the same batches and writes nothing: it counts what would go.

Periodic pruning (``retention_days``) is run by workers, one at a time and at most once per
``prune_every_minutes`` between them (``store.prune.take_lease``).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from toolweave.artifacts import ArtifactStore
from toolweave.store import cache as cache_q
from toolweave.store import prune as prune_q
from toolweave.store.db import Row, Store, Tx

log = logging.getLogger("toolweave.retention")
T = TypeVar("T")

CLOCK_MARGIN_SECONDS = 300.0
"""How far apart the clocks of the machines sharing a store may be: the check under locks looks at
what changed since a little before the read that found an artifact unmentioned."""

FILE_GRACE_SECONDS = 900.0
"""A file written (or found again by ``put_bytes``) this long before it was queued for removal, or
since, stays for a later prune: bytes a worker or an upload has just stored are recorded a moment
later, and the record may be on its way."""

_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?\s*$")
_UNIT = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}


def parse_age(text: str) -> float:
    """Seconds in an age like ``30d``, ``12h``, ``90m``, ``45s``, ``2w`` (a bare number is days).
    ValueError with a sentence naming the problem."""
    match = _AGE.match(text or "")
    if not match:
        raise ValueError(f"{text!r} is not an age: write a number and a unit, e.g. 30d, 12h, 90m, 45s or 2w")
    return float(match.group(1)) * _UNIT[match.group(2) or "d"]


@dataclass
class PruneReport:
    dry_run: bool
    cutoff: float
    rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(prune_q.RUN_TABLES, 0))
    """Rows of each table that went (or would go) with the pruned runs."""
    runs_kept: int = 0
    """Old finished runs kept because a run of their tree has not ended or is still worked on."""
    expired_cache: int = 0
    artifact_records: int = 0
    """Accounts' records of artifacts that went (an account's upload, grant or output)."""
    files: int = 0
    bytes: int = 0
    """Files (and their bytes) removed from the artifact folder (a dry run: that would be)."""
    files_deferred: int = 0
    """Files no record holds any more but used too recently to remove yet (a later prune will)."""
    temporary_files: int = 0
    """Temporary files a crash left in the artifact folder (untouched for an hour), removed."""
    batches: int = 0

    def as_dict(self) -> dict[str, Any]:
        """camelCase, the cutoff in ISO 8601 (what ``toolweave prune --json`` prints)."""
        from datetime import UTC, datetime

        cutoff = datetime.fromtimestamp(self.cutoff, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        return {
            "dryRun": self.dry_run, "cutoff": cutoff, "runs": self.rows["runs"],
            "rows": {_CAMEL.get(k, k): v for k, v in self.rows.items()},
            "runsKept": self.runs_kept, "expiredCacheEntries": self.expired_cache,
            "artifactRecords": self.artifact_records, "files": self.files, "bytes": self.bytes,
            "filesDeferred": self.files_deferred, "temporaryFiles": self.temporary_files,
            "batches": self.batches,
        }


_CAMEL = {"step_runs": "stepRuns", "step_items": "stepItems", "step_cache": "cacheEntries"}


def _add(into: dict[str, int], counts: dict[str, int]) -> None:
    for key, value in counts.items():
        into[key] = into.get(key, 0) + value


class Pruner:
    """One prune over a store and its artifact folder."""

    def __init__(
        self, store: Store, artifacts: ArtifactStore, *, batch_runs: int = 100, batch_artifacts: int = 200,
        clock: Callable[[], float] = time.time, between_batches: Callable[[], Any] | None = None,
        executor: Executor | None = None,
    ) -> None:
        """``between_batches``: awaited after each batch (a worker extends its lease there).
        ``executor``: where the transactions and file operations run (a worker passes a thread of
        its own, so that a long search never holds its event loop, on which SQLite transactions
        otherwise run); None runs them as the store runs any."""
        self.executor = executor
        self.store = store
        self.artifacts = artifacts
        self.batch_runs = max(1, batch_runs)
        self.batch_artifacts = max(1, batch_artifacts)
        self.chunk_artifacts = max(self.batch_artifacts, 10 * self.batch_artifacts)
        """Old records whose accounts' rows are searched in one pass (the writes go by ``batch_artifacts``)."""
        self.clock = clock
        self.between_batches = between_batches

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        if self.executor is None:
            return await self.store.read(fn, *args)
        return await asyncio.get_running_loop().run_in_executor(self.executor, self.store.read_sync, fn, *args)

    async def _tx(self, fn: Callable[..., T], *args: Any) -> T:
        if self.executor is None:
            return await self.store.tx(fn, *args)
        return await asyncio.get_running_loop().run_in_executor(self.executor, self.store.run_sync, fn, *args)

    async def _io(self, fn: Callable[..., T], *args: Any) -> T:
        if self.executor is None:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def prune(self, older_than: float, *, dry_run: bool = False) -> PruneReport:
        now = self.clock()
        report = PruneReport(dry_run=dry_run, cutoff=now - older_than)
        if not dry_run:
            await self._remove_queued_files(report)  # what an interrupted prune left
            report.temporary_files, _ = await self._io(self.artifacts.remove_stale_temporary)  # a crash's
        gone = await self._runs(report)
        if not dry_run:
            while count := await self._tx(cache_q.delete_expired, now, self.batch_artifacts):
                report.expired_cache += count
        await self._artifacts(report, gone, now)
        return report

    async def _pause(self, report: PruneReport) -> None:
        report.batches += 1
        if self.between_batches is not None:
            await self.between_batches()

    # --- runs ----------------------------------------------------------------------------------

    async def _runs(self, report: PruneReport) -> set[str]:
        """Prune (or count) the old trees of runs; the runs a dry run counts as gone."""
        gone: set[str] = set()
        after: tuple[float, str] | None = None
        while True:
            roots = await self._read(prune_q.old_roots, report.cutoff, after, self.batch_runs)
            if not roots:
                return gone
            after = (float(roots[-1].finished_at), str(roots[-1].run_id))
            ids = [str(r.run_id) for r in roots]
            if report.dry_run:
                counts, kept, runs = await self._read(self._count_tx, ids, report.cutoff)
                gone.update(runs)
            else:
                counts, kept = await self._tx(self._delete_tx, ids, report.cutoff)
            _add(report.rows, counts)
            report.runs_kept += kept
            await self._pause(report)

    @staticmethod
    def _choose(tx: Tx, roots: list[str], cutoff: float, lock: bool) -> tuple[list[str], int]:
        """The runs of the trees that may go, and how many old runs stay (their tree is busy)."""
        found = prune_q.trees(tx, roots, lock=lock)
        every = [r.run_id for tree in found.values() for r in tree]
        busy = prune_q.busy(tx, every)
        chosen: list[str] = []
        kept = 0
        for tree in found.values():
            if prune_q.prunable(tree, cutoff, busy):
                chosen += [str(r.run_id) for r in tree]
            elif tree[0].finished_at is not None and tree[0].finished_at < cutoff:
                kept += 1
        return chosen, kept

    @classmethod
    def _delete_tx(cls, tx: Tx, roots: list[str], cutoff: float) -> tuple[dict[str, int], int]:
        chosen, kept = cls._choose(tx, roots, cutoff, lock=True)
        return prune_q.delete_runs(tx, chosen), kept

    @classmethod
    def _count_tx(cls, tx: Tx, roots: list[str], cutoff: float) -> tuple[dict[str, int], int, list[str]]:
        chosen, kept = cls._choose(tx, roots, cutoff, lock=False)
        return prune_q.count_rows(tx, chosen), kept, chosen

    # --- artifacts -----------------------------------------------------------------------------

    async def _artifacts(self, report: PruneReport, gone: set[str], now: float) -> None:
        after: tuple[float, str, str] | None = None
        going: dict[tuple[str, str], int] = {}
        """A dry run's records that would go (with their sizes)."""
        while True:
            # a chunk of old records; their accounts' rows are searched once for the whole chunk
            # (in a read transaction: no lock), then the records go in short write transactions,
            # each checking again, under the records' locks, only what may have changed since
            rows = await self._read(prune_q.old_artifacts, report.cutoff, after, self.chunk_artifacts)
            if not rows:
                break
            last = rows[-1]
            after = (float(last.created_at), str(last.sha256), str(last.account_id))
            since = self.clock() - CLOCK_MARGIN_SECONDS
            found: list[Row] = await self._read(prune_q.unreferenced, rows, self.clock(), gone)
            if report.dry_run:
                going.update({(row.sha256, row.account_id): int(row.size) for row in found})
                await self._pause(report)
                continue
            for start in range(0, len(found), self.batch_artifacts):
                keys = [(str(r.sha256), str(r.account_id)) for r in found[start:start + self.batch_artifacts]]
                records, _queued = await self._tx(self._delete_artifacts_tx, keys, report.cutoff, self.clock(), since)
                report.artifact_records += records
                await self._pause(report)
        if not report.dry_run:
            await self._remove_queued_files(report)
            return
        report.artifact_records = len(going)
        sizes = {sha: size for (sha, _), size in going.items()}
        others: list[Row] = []
        ordered = sorted(sizes)
        for start in range(0, len(ordered), self.batch_artifacts):
            others += await self._read(prune_q.holders, ordered[start:start + self.batch_artifacts])
        kept = {r.sha256 for r in others if (r.sha256, r.account_id) not in going}
        files = set(sizes) - kept
        recent = {sha for sha in files if (self.artifacts.mtime(sha) or 0.0) > now - FILE_GRACE_SECONDS}
        report.files_deferred = len(recent)
        report.files = len(files - recent)
        report.bytes = sum(sizes[sha] for sha in files - recent)

    @staticmethod
    def _delete_artifacts_tx(
        tx: Tx, keys: list[tuple[str, str]], cutoff: float, now: float, since: float
    ) -> tuple[int, int]:
        """Delete the records among ``keys`` (found unmentioned as of ``since``) that may still
        go, checked again under their locks, and queue the files no account holds any more; how
        many records and files."""
        locked = prune_q.lock_artifacts(tx, keys, cutoff)
        going: list[Row] = prune_q.unreferenced(tx, locked, now, since=since)
        prune_q.delete_artifacts(tx, going)
        shas = sorted({str(r.sha256) for r in going})
        still_held = prune_q.held(tx, shas)
        files = [sha for sha in shas if sha not in still_held]
        prune_q.queue_files(tx, files, now)
        return len(going), len(files)

    # --- files ---------------------------------------------------------------------------------

    async def _remove_queued_files(self, report: PruneReport) -> None:
        """Remove the queued files (each once in this prune), a page at a time: each set aside,
        then the page checked against the store in one read, then each dropped or put back; a file
        held again is unqueued and stays, one used too recently to tell stays queued for a later
        prune (``FILE_GRACE_SECONDS``)."""
        after = ""
        while queued := await self._read(prune_q.queued_files, after, self.batch_artifacts):
            after = queued[-1][0]
            aside: dict[str, float] = {}
            for sha, _queued_at in queued:
                try:
                    mtime = await self._io(self.artifacts.set_aside, sha)
                except KeyError:  # not a hash: nothing of ours
                    mtime = None
                if mtime is not None:
                    aside[sha] = mtime
            held = await self._read(prune_q.held, sorted(aside)) if aside else set()
            done: list[str] = []
            for sha, queued_at in queued:
                mtime = aside.get(sha)
                if mtime is None:  # gone already
                    done.append(sha)
                elif sha in held:  # stored or granted again meanwhile
                    await self._io(self.artifacts.restore, sha)
                    done.append(sha)
                elif mtime > queued_at - FILE_GRACE_SECONDS:  # its record may be on its way
                    await self._io(self.artifacts.restore, sha)
                    report.files_deferred += 1
                else:
                    report.bytes += await self._io(self.artifacts.drop, sha)
                    report.files += 1
                    done.append(sha)
            await self._tx(prune_q.unqueue_files, done)


class PeriodicPrune:
    """What a worker runs now and then when ``retention_days`` is set: a prune, on one worker at a
    time and at most once per ``every_seconds`` between all of them (a lease in ``kv`` taken for
    that long, and extended between batches while the prune goes on)."""

    def __init__(self, store: Store, artifacts: ArtifactStore, *, older_than: float, every_seconds: float) -> None:
        self.store = store
        self.artifacts = artifacts
        self.older_than = older_than
        self.every_seconds = max(1.0, every_seconds)
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="toolweave-prune")
        """One thread (and so one database connection) for this worker's prunes."""

    async def __call__(self, owner: str) -> PruneReport | None:
        """Prune if this worker takes the lease; the report, or None when it was not due here."""
        if not await self._lease(owner):
            return None

        async def extend() -> None:
            if not await self._lease(owner, renew=True):
                raise RuntimeError("the pruning lease went to another worker")

        pruner = Pruner(self.store, self.artifacts, between_batches=extend, executor=self.executor)
        report = await pruner.prune(self.older_than)
        await self._lease(owner, renew=True)  # the next prune is due an interval after this one ended
        if report.rows["runs"] or report.artifact_records or report.files:
            log.info(
                "pruned %d run(s) that ended before %s, %d artifact record(s), %d file(s) (%d bytes)",
                report.rows["runs"], time.strftime("%Y-%m-%d %H:%M", time.gmtime(report.cutoff)),
                report.artifact_records, report.files, report.bytes,
            )
        return report

    async def _lease(self, owner: str, *, renew: bool = False) -> bool:
        now = time.time()
        taken: bool = await self.store.tx(
            lambda tx: prune_q.take_lease(tx, owner, now, now + self.every_seconds, renew=renew)
        )
        return taken
