"""Group commit for requests: what many concurrent callers ask of the store in the same turn of the
event loop goes in one transaction.

A server answering webhooks or submits pays, for each request, a transaction: on SQLite its
``BEGIN IMMEDIATE`` and its commit, on PostgreSQL its round trips. ``GroupCommit`` queues each
caller's item, and at the end of the loop's turn runs ``fn(tx, items)`` once for everything queued;
each caller gets its own item's result. Items queued while transactions are under way wait for the
next one (at most ``concurrency`` at once: on SQLite they run inline, one at a time anyway).

One bad item must not fail the others. An item that ``fn`` finds wrong without spoiling the
transaction (a webhook for an unknown generation) gets an exception as its result: the caller
raises it, the others' results stand. When the batch's transaction raises, every item of it runs
again in a transaction of its own, and only the item that fails alone gets the error. ``fn`` may
therefore run more than once for an item; like every transaction function it acts outside the
transaction only through ``Tx.after_commit``.

``prepare(items)``, when given, runs before each of those transactions, outside it (on SQLite,
without the write lock: work that needs nothing the transaction reads, such as planning new runs),
and its result is ``fn``'s third argument: ``fn(tx, items, prepared)``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from toolweave.store.db import Store, Tx

I = TypeVar("I")  # noqa: E741 — an item
R = TypeVar("R")


class GroupCommit(Generic[I, R]):
    def __init__(
        self, store: Store, fn: Callable[..., Sequence[R | Exception]], *, concurrency: int = 2,
        max_items: int = 500, prepare: Callable[[Sequence[I]], Any] | None = None,
    ) -> None:
        """``fn(tx, items)`` (``fn(tx, items, prepare(items))`` with ``prepare``) returns one result
        per item, in order; an ``Exception`` as a result is raised to that item's caller alone (the
        transaction still commits the others)."""
        self.store = store
        self.fn = fn
        self.prepare = prepare
        self.concurrency = max(1, concurrency)
        self.max_items = max(1, max_items)
        self._queued: list[tuple[I, asyncio.Future[R]]] = []
        self._scheduled = False
        self._running = 0
        self.transactions = 0
        """Transactions run (batches, and items run again alone): for tests and benchmarks."""

    async def __call__(self, item: I) -> R:
        """Queue ``item`` and return its result once its transaction committed (or raise its error)."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queued.append((item, future))
        self._schedule()
        return await future

    def _schedule(self) -> None:
        if not self._scheduled and self._queued and self._running < self.concurrency:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._start)

    def _start(self) -> None:
        self._scheduled = False
        if self._running >= self.concurrency or not self._queued:
            return
        batch, self._queued = self._queued[: self.max_items], self._queued[self.max_items :]
        self._running += 1
        task = asyncio.ensure_future(self._run(batch))

        def done(_: asyncio.Future[None]) -> None:
            self._running -= 1
            self._schedule()

        task.add_done_callback(done)
        self._schedule()  # more than max_items queued, or room for another transaction

    async def _run(self, batch: list[tuple[I, asyncio.Future[R]]]) -> None:
        items = [item for item, _ in batch]
        try:
            self.transactions += 1
            results = await self.store.tx(self._all, items, self._prepared(items))
        except BaseException as exc:
            if len(batch) == 1 or not isinstance(exc, Exception):
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                return
            for item, future in batch:  # one of them spoiled the batch: each on its own
                try:
                    self.transactions += 1
                    (result,) = await self.store.tx(self._all, [item], self._prepared([item]))
                except Exception as alone:
                    if not future.done():
                        future.set_exception(alone)
                else:
                    _settle(future, result)
            return
        for (_, future), result in zip(batch, results, strict=True):
            _settle(future, result)

    def _prepared(self, items: Sequence[I]) -> Any:
        return self.prepare(items) if self.prepare is not None else None

    def _all(self, tx: Tx, items: Sequence[I], prepared: Any) -> Sequence[R | Exception]:
        results = self.fn(tx, items, prepared) if self.prepare is not None else self.fn(tx, items)
        if len(results) != len(items):
            raise RuntimeError(f"a group commit's function returned {len(results)} results for {len(items)} items")
        return results


def _settle(future: asyncio.Future[R], result: R | Exception) -> None:
    if future.done():
        return
    if isinstance(result, Exception):
        future.set_exception(result)
    else:
        future.set_result(result)
