"""The DB-API connections of a store: its URL normalised, one connection per thread kept open
(``_Connections``), SQLite's pragmas, and how a lost PostgreSQL connection is recognised.
"""

from __future__ import annotations

import contextlib
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from toolweave.store.codec import loads


def normalise_url(url: str) -> str:
    """The SQLAlchemy URL of a store (``postgresql+psycopg://`` or ``sqlite:///``)."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


class _Connections:
    """The DB-API connections of a store, one per thread that runs transactions, kept open.

    SQLAlchemy's pool (a checkout, a reset and, for PostgreSQL, a pre-ping round trip per
    transaction) cost more than a step's statements, and importing it cost a CLI command a
    sixth of its time; SQLAlchemy is loaded only for migrations (``Store.engine``)."""

    def __init__(self, dialect: str, target: str) -> None:
        self.dialect = dialect
        self.target = target
        """The SQLite file (or ``:memory:``), or the PostgreSQL connection string."""
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()

    def get(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self.dialect == "postgresql" and (conn.closed or conn.broken):
            self.drop(conn)
            conn = None
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def _connect(self) -> Any:
        if self.dialect == "sqlite":
            conn = sqlite3.connect(self.target, check_same_thread=False, timeout=30, isolation_level=None)
            _sqlite_connect(conn, None)
            return conn
        import psycopg
        from psycopg.types.json import set_json_loads

        # transactions send their own BEGIN and COMMIT (``store/wire.py``)
        pg = psycopg.connect(self.target, autocommit=True)
        set_json_loads(loads, pg)  # orjson: the standard library's json showed in every step
        return pg

    def drop(self, conn: Any) -> None:
        """Forget a connection that failed (the next transaction on this thread opens a new one)."""
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None
        with self._lock:
            if conn in self._all:
                self._all.remove(conn)
        with contextlib.suppress(Exception):
            conn.close()

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.close()
        self._local = threading.local()


class _NeverBegan(Exception):
    """A transaction whose connection was found dead at its first statement (``__cause__``)."""


def _connection_lost(conn: Any, exc: BaseException) -> bool:
    """Whether a PostgreSQL transaction failed because its connection is gone."""
    if getattr(conn, "broken", False):
        return True
    return type(exc).__name__ in ("OperationalError", "InterfaceError") and bool(getattr(conn, "closed", False))


SQLITE_BUSY = 5
BUSY_TIMEOUT_MS = 30_000
"""How long a statement other than a writer's ``BEGIN IMMEDIATE`` (a reader, in WAL mode rarely)
lets SQLite's own busy handler retry."""
WRITE_LOCK_TIMEOUT = 30.0
"""How long a writer waits for SQLite's write lock before ``WriteLockTimeout`` (``Store.write_lock_timeout``)."""
LOCK_WAIT_FIRST = 50e-6
LOCK_WAIT_CAP = 1e-3
"""A writer waiting for the write lock tries again after 50 µs, then twice as long each time, up to
1 ms (each jittered by ±50 %): it takes the lock within about a millisecond of its release. SQLite's
own busy handler sleeps 1, 2, 5, … up to 100 ms between tries, overslept a release by tens of ms
and lost the lock to a writer coming back at once (a bulk submit's next chunk)."""
LOCK_SPIN = 1e-3
"""How long a writer on an event loop waits with the loop blocked (``time.sleep``) before it waits
on the loop instead (``Store.tx``): a worker's own transactions hold the lock for about half a
millisecond, a bulk submit's chunk for tens of milliseconds."""
_JITTER = random.Random()


class WriteLockTimeout(sqlite3.OperationalError):
    """Another connection held the SQLite store's write lock for longer than a writer may wait
    (``Store.write_lock_timeout``); the transaction never began and nothing of it was written."""


class _LockBusy(Exception):
    """The write lock is held and the writer would rather wait on its event loop (``_LockWait.spin``)
    for ``delay`` seconds before it tries again; nothing began."""

    def __init__(self, delay: float) -> None:
        super().__init__(delay)
        self.delay = delay


class _LockWait:
    """One writer's wait for SQLite's write lock: the time between tries (``next_delay``) and the
    deadline, kept across tries made on the event loop and off it."""

    def __init__(
        self, timeout: float, target: str, spin: float | None = None, on_wait: Callable[[], None] | None = None
    ) -> None:
        self.started = time.monotonic()
        self.on_wait = on_wait
        """Called at the first try that finds the lock held (``Store.lock_waits``)."""
        self.timeout = timeout
        self.deadline = self.started + timeout
        self.spin = spin
        """Seconds this writer may wait blocking its thread before ``_LockBusy`` (None: the whole wait)."""
        self.target = target
        self.delay = LOCK_WAIT_FIRST
        self.tries = 0

    def next_delay(self) -> float:
        """How long to sleep before the next try; ``WriteLockTimeout`` once the deadline passed."""
        if self.tries == 0 and self.on_wait is not None:
            self.on_wait()
        now = time.monotonic()
        left = self.deadline - now
        if left <= 0:
            raise WriteLockTimeout(
                f"the SQLite store {self.target} stayed locked by another writer (another process: a "
                f"worker, `toolweave serve`, a bulk submit) for {self.timeout:g} s after {self.tries} tries; "
                "this transaction did not begin and wrote nothing"
            )
        delay = min(self.delay * (0.5 + _JITTER.random()), left)
        self.delay = min(self.delay * 2, LOCK_WAIT_CAP)
        self.tries += 1
        return delay

    def blocking(self, delay: float) -> bool:
        """Whether to sleep ``delay`` on this thread (False: past the spin, wait on the loop)."""
        return self.spin is None or time.monotonic() + delay <= self.started + self.spin


def _try_begin_immediate(cursor: Any) -> bool:
    """One try at SQLite's write lock, not waiting: True when the transaction began."""
    cursor.execute("PRAGMA busy_timeout=0")
    try:
        cursor.execute("BEGIN IMMEDIATE")
        return True
    except sqlite3.OperationalError as exc:
        if (getattr(exc, "sqlite_errorcode", 0) & 0xFF) != SQLITE_BUSY:
            raise
        return False
    finally:
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")


def _begin_write(cursor: Any, wait: _LockWait) -> None:
    """``BEGIN IMMEDIATE``, waiting for the write lock as ``wait`` says (``_LockBusy`` past its spin)."""
    while not _try_begin_immediate(cursor):
        delay = wait.next_delay()
        if not wait.blocking(delay):
            raise _LockBusy(delay)
        time.sleep(delay)


def _sqlite_begin(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
