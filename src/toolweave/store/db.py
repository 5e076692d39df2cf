"""The store's engine, transactions and wake-ups; the only place that knows the SQL dialect.

All database work is plain SQL inside *transaction functions* ``fn(tx, *args)``;
``await store.tx(fn, ...)`` runs one such function as one transaction on a DB-API connection.
SQLite (WAL) transactions run inline on the event loop's thread on one held connection
(``BEGIN IMMEDIATE`` for writers, ``BEGIN`` for readers); PostgreSQL transactions run on a pool
of threads sized to the worker's slots, each with a connection of its own (``_Connections``).
SQLAlchemy provides the schema and, through Alembic, the migrations; it is not loaded otherwise.

On PostgreSQL a writer's statements are pipelined (psycopg's pipeline mode): a statement whose
result the transaction function does not read at once is sent without waiting for the server, so a
transaction costs a round trip per read it makes and one to commit, not one per statement. A
compare-and-set the function can predict (``Tx.expect``: a step row under its run's lock) is taken
as applied and checked before the commit; if one did not apply, the transaction is rolled back and
run again from the start without pipelining, every compare-and-set checked as it runs
(``Store.careful_reruns`` counts those). A transaction PostgreSQL rolls back to break a deadlock
(or a serialization failure) runs again too, up to three times (``Store.conflict_reruns``).

Wake-ups: a transaction that enqueues work calls ``tx.wake()``. On PostgreSQL that becomes a
``NOTIFY`` delivered at commit to every listening process; on SQLite an in-process signal is set
after commit, and a datagram wakes the other processes waiting on the same file (``store/wake.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import threading
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from toolweave.store.codec import _ROW_PLANS, _Decoders, _encode, _row_plan
from toolweave.store.connections import (
    _connection_lost,
    _Connections,
    _NeverBegan,
    _sqlite_begin,
    _sqlite_connect,
    normalise_url,
)
from toolweave.store.wake import Wakeups

P = ParamSpec("P")
T = TypeVar("T")

NOTIFY_CHANNEL = "toolweave_tasks"
CONFLICT_SQLSTATES = frozenset({"40P01", "40001"})
"""deadlock_detected and serialization_failure: PostgreSQL rolled the transaction back to let
another one through; it is run again (its function must be safe to run again, as for a careful rerun)."""
MAX_CONFLICT_RERUNS = 3
log = logging.getLogger("toolweave.store")


_NAMED = re.compile(r"(?<![:\w]):([a-zA-Z_]\w*)")


class Row(dict[str, Any]):
    """A result row: a dict that also answers attribute access (``row.status``)."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class Tx:
    """One transaction: a DB-API connection plus what should happen after it commits.

    ``q``/``one``/``all`` run plain SQL (``:name`` parameters) straight on the DB-API cursor: the
    hot path of the engine pays no statement construction. Dict and list parameters are stored as
    JSON, Decimals as text; rows come back as ``Row`` with JSON, boolean and decimal columns
    decoded.

    In a pipelined transaction (PostgreSQL writers) a statement is sent without waiting for it;
    reading a result waits for it and for everything sent before it. Writes queued with ``put``
    or ``expect`` are held until the transaction next reads (or commits) and then sent together,
    one ``executemany`` per statement: many steps' writes cost a statement each, not a statement
    per step.
    """

    __slots__ = (
        "_arrays", "_batch", "_batch_keys", "_checks", "_results", "committed", "cursor", "deferred", "dialect",
        "event_runs", "pipeline", "statements", "woken",
    )

    def __init__(self, cursor: Any, dialect: str, pipeline: Any = None) -> None:
        self.cursor = cursor
        self.dialect = dialect
        self.pipeline = pipeline
        """psycopg's pipeline when this transaction's statements are pipelined, else None."""
        self.statements = 0
        """Statements whose results came back (a transaction that failed at 0 never began)."""
        self._batch: dict[str, list[tuple[Mapping[str, Any], int, Callable[[Row | None], None] | None]]] = {}
        self._batch_keys: set[Hashable] = set()
        self._checks: list[tuple[Any, int, str]] = []
        self._results: list[tuple[str, Any, list[Callable[[Row | None], None] | None]]] = []
        self.event_runs: set[str] = set()
        """Runs this transaction appends events to (``Store.on_events`` hears of them at commit)."""
        self.woken = False
        self.deferred: dict[str, list[Mapping[str, Any]]] = {}
        self._arrays: dict[str, str] = {}
        self.committed: list[Callable[[], None]] = []

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once this transaction has committed (never if it rolls back): what a
        process remembers about the database (a cache of rows known to exist) must not run ahead
        of it."""
        self.committed.append(callback)

    def defer(self, sql: str, rows: Sequence[Mapping[str, Any]], *, arrays: str | None = None) -> None:
        """Queue insert rows that nothing reads back in this transaction; they are written with one
        ``executemany`` per statement just before the commit (e.g. events of a whole batch).

        ``arrays`` is the same insert written for PostgreSQL over one array per column (each
        ``:column`` an array of the rows' values, in order; e.g. ``SELECT … FROM unnest(…) WITH
        ORDINALITY … ORDER BY``): several rows then go as one statement, whose text never changes
        (psycopg prepares it once), not one statement per row."""
        self.deferred.setdefault(sql, []).extend(rows)
        if arrays is not None:
            self._arrays[sql] = arrays

    def flush_deferred(self) -> None:
        for sql, rows in self.deferred.items():
            arrays = self._arrays.get(sql) if self.dialect == "postgresql" and len(rows) > 1 else None
            if arrays is None:
                self.many(sql, rows)
                continue
            if self._batch:
                self._send_batch()
            encoded = [_encode(row) for row in rows]
            columns = {name: [row[name] for row in encoded] for name in encoded[0]}
            self.cursor.execute(_sql_for(arrays, self.dialect), columns)
            if self.pipeline is None:
                self.statements += 1
        self.deferred.clear()

    # --- statements ----------------------------------------------------------------------------

    def q(self, sql: str, params: Mapping[str, Any] | None = None) -> Any:
        """Run a statement; returns the cursor (in a pipelined transaction, reading its results
        waits for them)."""
        if self._batch:
            self._send_batch()
        cur = self.cursor
        cur.execute(_sql_for(sql, self.dialect), _encode(params) if params else {})
        if self.pipeline is None:
            self.statements += 1
        return cur

    def many(self, sql: str, rows: Sequence[Mapping[str, Any]]) -> None:
        if rows:
            if self._batch:
                self._send_batch()
            self.cursor.executemany(_sql_for(sql, self.dialect), [_encode(r) for r in rows])
            if self.pipeline is None:
                self.statements += 1

    def all(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Row]:
        cur = self.q(sql, params)
        return self._rows(sql, cur)

    def one(self, sql: str, params: Mapping[str, Any] | None = None) -> Row | None:
        cur = self.q(sql, params)
        if self.pipeline is not None:
            self.sync()
        plan = self._plan(sql, cur)
        if plan is None:
            return None
        r = cur.fetchone()
        if r is None:
            return None
        rest = cur.fetchall()
        if rest:
            raise RuntimeError("one() found more than one row")
        return _decode(plan[0], plan[1], r)

    def rowcount(self, sql: str, params: Mapping[str, Any] | None = None) -> int:
        cur = self.q(sql, params)
        if self.pipeline is not None:
            self.sync()
        count: int = cur.rowcount
        return count

    def fetch(self, sql: str, params: Mapping[str, Any] | None = None) -> Callable[[], list[Row]]:
        """Send a query now and read its rows later (the returned function): several reads sent
        one after the other cost one round trip in a pipelined transaction."""
        if self.pipeline is None:
            rows = self.all(sql, params)
            return lambda: rows
        if self._batch:
            self._send_batch()
        cur = self._cursor()
        cur.execute(_sql_for(sql, self.dialect), _encode(params) if params else {})
        return lambda: self._rows(sql, cur)

    def fetch_each(self, sql: str, rows: Sequence[Mapping[str, Any]]) -> Callable[[], list[Row | None]]:
        """Run one statement once per parameter row; the returned function gives the row each run
        returned (or None). On PostgreSQL they go in one ``executemany``, read later like
        ``fetch``'s."""
        if not rows:
            return list
        if self.dialect != "postgresql":
            found = [self.one(sql, r) for r in rows]
            return lambda: found
        if self._batch:
            self._send_batch()
        cur = self._cursor()
        cur.executemany(_sql_for(sql, self.dialect), [_encode(r) for r in rows], returning=True)
        if self.pipeline is None:
            self.statements += 1
        return lambda: self._each_rows(sql, cur)

    def expect(self, sql: str, params: Mapping[str, Any], *, key: Hashable) -> bool:
        """A compare-and-set whose outcome the caller can predict: it changes one row (``key``
        names it). Returns whether it did. In a pipelined transaction it is queued with the
        other writes (``put``) and taken as done; it is checked before the commit, and a
        transaction in which one did not apply is rolled back and run again unpipelined, where
        every ``expect`` waits for its result (see the module's docstring). Only for statements
        that change their row unless another transaction raced this one past a lock it holds."""
        if self.pipeline is None:
            return self.rowcount(sql, params) == 1
        self._queue(sql, params, key, 1, None)
        return True

    def put(
        self, sql: str, params: Mapping[str, Any], *, key: Hashable | None = None,
        then: Callable[[Row | None], None] | None = None,
    ) -> None:
        """A write nothing reads back before this transaction's next read: queued and sent with the
        other queued writes of the same statement in one ``executemany`` when the transaction next
        reads or commits (at once when not pipelined). ``key`` names the row an UPDATE changes
        (a second write of the same row sends the first ones before it is queued). ``then(row)``
        hears the row it returned (an INSERT's generated id), before the commit."""
        if self.pipeline is None:
            if then is None:
                self.q(sql, params)
            else:
                then(self.one(sql, params))
            return
        self._queue(sql, params, key, 0, then)

    def _queue(
        self, sql: str, params: Mapping[str, Any], key: Hashable | None, rows: int,
        then: Callable[[Row | None], None] | None,
    ) -> None:
        if key is not None:
            if key in self._batch_keys:
                self._send_batch()
            self._batch_keys.add(key)
        self._batch.setdefault(sql, []).append((params, rows, then))

    def _send_batch(self) -> None:
        """Send the queued writes, one ``executemany`` per statement (queued writes change
        different rows, so their order does not matter)."""
        batch, self._batch = self._batch, {}
        self._batch_keys.clear()
        for sql, entries in batch.items():
            cur = self._cursor()
            thens = [then for _, _, then in entries]
            returning = any(then is not None for then in thens)
            if len(entries) == 1:
                cur.execute(_sql_for(sql, self.dialect), _encode(entries[0][0]))
            else:
                cur.executemany(_sql_for(sql, self.dialect), [_encode(p) for p, _, _ in entries], returning=returning)
            expected = sum(rows for _, rows, _ in entries)
            if expected:
                self._checks.append((cur, expected, sql))
            if returning:
                self._results.append((sql, cur, thens))

    def _cursor(self) -> Any:
        return self.cursor.connection.cursor()

    # --- results -------------------------------------------------------------------------------

    def _rows(self, sql: str, cur: Any) -> list[Row]:
        if self.pipeline is not None and cur.pgresult is None:
            self.sync()  # its result has not come back yet
        plan = self._plan(sql, cur)
        if plan is None:
            return []
        names, decoders = plan
        return [_decode(names, decoders, r) for r in cur.fetchall()]

    def _each_rows(self, sql: str, cur: Any) -> list[Row | None]:
        found: list[Row | None] = []
        while True:
            got = self._rows(sql, cur)
            found.append(got[0] if got else None)
            if not cur.nextset():
                return found

    def _plan(self, sql: str, cur: Any) -> tuple[tuple[str, ...], _Decoders] | None:
        """The result's column names and decoders; None when the statement returned no rows. On
        PostgreSQL the cached plan is checked against the result's column count: psycopg builds
        its ``description`` anew on each use, which cost more than reading the rows."""
        if self.dialect == "postgresql":
            res = cur.pgresult
            if res is None or res.status not in _PG_ROWS:
                return None
            found = _ROW_PLANS.get(sql)
            if found is not None and len(found[0]) == res.nfields:
                return found
        if cur.description is None:
            return None
        return _row_plan(sql, cur.description)

    def sync(self) -> None:
        """Send the queued writes and wait for every statement sent so far (pipelined
        transactions)."""
        if self.pipeline is not None:
            if self._batch:
                self._send_batch()
            self.pipeline.sync()
            self.statements += 1

    def verify(self) -> None:
        """Before the commit: read what is still pending and check every ``expect``; raises
        ``Unexpected`` when one did not change the rows it expected to."""
        if self.pipeline is None:
            return
        self.sync()
        for cur, expected, sql in self._checks:
            if cur.rowcount != expected:
                raise Unexpected(f"{cur.rowcount} rows instead of {expected}: {' '.join(sql.split())[:200]}")
        results, self._results = self._results, []
        for sql, cur, thens in results:
            rows = self._each_rows(sql, cur) if len(thens) > 1 else [next(iter(self._rows(sql, cur)), None)]
            for then, row in zip(thens, rows, strict=True):
                if then is not None:
                    then(row)

    def wake(self) -> None:
        """Wake workers once this transaction commits (new or re-queued work)."""
        if not self.woken:
            self.woken = True
            if self.dialect == "postgresql":
                self.q(f"NOTIFY {NOTIFY_CHANNEL}")

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"


class Unexpected(Exception):
    """A compare-and-set taken as done in a pipelined transaction did not apply (``Tx.expect``)."""


@functools.lru_cache(maxsize=512)
def _sql_for(sql: str, dialect: str) -> str:
    if dialect == "postgresql":
        return _NAMED.sub(r"%(\1)s", sql.replace("%", "%%"))
    return sql.replace(" FOR UPDATE SKIP LOCKED", "").replace(" FOR UPDATE", "")


def in_list(prefix: str, values: Sequence[Any]) -> tuple[str, dict[str, Any]]:
    """``(:p0, :p1, …)`` and its parameters, for ``column IN`` a list of values."""
    params = {f"{prefix}{i}": value for i, value in enumerate(values)}
    return "(" + ", ".join(":" + name for name in params) + ")", params


_PG_ROWS = (2, 9)
"""libpq's PGRES_TUPLES_OK and PGRES_SINGLE_TUPLE: a result that has rows."""

def _decode(names: tuple[str, ...], decoders: _Decoders, values: Any) -> Row:
    row = Row(zip(names, values, strict=True))
    for name, decoder in decoders:
        value = row[name]
        if value is not None:
            row[name] = decoder(value)
    return row


class Store:
    def __init__(self, url: str, *, pool_size: int = 4, inline: bool | None = None) -> None:
        self.url = normalise_url(url)
        self.dialect = "postgresql" if self.url.startswith("postgresql") else "sqlite"
        self.inline = self.dialect == "sqlite" if inline is None else inline
        self._owner_thread = threading.get_ident()
        self._wake_event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: threading.Thread | None = None
        self._closing = threading.Event()
        self._wakeups: Wakeups | None = None
        self._engine: Any = None
        self._event_listeners: list[Callable[[set[str]], None]] = []
        self.pipelined = self.dialect == "postgresql"
        """Whether writers' statements are pipelined (PostgreSQL; see the module's docstring)."""
        self.careful_reruns = 0
        """Transactions run again unpipelined because a compare-and-set taken as done did not apply."""
        self.conflict_reruns = 0
        """Transactions run again because PostgreSQL rolled them back to break a deadlock."""
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

    def _run(self, fn: Callable[..., T], args: tuple[Any, ...], *, readonly: bool) -> T:
        try:
            return self._run_on(self._connections.get(), fn, args, readonly)
        except _NeverBegan as lost:
            # the server went away (restarted, or a network cut) since this connection was last
            # used, and the transaction failed at its first statement: it never began, so it runs
            # once more on a new connection
            try:
                return self._run_on(self._connections.get(), fn, args, readonly)
            except _NeverBegan as again:
                raise again.__cause__ or lost.__cause__ or again from None

    def _run_on(self, dbapi: Any, fn: Callable[..., T], args: tuple[Any, ...], readonly: bool) -> T:
        """One transaction straight on the DB-API connection: SQLAlchemy's transaction machinery
        cost more per transaction than the statements of a step (see docs/benchmarks.md).

        On SQLite a writer takes the lock up front (``BEGIN IMMEDIATE``: no deadlock-prone upgrade
        from a read); a reader does not, so readers never make a worker wait. psycopg opens the
        transaction at the first statement; a writer's statements are pipelined, and a transaction
        in which a compare-and-set taken as done did not apply runs again unpipelined."""
        pipelined = self.pipelined and not readonly
        for conflicts in range(MAX_CONFLICT_RERUNS + 1):
            try:
                try:
                    return self._attempt(dbapi, fn, args, readonly, pipelined)
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

    def _attempt(self, dbapi: Any, fn: Callable[..., T], args: tuple[Any, ...], readonly: bool, pipelined: bool) -> T:
        cursor = dbapi.cursor()
        tx = Tx(cursor, self.dialect)
        try:
            if self.dialect == "sqlite":
                cursor.execute("BEGIN" if readonly else "BEGIN IMMEDIATE")
            if pipelined:
                with dbapi.pipeline() as pipeline:
                    tx.pipeline = pipeline
                    result = self._body(tx, fn, args)
                    dbapi.commit()
                tx.pipeline = None
            else:
                result = self._body(tx, fn, args)
                dbapi.commit()
        except Exception as exc:
            with contextlib.suppress(Exception):
                dbapi.rollback()
            if _connection_lost(dbapi, exc):
                self._connections.drop(dbapi)
                if tx.statements == 0:
                    raise _NeverBegan from exc
            raise
        except BaseException:
            with contextlib.suppress(Exception):
                dbapi.rollback()
            raise
        finally:
            cursor.close()
        for callback in tx.committed:
            callback()
        if tx.event_runs:
            for listener in self._event_listeners:
                listener(tx.event_runs)
        if tx.woken:
            self._signal()
            if self._wakeups is not None:
                self._wakeups.notify()
        return result

    @staticmethod
    def _body(tx: Tx, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        result = fn(tx, *args)
        tx.flush_deferred()
        tx.verify()
        return result

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Like ``tx``, for a transaction that only reads (see ``read_sync``)."""
        return await self._call(self.read_sync, fn, args)

    async def tx(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(tx, *args)`` as one transaction.

        ``fn`` may run more than once (a connection found dead before anything ran, a pipelined
        compare-and-set that missed): it acts outside the transaction only through
        ``Tx.after_commit``. SQLite transactions are short and local, so they run on the event
        loop's own thread: a hop to another thread would cost more than the transaction (see
        docs/benchmarks.md). PostgreSQL transactions wait on the network and run on the pool's
        threads."""
        return await self._call(self.run_sync, fn, args)

    async def _call(self, run: Callable[..., T], fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        loop = asyncio.get_running_loop()
        self._bind(loop)
        if self.inline:
            return run(fn, *args)
        return await loop.run_in_executor(self._executor, run, fn, *args)

    # --- wake-ups ------------------------------------------------------------------------------

    def on_events(self, listener: Callable[[set[str]], None]) -> None:
        """Call ``listener(run_ids)`` after each commit that appended events to those runs (on the
        committing thread; ``watching.EventHub`` reads them at once)."""
        self._event_listeners.append(listener)

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is not loop:
            self._loop = loop
            self._wake_event = asyncio.Event()
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


