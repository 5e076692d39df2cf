"""The store's engine, transactions and wake-ups; the only place that knows the SQL dialect.

All database work is plain SQL inside *transaction functions* ``fn(tx, *args)``;
``await store.tx(fn, ...)`` runs one such function as one transaction on a DB-API connection.
SQLite (WAL) transactions run inline on the event loop's thread on one held connection
(``BEGIN IMMEDIATE`` for writers, ``BEGIN`` for readers); a writer that finds the write lock held
by another process tries again every few hundred microseconds (``connections._begin_write``), after
the first millisecond on the event loop, not blocking it (``Store.tx``). PostgreSQL transactions
run on a pool of threads sized to the worker's slots, each with a connection of its own
(``_Connections``).
SQLAlchemy provides the schema and, through Alembic, the migrations; it is not loaded otherwise.

On PostgreSQL transactions run on libpq (``store/wire.py``) and a writer's statements are
pipelined: a statement whose result the transaction function does not read at once is buffered
and sent with the next read or the commit, so a transaction costs a round trip per read it makes
and one to commit (its ``BEGIN`` goes with its first statements), not one per statement. A
compare-and-set the function can predict (``Tx.expect``: a step row under its run's lock) is taken
as applied and checked by the server in the commit's round trip (its statement fails unless it
changed its row, which aborts the commit sent after it: ``tx.checked_sql``); if one did not apply,
the transaction is rolled back and run again from the start without pipelining, every compare-and-set checked as it runs
(``Store.careful_reruns`` counts those). A transaction PostgreSQL rolls back to break a deadlock
(or a serialization failure) runs again too, up to three times (``Store.conflict_reruns``).

Wake-ups: a transaction that enqueues work calls ``tx.wake()``. On PostgreSQL that becomes a
``NOTIFY`` delivered at commit to every listening process; on SQLite an in-process signal is set
after commit, and a datagram wakes the other processes waiting on the same file (``store/wake.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from toolweave.store import multirow
from toolweave.store.codec import _ROW_PLANS
from toolweave.store.connections import (
    LOCK_SPIN,
    WRITE_LOCK_TIMEOUT,
    WriteLockTimeout,
    _begin_write,
    _connection_lost,
    _Connections,
    _LockBusy,
    _LockWait,
    _NeverBegan,
    _sqlite_begin,
    _sqlite_connect,
    normalise_url,
)
from toolweave.store.tx import NOTIFY_CHANNEL, Row, Tx, Unexpected, _sql_for, among, check_failed, in_list
from toolweave.store.wake import Wakeups

__all__ = ["NOTIFY_CHANNEL", "Row", "Store", "Tx", "Unexpected", "WriteLockTimeout", "_sql_for", "among", "in_list"]

P = ParamSpec("P")
T = TypeVar("T")

CONFLICT_SQLSTATES = frozenset({"40P01", "40001"})
"""deadlock_detected and serialization_failure: PostgreSQL rolled the transaction back to let
another one through; it is run again (its function must be safe to run again, as for a careful rerun)."""
MAX_CONFLICT_RERUNS = 3
log = logging.getLogger("toolweave.store")


class Store:
    def __init__(self, url: str, *, pool_size: int = 4, inline: bool | None = None) -> None:
        self.url = normalise_url(url)
        self.dialect = "postgresql" if self.url.startswith("postgresql") else "sqlite"
        self.inline = self.dialect == "sqlite" if inline is None else inline
        self._owner_thread = threading.get_ident()
        self._wake_event: asyncio.Event | None = None
        self._write_turn: asyncio.Lock | None = None
        """SQLite: taken by the one transaction of this process's loop that waits for the write lock
        on the loop; the others that find it held wait for their turn (``_call``)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: threading.Thread | None = None
        self._closing = threading.Event()
        self._wakeups: Wakeups | None = None
        self._engine: Any = None
        self._event_listeners: list[Callable[[set[str]], None]] = []
        self.pipelined = self.dialect == "postgresql"
        """Whether writers' statements are pipelined (PostgreSQL; see the module's docstring)."""
        self._columns: multirow.Columns | None = None
        """PostgreSQL's column types by table, read at the first write (``multirow``)."""
        self.careful_reruns = 0
        """Transactions run again unpipelined because a compare-and-set taken as done did not apply."""
        self.conflict_reruns = 0
        """Transactions run again because PostgreSQL rolled them back to break a deadlock."""
        self.write_lock_timeout = WRITE_LOCK_TIMEOUT
        """SQLite: how long a writer waits for the write lock before ``WriteLockTimeout``."""
        self.lock_waits = 0
        """SQLite: writers that found the write lock held by another connection and waited for it."""
        if self.dialect == "sqlite":
            path = self.url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                self._wakeups = Wakeups(path)
            self._connections = _Connections("sqlite", path or ":memory:")
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="toolweave-db")
        else:
            self.dsn = "postgresql://" + self.url.split("://", 1)[1]
            self._connections = _Connections("postgresql", self.dsn)
            self._executor = ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix="toolweave-db")

    @property
    def engine(self) -> Any:
        """A SQLAlchemy engine on this store, made on first use: for migrations and tools, not
        for the transactions (which run on ``_Connections``)."""
        if self._engine is None:
            import sqlalchemy as sa
            from sqlalchemy import event

            self._engine = sa.create_engine(self.url, poolclass=sa.pool.NullPool)
            if self.dialect == "sqlite":
                event.listen(self._engine, "connect", _sqlite_connect)
                event.listen(self._engine, "begin", _sqlite_begin)  # SQLAlchemy's own transactions
        return self._engine

    # --- transactions --------------------------------------------------------------------------

    def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a transaction function on the calling thread."""
        return self._run(fn, args, readonly=False)

    def read_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a transaction that only reads. On SQLite it does not take the write lock, so readers
        (the API, a monitor) never make a worker wait."""
        return self._run(fn, args, readonly=True)

    def _run(self, fn: Callable[..., T], args: tuple[Any, ...], *, readonly: bool, wait: _LockWait | None = None) -> T:
        try:
            return self._run_on(self._connections.get(), fn, args, readonly, wait)
        except _NeverBegan as lost:
            # the server went away (restarted, or a network cut) since this connection was last
            # used, and the transaction failed at its first statement: it never began, so it runs
            # once more on a new connection
            try:
                return self._run_on(self._connections.get(), fn, args, readonly, wait)
            except _NeverBegan as again:
                raise again.__cause__ or lost.__cause__ or again from None

    def _run_on(
        self, dbapi: Any, fn: Callable[..., T], args: tuple[Any, ...], readonly: bool, wait: _LockWait | None = None
    ) -> T:
        """One transaction straight on the DB-API connection: SQLAlchemy's transaction machinery
        cost more per transaction than the statements of a step (see docs/benchmarks.md).

        On SQLite a writer takes the lock up front (``BEGIN IMMEDIATE``: no deadlock-prone upgrade
        from a read), waiting for it as ``wait`` says (``_begin_write``; None: on this thread, up to
        ``write_lock_timeout``); a reader does not, so readers never make a worker wait. psycopg opens the
        transaction at the first statement; a writer's statements are pipelined, and a transaction
        in which a compare-and-set taken as done did not apply runs again unpipelined."""
        pipelined = self.pipelined and not readonly
        if pipelined and self._columns is None:
            self._columns = multirow.column_types(dbapi)
        for conflicts in range(MAX_CONFLICT_RERUNS + 1):
            try:
                try:
                    return self._attempt(dbapi, fn, args, readonly, pipelined, wait)
                except Unexpected as unexpected:
                    if not pipelined:
                        raise
                    self.careful_reruns += 1
                    log.debug("running a transaction again unpipelined: %s", unexpected)
                    return self._attempt(dbapi, fn, args, readonly, False)
            except Exception as exc:
                if getattr(exc, "sqlstate", None) not in CONFLICT_SQLSTATES or conflicts == MAX_CONFLICT_RERUNS:
                    raise
                self.conflict_reruns += 1
                log.info("running a transaction again after PostgreSQL chose it to lose a conflict: %s", exc)
        raise AssertionError("unreachable")

    def _attempt(
        self, dbapi: Any, fn: Callable[..., T], args: tuple[Any, ...], readonly: bool, pipelined: bool,
        wait: _LockWait | None = None,
    ) -> T:
        if self.dialect == "postgresql":
            return self._attempt_pg(dbapi, fn, args, pipelined)
        cursor = dbapi.cursor()
        tx = Tx(cursor, self.dialect, columns=self._columns)
        try:
            if readonly:
                cursor.execute("BEGIN")
            else:
                _begin_write(cursor, wait or self._lock_wait(None))
            result = self._body(tx, fn, args)
            dbapi.commit()
        except BaseException:
            with contextlib.suppress(Exception):
                dbapi.rollback()
            raise
        finally:
            cursor.close()
        self._committed(tx)
        return result

    def _attempt_pg(self, dbapi: Any, fn: Callable[..., T], args: tuple[Any, ...], pipelined: bool) -> T:
        """One PostgreSQL transaction on libpq (``store/wire.py``): its ``BEGIN`` goes with its first
        statements, its ``COMMIT`` with its last writes; pipelined, a statement waits only when the
        function reads its result."""
        from toolweave.store.wire import Wire  # psycopg: not loaded by a process on SQLite

        wire = Wire(dbapi, pipelined=pipelined)
        tx = Tx(wire.cursor(), self.dialect, pipeline=wire if pipelined else None, columns=self._columns)
        try:
            wire.command(b"BEGIN")
            result = self._body(tx, fn, args)
            wire.commit()  # the queued writes' results come back with it
            tx.pipeline = None
            tx.returned()
        except Exception as exc:
            wire.close()
            with contextlib.suppress(Exception):
                dbapi.rollback()
            if _connection_lost(dbapi, exc):
                self._connections.drop(dbapi)
                if tx.statements == 0:
                    raise _NeverBegan from exc
            if pipelined and check_failed(exc):
                raise Unexpected(str(exc)) from exc
            raise
        except BaseException:
            wire.close()
            with contextlib.suppress(Exception):
                dbapi.rollback()
            raise
        self._committed(tx)
        return result

    def _committed(self, tx: Tx) -> None:
        for callback in tx.committed:
            callback()
        if tx.event_runs:
            for listener in self._event_listeners:
                listener(tx.event_runs)
        if tx.woken:
            self._signal()
            if self._wakeups is not None:
                self._wakeups.notify()

    def _lock_wait(self, spin: float | None) -> _LockWait:
        return _LockWait(self.write_lock_timeout, self._connections.target, spin, on_wait=self._count_wait)

    def _count_wait(self) -> None:
        self.lock_waits += 1

    @staticmethod
    def _body(tx: Tx, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        result = fn(tx, *args)
        tx.flush_deferred()
        tx.verify()
        return result

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Like ``tx``, for a transaction that only reads (see ``read_sync``)."""
        return await self._call(fn, args, readonly=True)

    async def tx(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(tx, *args)`` as one transaction.

        ``fn`` may run more than once (a connection found dead before anything ran, a pipelined
        compare-and-set that missed): it acts outside the transaction only through
        ``Tx.after_commit``. SQLite transactions are short and local, so they run on the event
        loop's own thread: a hop to another thread would cost more than the transaction (see
        docs/benchmarks.md). PostgreSQL transactions wait on the network and run on the pool's
        threads."""
        return await self._call(fn, args, readonly=False)

    async def _call(self, fn: Callable[..., T], args: tuple[Any, ...], *, readonly: bool) -> T:
        loop = asyncio.get_running_loop()
        self._bind(loop)
        if not self.inline:
            run = self.read_sync if readonly else self.run_sync
            return await loop.run_in_executor(self._executor, run, fn, *args)
        if readonly or self.dialect != "sqlite":
            return self._run(fn, args, readonly=readonly)
        # a writer waits for the write lock blocking the loop for at most LOCK_SPIN (a worker's own
        # transactions are that short), then on the loop, so the process goes on with its other work
        # meanwhile (a bulk submit's chunk holds the lock for tens of milliseconds). Nothing began
        # while it waits, and each try runs a whole transaction without yielding: transactions never
        # interleave on the thread's one connection.
        wait = self._lock_wait(LOCK_SPIN)
        turn = self._write_turn
        assert turn is not None
        delay = 0.0
        if not turn.locked():
            try:
                return self._run(fn, args, readonly=False, wait=wait)
            except _LockBusy as busy:
                delay = busy.delay
        # the process's writers that found the lock held wait one behind the other: one of them
        # tries the lock, not each of them (a worker has several transactions wanting it at once)
        async with turn:
            while True:
                if delay:
                    await asyncio.sleep(delay)
                try:
                    return self._run(fn, args, readonly=False, wait=wait)
                except _LockBusy as busy:
                    delay = busy.delay

    # --- wake-ups ------------------------------------------------------------------------------

    def on_events(self, listener: Callable[[set[str]], None]) -> None:
        """Call ``listener(run_ids)`` after each commit that appended events to those runs (on the
        committing thread; ``watching.EventHub`` reads them at once)."""
        self._event_listeners.append(listener)

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is not loop:
            self._loop = loop
            self._wake_event = asyncio.Event()
            self._write_turn = asyncio.Lock()
            self._owner_thread = threading.get_ident()

    def _wake_here(self) -> None:
        """A wake-up arriving on the event loop's own thread (another process's datagram)."""
        if self._wake_event is not None:
            self._wake_event.set()

    def _signal(self) -> None:
        loop, ev = self._loop, self._wake_event
        if loop is not None and ev is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(ev.set)

    async def wait_for_work(self, timeout: float) -> bool:
        """Wait until a wake-up arrives or ``timeout`` passes; True when woken."""
        loop = asyncio.get_running_loop()
        self._bind(loop)
        assert self._wake_event is not None
        if self.dialect == "postgresql" and self._listener is None:
            self._start_listener()
        elif self._wakeups is not None:
            self._wakeups.listen(loop, self._wake_here)
        try:
            await asyncio.wait_for(self._wake_event.wait(), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self._wake_event.clear()

    def _start_listener(self) -> None:
        """A thread that LISTENs on PostgreSQL and turns notifications into wake-ups."""

        def listen() -> None:
            import psycopg

            while not self._closing.is_set():
                try:
                    with psycopg.connect(self.dsn, autocommit=True) as conn:
                        conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                        while not self._closing.is_set():
                            for _ in conn.notifies(timeout=1.0, stop_after=1):
                                self._signal()
                except Exception:
                    self._closing.wait(1.0)

        self._listener = threading.Thread(target=listen, name="toolweave-listen", daemon=True)
        self._listener.start()

    # --- life cycle ----------------------------------------------------------------------------

    def upgrade(self) -> None:
        """Bring the schema to the newest migration (Alembic is loaded only when the store is not
        at the newest revision already)."""
        from toolweave.store.migrate import head_revision, upgrade

        head = head_revision()
        if head is not None and self._revision() == head:
            return
        upgrade(self.engine)
        _ROW_PLANS.clear()
        self._columns = None

    def _revision(self) -> str | None:
        """The store's schema revision, read without Alembic (None when it has none yet)."""
        try:
            row = self.read_sync(lambda tx: tx.one("SELECT version_num FROM alembic_version"))
        except Exception:  # no such table yet
            return None
        return None if row is None else str(row.version_num)

    def close(self) -> None:
        if self._wakeups is not None:
            self._wakeups.close(self._loop)
        self._closing.set()
        self._executor.shutdown(wait=True)
        self._connections.close()
        if self._engine is not None:
            self._engine.dispose()


