"""Following runs' events: one subscription per process, however many watchers.

``App.watch`` (the API's event streams, the web page, the command line) used to poll the store
twice per watcher and per round (the events, then the run): 200 open streams were 1,600 queries a
second, which cost a PostgreSQL server most of a core while nothing happened. Now each process has
one ``EventHub``: a watcher reads its backlog (in pages of ``PAGE_EVENTS``, each read when the
one before has been taken: a run of 100,000 events is never in memory whole), then registers the run with the last event id
it has; one task reads the new events of every registered run with one query per round (``WITH
watched(run_id, after) AS (VALUES …)`` joined to ``events`` on its (run_id, event_id) index) and hands each
watcher its own. A round comes every ``interval`` seconds, or at once when this process commits
events itself (``Store.on_events``). The task runs only while somebody watches.

A watcher holds at most ``LIVE_EVENTS`` events its caller has not taken yet (a client that reads
slowly, or not at all, would otherwise have every new event of a busy run queued for it): a round
that would hand it more leaves it instead, and the watcher reads on from the store by event id, a
page at a time as its caller takes them, exactly like the backlog, then registers again when it has
caught up. No event is lost or sent twice, and nothing waits for it unbounded (the events a round
read for it before it left are read again from the store: a cost only a lagging watcher pays).

A run's events are appended under its lock, so within a run event ids grow in commit order, and
reading ``event_id > after`` per run misses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from toolweave.model.status import RunStatus
from toolweave.store import events as events_q
from toolweave.store.db import Store, Tx

log = logging.getLogger("toolweave.watching")

ROUND_SECONDS = 0.25
"""How often the hub reads the store for events committed by other processes."""
MAX_RUNS_PER_QUERY = 256
PAGE_EVENTS = 500
"""At most this many events are read at once: a watcher's backlog page (``App.watch``) and one
query of a hub's round (the rest follows in the next round, at once)."""
LIVE_EVENTS = PAGE_EVENTS
"""At most this many new events wait in a watcher for its caller; past it, the watcher leaves the
hub and reads on from the store (see the module's text)."""
FINAL_EVENTS = frozenset(f"run.{s.value}" for s in RunStatus if s.terminal)


@dataclass(eq=False)
class _Watcher:
    run_id: str
    after: int
    queue: asyncio.Queue[list[events_q.Event] | None] = field(default_factory=asyncio.Queue)
    """Batches of new events; None: the watcher fell behind and left the hub (read the store)."""
    held: int = 0
    """Events in ``queue``."""


def _sizes(count: int) -> int:
    """The number of rows of the VALUES list for ``count`` runs: a power of two, so that the
    statement's text (and its cached plan) takes few shapes."""
    size = 1
    while size < count:
        size *= 2
    return size


def _new_events(tx: Tx, watched: list[tuple[str, int]]) -> tuple[list[events_q.Event], bool]:
    """Events after each run's ``after``, for every (run, after), oldest first, at most
    ``PAGE_EVENTS`` per query; and whether a query stopped there (more to read). A query that stops
    leaves each run a prefix of its events (they come in event id order), so the next round goes on
    from each watcher's last event."""
    found: list[events_q.Event] = []
    more = False
    for first in range(0, len(watched), MAX_RUNS_PER_QUERY):
        part = watched[first:first + MAX_RUNS_PER_QUERY]
        padded = part + [("", 0)] * (_sizes(len(part)) - len(part))
        values = ", ".join(f"(:r{i}, :a{i})" for i in range(len(padded)))
        params: dict[str, Any] = {}
        for i, (run_id, after) in enumerate(padded):
            params[f"r{i}"], params[f"a{i}"] = run_id, after
        rows = tx.all(
            f"WITH watched(run_id, after_id) AS (VALUES {values}) "
            "SELECT e.event_id, e.run_id, e.type, e.step_id, e.data, e.created_at FROM watched w "
            "JOIN events e ON e.run_id = w.run_id AND e.event_id > w.after_id ORDER BY e.event_id LIMIT :limit",
            {**params, "limit": PAGE_EVENTS},
        )
        more = more or len(rows) >= PAGE_EVENTS
        found.extend(events_q.Event(r.event_id, r.run_id, r.type, r.step_id, r.data, r.created_at) for r in rows)
    return found, more


def _status(tx: Tx, run_id: str) -> str | None:
    row = tx.one("SELECT status FROM runs WHERE run_id = :id", {"id": run_id})
    return None if row is None else str(row.status)


class EventHub:
    """The process's one reader of new events for every watched run (see the module's text)."""

    def __init__(self, store: Store, interval: float = ROUND_SECONDS) -> None:
        self.store = store
        self.interval = interval
        self.rounds = 0
        """Rounds read so far (one query per ``MAX_RUNS_PER_QUERY`` watched runs each)."""
        self._watchers: dict[str, set[_Watcher]] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        store.on_events(self._committed)

    def _committed(self, run_ids: set[str]) -> None:
        """This process committed events (on any thread): read at once if somebody watches them."""
        wake, task = self._wake, self._task
        if wake is None or task is None or task.done() or not (run_ids & self._watchers.keys()):
            return
        loop = task.get_loop()
        with contextlib.suppress(RuntimeError):  # the loop has closed
            loop.call_soon_threadsafe(wake.set)

    async def follow(
        self, run_id: str, after: int, backlog: list[dict[str, Any]], *, final_seen: bool = False
    ) -> AsyncIterator[dict[str, Any]]:
        """``backlog`` (the events after ``after`` already read, with the account checked), then
        the run's new events as they are committed; ends after the run's final event
        (``final_seen``: one came before ``after``)."""
        last = after
        for item in backlog:
            last = item["id"]
            yield item
        final_seen = final_seen or any(item["type"] in FINAL_EVENTS for item in backlog)
        if final_seen and await self._ended(run_id):
            return
        while True:
            watcher = _Watcher(run_id, last)
            self._add(watcher)
            try:
                while True:
                    batch = await watcher.queue.get()
                    if batch is None:
                        break  # its caller fell behind: the hub left it
                    watcher.held -= len(batch)
                    for event in batch:
                        last = event.event_id
                        yield event.as_dict()
                    if any(e.type in FINAL_EVENTS for e in batch) and await self._ended(run_id):
                        return
            finally:
                self._remove(watcher)
            while True:  # from the store, a page at a time as the caller takes them, until caught up
                page: list[events_q.Event] = await self.store.read(events_q.since, run_id, last, PAGE_EVENTS)
                for event in page:
                    last = event.event_id
                    yield event.as_dict()
                if any(e.type in FINAL_EVENTS for e in page) and await self._ended(run_id):
                    return
                if len(page) < PAGE_EVENTS:
                    break

    async def _ended(self, run_id: str) -> bool:
        status = await self.store.read(_status, run_id)
        return status is None or RunStatus(status).terminal

    def _add(self, watcher: _Watcher) -> None:
        self._watchers.setdefault(watcher.run_id, set()).add(watcher)
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.create_task(self._rounds(), name="toolweave-event-hub")
        else:
            assert self._wake is not None
            self._wake.set()  # a new run to read: a round now

    def _remove(self, watcher: _Watcher) -> None:
        watchers = self._watchers.get(watcher.run_id)
        if watchers is not None:
            watchers.discard(watcher)
            if not watchers:
                del self._watchers[watcher.run_id]

    async def _rounds(self) -> None:
        assert self._wake is not None
        wake = self._wake
        while self._watchers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), self.interval)
            wake.clear()
            watched = [(run_id, min(w.after for w in ws)) for run_id, ws in self._watchers.items() if ws]
            if not watched:
                continue
            try:
                found, more = await self.store.read(_new_events, watched)
            except Exception:
                log.exception("reading the watched runs' events failed; trying again")
                await asyncio.sleep(self.interval)
                continue
            self.rounds += 1
            by_run: dict[str, list[events_q.Event]] = {}
            for event in found:
                by_run.setdefault(event.run_id, []).append(event)
            for run_id, events in by_run.items():
                for watcher in list(self._watchers.get(run_id, ())):
                    mine = [e for e in events if e.event_id > watcher.after]
                    if not mine:
                        continue
                    if watcher.held + len(mine) > LIVE_EVENTS:
                        self._remove(watcher)  # it reads on from the store, after what it holds
                        watcher.queue.put_nowait(None)
                        continue
                    watcher.after = mine[-1].event_id
                    watcher.held += len(mine)
                    watcher.queue.put_nowait(mine)
            if more:
                wake.set()  # a query stopped at PAGE_EVENTS: the next round now
        self._task = None
