"""PostgreSQL transactions straight on libpq (``psycopg.pq``): what ``Tx`` sends is buffered and goes
to the server in one socket write at the transaction's next read or its commit, each statement as
a named prepared statement made once per connection, and the results are read back without
psycopg's cursor and pipeline machinery.

psycopg's pipeline sends and polls the socket at every statement (a flush and a ``poll`` per
``execute``, results matched to cursors in Python); a record transaction of a dozen statements
spent as much of the worker's time there as in the engine (``docs/benchmarks.md``, "Where the time
goes on PostgreSQL"). Here a statement costs the conversion of its parameters (psycopg's
``Transformer``, in C) and a ``PQsendQueryPrepared`` into libpq's buffer; a round trip is one
``PQpipelineSync``, one write, and the results read as they come.

``Wire.cursor()`` answers what ``Tx`` asks of a DB-API cursor (``execute``, ``executemany``,
``fetchone``/``fetchall``, ``nextset``, ``rowcount``, ``description``, ``pgresult``). A pipelined
transaction (``Wire(conn, pipelined=True)``) sends its statements without waiting and waits at
``sync``; otherwise every statement waits for its result, as psycopg's would. The transaction's
``BEGIN`` goes with its first statements and its ``COMMIT`` with its last writes (``commit``).
"""

from __future__ import annotations

import contextlib
import functools
import re
import select
import weakref
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from psycopg import errors, pq
from psycopg.adapt import PyFormat, Transformer

_TUPLES_OK = pq.ExecStatus.TUPLES_OK
_COMMAND_OK = pq.ExecStatus.COMMAND_OK
_FATAL_ERROR = pq.ExecStatus.FATAL_ERROR
_PIPELINE_ABORTED = pq.ExecStatus.PIPELINE_ABORTED
_PIPELINE_SYNC = pq.ExecStatus.PIPELINE_SYNC
_BAD = pq.ConnStatus.BAD
_NAMED = re.compile(r"%\((\w+)\)s|%%")


@functools.lru_cache(maxsize=1024)
def _query(sql: str) -> tuple[bytes, tuple[str, ...]]:
    """A statement in psycopg's form (``%(name)s``, ``%%``) as libpq's (``$1``) and its parameters' names in order."""
    names: dict[str, int] = {}

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "%"
        return f"${names.setdefault(name, len(names) + 1)}"

    return _NAMED.sub(number, sql).encode(), tuple(names)


class _Prepared:
    """The statements prepared on one connection: (query, parameter types) → name."""

    __slots__ = ("count", "names")

    def __init__(self) -> None:
        self.names: dict[tuple[bytes, tuple[int, ...]], bytes] = {}
        self.count = 0


MAX_PREPARED = 200
"""Prepared statements kept per connection (the engine's own are a few dozen; statements made
with their values in the text, such as ``IN`` lists of each length, are the rest)."""
_PREPARED: weakref.WeakKeyDictionary[Any, _Prepared] = weakref.WeakKeyDictionary()


class Wire:
    """One transaction's statements on a psycopg connection's libpq connection (see the module's docstring)."""

    __slots__ = ("_error", "_new", "_poll", "_prepared", "_sent", "_unsynced", "conn", "pgconn", "pipelined", "transformer")

    def __init__(self, conn: Any, *, pipelined: bool) -> None:
        self.conn = conn
        self.pgconn = conn.pgconn
        self.pipelined = pipelined
        prepared = _PREPARED.get(conn)
        if prepared is None:
            prepared = _PREPARED[conn] = _Prepared()
        self._prepared = prepared
        self._new: list[tuple[bytes, tuple[int, ...]]] = []
        """Statements prepared by this transaction (forgotten if it fails: their names are not reused)."""
        self.transformer = Transformer(conn)
        self._sent: deque[tuple[_Cursor, int] | None] = deque()
        """Who hears each sent command's result, in the order sent: a cursor and which of its
        ``execute`` calls sent it (a cursor run again hears only its last), or None (only checked)."""
        self._unsynced = False
        self._error: BaseException | None = None
        self._poll = select.poll()
        self.pgconn.enter_pipeline_mode()

    def cursor(self) -> _Cursor:
        return _Cursor(self)

    # --- sending -----------------------------------------------------------------------------------

    def command(self, sql: bytes) -> None:
        """A statement without parameters or rows (``BEGIN``, ``COMMIT``), checked at the next sync."""
        self.pgconn.send_query_params(sql, None)
        self._sent.append(None)
        self._unsynced = True

    def send(self, cur: _Cursor, sql: str, params: Mapping[str, Any] | None) -> None:
        query, names = _query(sql)
        transformer = self.transformer
        if names:
            assert params is not None
            values = transformer.dump_sequence([params[name] for name in names], [PyFormat.AUTO] * len(names))
            types: tuple[int, ...] = transformer.types or ()
            formats = transformer.formats
        else:
            values, types, formats = [], (), []
        key = (query, types)
        prepared = self._prepared.names
        name = prepared.pop(key, None)
        if name is None:
            name = self._prepare(key)
        prepared[key] = name  # the most recently used last
        pg = self.pgconn
        pg.send_query_prepared(name, values, param_formats=formats)
        self._sent.append((cur, cur._run))
        self._unsynced = True
        if not self.pipelined:
            self.sync()

    def _prepare(self, key: tuple[bytes, tuple[int, ...]]) -> bytes:
        """Prepare a statement under a new name; past ``MAX_PREPARED`` the least recently used
        one is deallocated."""
        prepared = self._prepared
        names = prepared.names
        if len(names) >= MAX_PREPARED:
            old = next(iter(names))
            self.command(b"DEALLOCATE " + names.pop(old))
        prepared.count += 1
        name = b"tw_%d" % prepared.count
        self._new.append(key)
        self.pgconn.send_prepare(name, key[0], param_types=key[1])
        self._sent.append(None)
        return name

    # --- reading -----------------------------------------------------------------------------------

    def sync(self) -> None:
        """Send what is buffered and read every result up to it; raises the first statement's error."""
        if not self._unsynced:
            return
        pg = self.pgconn
        pg.pipeline_sync()
        self._unsynced = False
        self._flush()
        sent = self._sent
        current: list[pq.abc.PGresult] = []
        while True:
            if pg.status == _BAD:
                raise errors.OperationalError(pg.get_error_message())
            while pg.is_busy():
                self._wait(select.POLLIN)
                pg.consume_input()
            res = pg.get_result()
            if res is None:
                if current:
                    self._deliver(sent.popleft() if sent else None, current)
                    current = []
                continue
            if res.status == _PIPELINE_SYNC:
                break
            current.append(res)
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _deliver(self, to: tuple[_Cursor, int] | None, results: list[pq.abc.PGresult]) -> None:
        res = results[-1]
        status = res.status
        if status == _FATAL_ERROR:
            if self._error is None or isinstance(self._error, errors.PipelineAborted):
                self._error = errors.error_from_result(res, encoding=self.conn.info.encoding)
            return
        if status == _PIPELINE_ABORTED:
            if self._error is None:
                self._error = errors.PipelineAborted("pipeline aborted")
            return
        if to is not None and to[0]._run == to[1]:
            to[0]._results.append(res)

    def _flush(self) -> None:
        pg = self.pgconn
        while pg.flush():
            self._wait(select.POLLOUT | select.POLLIN)
            pg.consume_input()

    def _wait(self, events: int) -> None:
        fd = self.pgconn.socket
        poll = self._poll
        poll.register(fd, events)
        try:
            while not poll.poll(1000):
                if self.pgconn.status == pq.ConnStatus.BAD:
                    raise errors.OperationalError("the connection is lost")
        finally:
            poll.unregister(fd)

    # --- the end -----------------------------------------------------------------------------------

    def commit(self) -> None:
        """Send ``COMMIT`` with what is buffered, and wait for all of it (raises its first error)."""
        self.command(b"COMMIT")
        self.sync()
        self._new.clear()
        self.pgconn.exit_pipeline_mode()

    def close(self) -> None:
        """After a failure: read what is still under way and leave pipeline mode (the caller rolls
        back); the statements this transaction prepared are forgotten."""
        for key in self._new:
            self._prepared.names.pop(key, None)
        self._new.clear()
        # the transaction failed already: its own error is the one raised; a connection lost is
        # dropped by the caller
        with contextlib.suppress(Exception):
            self._unsynced = self._unsynced or bool(self._sent)
            self.sync()
        self._sent.clear()
        if self.pgconn.pipeline_status != pq.PipelineStatus.OFF and self.pgconn.status == pq.ConnStatus.OK:
            with contextlib.suppress(Exception):
                self.pgconn.exit_pipeline_mode()


class _Cursor:
    """What ``Tx`` uses of a DB-API cursor, on a ``Wire``: the results of one ``execute`` (or of
    each row of an ``executemany``)."""

    __slots__ = ("_count", "_index", "_pos", "_results", "_run", "_wire")

    def __init__(self, wire: Wire) -> None:
        self._wire = wire
        self._results: list[pq.abc.PGresult] = []
        self._count = 1
        self._index = 0
        self._pos = 0
        self._run = 0

    @property
    def connection(self) -> _Connection:
        return _Connection(self._wire)

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> _Cursor:
        self._results = []
        self._count, self._index, self._pos = 1, 0, 0
        self._run += 1
        self._wire.send(self, sql, params)
        return self

    def executemany(self, sql: str, rows: Sequence[Mapping[str, Any]], *, returning: bool = False) -> None:
        self._results = []
        self._count, self._index, self._pos = len(rows), 0, 0
        self._run += 1
        for row in rows:
            self._wire.send(self, sql, row)

    def _ready(self) -> None:
        if len(self._results) < self._count:
            self._wire.sync()

    @property
    def pgresult(self) -> pq.abc.PGresult | None:
        results = self._results
        return results[self._index] if self._index < len(results) else None

    @property
    def rowcount(self) -> int:
        self._ready()
        return sum(res.command_tuples or 0 for res in self._results)

    @property
    def description(self) -> list[tuple[str]] | None:
        self._ready()
        res = self.pgresult
        if res is None or res.status != _TUPLES_OK:
            return None
        return [(res.fname(i).decode(),) for i in range(res.nfields)]  # type: ignore[union-attr]

    def fetchall(self) -> list[tuple[Any, ...]]:
        self._ready()
        res = self.pgresult
        if res is None or res.status != _TUPLES_OK:
            return []
        transformer = self._wire.transformer
        transformer.set_pgresult(res)
        rows: list[tuple[Any, ...]] = transformer.load_rows(self._pos, res.ntuples, tuple)
        self._pos = res.ntuples
        return rows

    def fetchone(self) -> tuple[Any, ...] | None:
        self._ready()
        res = self.pgresult
        if res is None or res.status != _TUPLES_OK or self._pos >= res.ntuples:
            return None
        transformer = self._wire.transformer
        transformer.set_pgresult(res)
        row: tuple[Any, ...] = transformer.load_row(self._pos, tuple)
        self._pos += 1
        return row

    def nextset(self) -> bool:
        self._ready()
        if self._index + 1 < len(self._results):
            self._index += 1
            self._pos = 0
            return True
        return False

    def close(self) -> None:
        pass


class _Connection:
    """A cursor's ``connection``: new cursors on the same wire (``Tx._cursor``)."""

    __slots__ = ("_wire",)

    def __init__(self, wire: Wire) -> None:
        self._wire = wire

    def cursor(self) -> _Cursor:
        return _Cursor(self._wire)
