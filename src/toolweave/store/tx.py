"""One transaction's statements: ``Tx`` runs plain SQL (``:name`` parameters) on a DB-API cursor
(on PostgreSQL ``store/wire.py``'s, pipelined for writers: see ``store/db.py``), with writes queued and sent together, and many
rows' writes of one statement sent as one statement (``store/multirow.py``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any

from toolweave.store import multirow
from toolweave.store.codec import _ROW_PLANS, _Decoders, _encode, _row_plan

NOTIFY_CHANNEL = "toolweave_tasks"

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
        "_batch", "_batch_keys", "_checks", "_indexed", "_results", "columns", "committed", "cursor", "deferred",
        "dialect", "event_runs", "pipeline", "statements", "woken",
    )

    def __init__(self, cursor: Any, dialect: str, pipeline: Any = None, columns: multirow.Columns | None = None) -> None:
        self.cursor = cursor
        self.columns = columns
        """The tables' column types (PostgreSQL): many rows' writes go as one statement (``multirow``)."""
        self.dialect = dialect
        self.pipeline = pipeline
        """The ``Wire`` (``store/wire.py``) when this transaction's statements are pipelined, else None."""
        self.statements = 0
        """Statements whose results came back (a transaction that failed at 0 never began)."""
        self._batch: dict[str, list[tuple[Mapping[str, Any], int, Callable[[Row | None], None] | None]]] = {}
        self._batch_keys: set[Hashable] = set()
        self._checks: list[tuple[Any, int, str]] = []
        self._results: list[tuple[Callable[[], list[Row | None]], list[Callable[[Row | None], None] | None]]] = []
        self.event_runs: set[str] = set()
        """Runs this transaction appends events to (``Store.on_events`` hears of them at commit)."""
        self.woken = False
        self._indexed = False
        self.deferred: dict[str, list[Mapping[str, Any]]] = {}
        self.committed: list[Callable[[], None]] = []

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once this transaction has committed (never if it rolls back): what a
        process remembers about the database (a cache of rows known to exist) must not run ahead
        of it."""
        self.committed.append(callback)

    def defer(self, sql: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Queue insert rows that nothing reads back in this transaction; they are written just
        before the commit, in the order queued, as one statement on PostgreSQL (``multirow``;
        e.g. the events of a whole batch) and as multi-row INSERTs on SQLite (``_insert_sqlite``)."""
        self.deferred.setdefault(sql, []).extend(rows)

    def flush_deferred(self) -> None:
        for sql, rows in self.deferred.items():
            if self.dialect == "sqlite" and len(rows) > 1 and (insert := _sqlite_insert(sql)) is not None:
                self._insert_sqlite(insert, rows)
            else:
                self.many(sql, rows)
        self.deferred.clear()

    def _insert_sqlite(self, insert: tuple[str, tuple[str, ...]], rows: Sequence[Mapping[str, Any]]) -> None:
        """Deferred insert rows as multi-row ``INSERT … VALUES (…), (…)`` statements on SQLite, in
        chunks of 32, 16, … 1 rows (a few statement texts, each prepared once). ``executemany``
        runs the statement once per row, and an ``AUTOINCREMENT`` table (``events``) reads and
        writes its counter in ``sqlite_sequence`` at each run: about 5,700 instructions per row
        more (docs/benchmarks.md, "2026-12-05"). The rows go in the order queued."""
        head, names = insert
        if self._batch:
            self._send_batch()
        done = 0
        while done < len(rows):
            size = 32
            while size > len(rows) - done:
                size //= 2
            chunk = rows[done:done + size]
            values: list[Any] = []
            for row in chunk:
                encoded = _encode(row)
                values.extend(encoded[name] for name in names)
            self.cursor.execute(_sqlite_values(head, len(names), size), values)
            self.statements += 1
            done += size

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
            if self._multirow(self.cursor, sql, rows) is not None:
                return
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
        read = self._multirow(cur, sql, rows, returning=True)
        if read is not None:
            return read
        cur.executemany(_sql_for(sql, self.dialect), [_encode(r) for r in rows], returning=True)
        if self.pipeline is None:
            self.statements += 1
        return lambda: self._each_rows(sql, cur)

    def expect(self, sql: str, params: Mapping[str, Any], *, key: Hashable) -> bool:
        """A compare-and-set whose outcome the caller can predict: it changes one row (``key``
        names it). Returns whether it did. In a pipelined transaction it is queued with the
        other writes (``put``) and taken as done; it is checked by the server before the commit, and a
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
        hears the row it returned (an INSERT's generated id), when the statements come back with the
        commit (before the transaction function's caller sees its result): it only records what it
        hears, it must not fail, the transaction being committed by then."""
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
            expected = sum(rows for _, rows, _ in entries)
            # a compare-and-set is checked by the server (``checked``): one that did not apply
            # fails its statement, so the commit sent after it does not happen
            checked = bool(expected) and not returning and self.pipeline is not None
            read = None
            if len(entries) == 1:
                params = _encode(entries[0][0])
                if checked:
                    params[EXPECTED] = expected
                cur.execute(_sql_for(checked_sql(sql) if checked else sql, self.dialect), params)
            else:
                read = self._multirow(cur, sql, [p for p, _, _ in entries], returning=returning,
                                      expected=expected if checked else None)
                if read is None:
                    if checked:
                        many = [{**_encode(p), EXPECTED: rows} for p, rows, _ in entries]
                        cur.executemany(_sql_for(checked_sql(sql), self.dialect), many)
                    else:
                        cur.executemany(_sql_for(sql, self.dialect), [_encode(p) for p, _, _ in entries], returning=returning)
            if expected and not checked:
                self._checks.append((cur, expected, sql))
            if returning:
                self._results.append((read or self._reader(sql, cur, len(entries)), thens))

    def _reader(self, sql: str, cur: Any, count: int) -> Callable[[], list[Row | None]]:
        if count > 1:
            return lambda: self._each_rows(sql, cur)
        return lambda: [next(iter(self._rows(sql, cur)), None)]

    def _multirow(
        self, cur: Any, sql: str, rows: Sequence[Mapping[str, Any]], *, returning: bool = False,
        expected: int | None = None,
    ) -> Callable[[], list[Row | None]] | None:
        """Send ``sql`` for many parameter rows as one statement (PostgreSQL; ``multirow``). Returns
        the function that gives each row's returned row (None when not returned), or None when the
        statement must go by ``executemany``. With ``expected`` the statement fails unless it
        changes that many rows (``checked_sql``)."""
        if len(rows) < 2 or self.dialect != "postgresql":
            return None
        plan = multirow.plan(sql, self.columns)
        if plan is None:
            return None
        match = plan.match(rows) if returning and not plan.update else None
        if returning and not plan.update and match is None:
            return None
        param = plan.rows(rows, ordinal=not plan.update or returning)
        if param is None:
            return None
        wrap = plan.update and not self._indexed
        if wrap:
            self.cursor.execute(_INDEX_JOINS)
        if expected is None:
            cur.execute(_sql_for(plan.sql, self.dialect), {"rows": param, "count": len(rows)})
        else:
            cur.execute(_sql_for(checked_sql(plan.sql), self.dialect), {"rows": param, "count": len(rows), EXPECTED: expected})
        if wrap:
            self.cursor.execute(_ANY_JOINS)
        if self.pipeline is None:
            self.statements += 1

        def read() -> list[Row | None]:
            found: list[Row | None] = [None] * len(rows)
            if match is None:
                for row in self._rows(plan.sql, cur):
                    found[row.pop(multirow.ORDINAL)] = row
                return found
            where = {r[match[0]]: i for i, r in enumerate(rows)}
            for row in self._rows(plan.sql, cur):
                found[where[row[match[1]]]] = row
            return found

        return read

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
        PostgreSQL the cached plan is checked against the result's column count: a cursor's
        ``description`` is built anew on each use, which cost more than reading the rows."""
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
        """Before the commit: send the queued writes. Their compare-and-sets are checked by the
        server (``checked_sql``): the commit sent after them fails when one did not apply, and
        ``Store`` runs the transaction again unpipelined; so the writes and the commit cost one
        round trip. A compare-and-set that must be checked here (one whose statement also returns
        rows) makes the transaction wait for its result first; raises ``Unexpected`` when one did
        not change the rows it expected to."""
        if self.pipeline is None:
            return
        if self._batch:
            self._send_batch()
        if not self._checks:
            return
        self.sync()
        for cur, expected, sql in self._checks:
            if cur.rowcount != expected:
                raise Unexpected(f"{cur.rowcount} rows instead of {expected}: {' '.join(sql.split())[:200]}")
        self._checks.clear()

    def returned(self) -> None:
        """Once the transaction's statements have come back (at its commit): tell queued writes'
        ``then`` callbacks the rows they returned."""
        results, self._results = self._results, []
        for read, thens in results:
            for then, row in zip(thens, read(), strict=True):
                if then is not None:
                    then(row)

    def by_index(self) -> None:
        """Plan the rest of this transaction's statements by index (PostgreSQL, local to the
        transaction): for transactions whose statements all find rows by key (the engine's
        record and claim), whose tables' statistics may lag behind their growth (see
        ``_INDEX_JOINS``)."""
        if self.dialect == "postgresql" and not self._indexed:
            self._indexed = True
            if self._batch:
                self._send_batch()
            self.cursor.execute(_INDEX_JOINS)

    def among(self, column: str, name: str, values: Sequence[str]) -> tuple[str, dict[str, Any]]:
        """``column`` is one of ``values``: the module's ``among`` in this transaction's dialect."""
        return among(self.dialect, column, name, values)

    def wake(self) -> None:
        """Wake workers once this transaction commits (new or re-queued work)."""
        if not self.woken:
            self.woken = True
            if self.dialect == "postgresql":
                self.q(f"NOTIFY {NOTIFY_CHANNEL}")

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"


_INDEX_JOINS = (
    "SELECT set_config('enable_seqscan', 'off', true), set_config('enable_hashjoin', 'off', true), "
    "set_config('enable_mergejoin', 'off', true), set_config('plan_cache_mode', 'force_generic_plan', true)"
)
"""Before a many-row UPDATE (``multirow``): find each row by its key's index. Its rows are a JSON
parameter the planner counts as a handful, and a table whose statistics lag behind its growth (a
new store filling up before autovacuum analyzed it) looked small enough to scan whole and hash:
every batch then read every step row of every run. One row at a time, a key always used its index.
The setting is local to the transaction and set back right after the statement (``Tx.by_index``
keeps it for a whole transaction).

The same transactions use a prepared statement's generic plan, made once per connection: with
every join by index the custom plan PostgreSQL would otherwise make at each execution (it does
when a parameter such as a ``LIMIT`` makes the custom plan look cheaper) is the same plan, and
planning it cost more than running it (the claim: 0.4 ms of planning per execution,
``docs/benchmarks.md``)."""
_ANY_JOINS = (
    "SELECT set_config('enable_seqscan', 'on', true), set_config('enable_hashjoin', 'on', true), "
    "set_config('enable_mergejoin', 'on', true), set_config('plan_cache_mode', 'auto', true)"
)


class Unexpected(Exception):
    """A compare-and-set taken as done in a pipelined transaction did not apply (``Tx.expect``)."""


EXPECTED = "_tw_expected"
"""The parameter of a checked statement (``checked_sql``): how many rows it must change."""
_CHECK_FAILED = "toolweave: a compare-and-set did not apply"


@functools.lru_cache(maxsize=256)
def checked_sql(sql: str) -> str:
    """``sql`` (an UPDATE without RETURNING) as a statement that fails unless it changes
    ``:_tw_expected`` rows: the count goes through a cast to integer of a text that is not a number
    when it is wrong, so the server raises (SQLSTATE 22P02, ``_CHECK_FAILED`` in the message). In a
    pipeline a failed statement aborts what was sent after it, the commit too: a compare-and-set
    taken as done is checked by the server in the commit's round trip (``check_failed``)."""
    return (
        f"WITH changed AS ({sql} RETURNING 1) SELECT CAST(CASE WHEN count(*) = CAST(:{EXPECTED} AS bigint) "
        f"THEN NULL ELSE '{_CHECK_FAILED}: ' || count(*) || ' rows' END AS integer) FROM changed"
    )


def check_failed(exc: BaseException) -> bool:
    """Whether ``exc`` is a checked statement's failure (``checked_sql``)."""
    return getattr(exc, "sqlstate", None) == "22P02" and _CHECK_FAILED in str(exc)


_PLAIN_INSERT = re.compile(r"^(INSERT INTO \w+ \([\w, ]+\) VALUES) \(((?::\w+, )*:\w+)\)$")


@functools.lru_cache(maxsize=32)
def _sqlite_insert(sql: str) -> tuple[str, tuple[str, ...]] | None:
    """``INSERT INTO t (a, b) VALUES (:a, :b)`` as its head and its parameters' names, or None for
    any other statement."""
    found = _PLAIN_INSERT.match(sql)
    if found is None:
        return None
    return found.group(1), tuple(name.strip()[1:] for name in found.group(2).split(","))


@functools.lru_cache(maxsize=64)
def _sqlite_values(head: str, width: int, rows: int) -> str:
    one = "(" + ", ".join(["?"] * width) + ")"
    return head + " " + ", ".join([one] * rows)


@functools.lru_cache(maxsize=512)
def _sql_for(sql: str, dialect: str) -> str:
    if dialect == "postgresql":
        return _NAMED.sub(r"%(\1)s", sql.replace("%", "%%"))
    return sql.replace(" FOR UPDATE SKIP LOCKED", "").replace(" FOR UPDATE", "")


def one_of(column: str, values: Iterable[Any]) -> str:
    """``column`` holds one of these constant values (statuses, kinds), as comparisons:
    ``(status = 'a' OR status = 'b' OR …)``. SQLite tests ``column IN ('a', 'b', 'c')`` — a list of
    three constants or more — by building a temporary table each time the statement runs (about
    30,000 instructions; comparisons about 1,000: docs/benchmarks.md, "2026-12-05"); PostgreSQL
    tests either the same way."""
    texts = [str(getattr(v, "value", v)) for v in values]
    assert texts and all(t.replace("_", "").isalnum() for t in texts), texts
    return "(" + " OR ".join(f"{column} = '{t}'" for t in texts) + ")"


def in_list(prefix: str, values: Sequence[Any]) -> tuple[str, dict[str, Any]]:
    """``(:p0, :p1, …)`` and its parameters, for ``column IN`` a list of values."""
    params = {f"{prefix}{i}": value for i, value in enumerate(values)}
    return "(" + ", ".join(":" + name for name in params) + ")", params


def among(dialect: str, column: str, name: str, values: Sequence[str]) -> tuple[str, dict[str, Any]]:
    """``column`` is one of ``values`` (text), and its parameters. On PostgreSQL ``column =
    ANY(:name)`` with the values as one array: the statement's text is the same however many
    values there are, so it is prepared once (``store/wire.py``) and PostgreSQL keeps its plan (an ``IN (:p0, :p1, …)``
    list is a new statement for every length, planned anew at each execution). On SQLite an
    ``IN`` list (``in_list``)."""
    if dialect == "postgresql":
        return f"{column} = ANY(CAST(:{name} AS text[]))", {name: text_array(values)}
    marks, params = in_list(name, values)
    return f"{column} IN {marks}", params


def text_array(values: Sequence[str]) -> str:
    """A PostgreSQL array literal of text values (every element quoted, so none is read as NULL)."""
    return "{" + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values) + "}"


_PG_ROWS = (2, 9)
"""libpq's PGRES_TUPLES_OK and PGRES_SINGLE_TUPLE: a result that has rows."""

def _decode(names: tuple[str, ...], decoders: _Decoders, values: Any) -> Row:
    row = Row(zip(names, values, strict=True))
    for name, decoder in decoders:
        value = row[name]
        if value is not None:
            row[name] = decoder(value)
    return row
