"""The DB-API connections of a store: its URL normalised, one connection per thread kept open
(``_Connections``), SQLite's pragmas, and how a lost PostgreSQL connection is recognised.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
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

        pg = psycopg.connect(self.target, autocommit=False)
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


def _sqlite_begin(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
