"""Many rows' writes as one PostgreSQL statement: a one-row ``INSERT … VALUES (:a, :b)`` or
``UPDATE … SET … WHERE key = :k`` sent for N parameter rows becomes one statement over one JSON
parameter (``jsonb_to_recordset``), not N statements.

psycopg's ``executemany`` in pipeline mode sends one Bind/Execute per row, each flushed on its own
socket write, and the server runs each as a statement; a batch of group commit wrote about 13 rows
per chain job that way (``bench/statements.py``). One statement per table costs one message, one
executor start and one JSON parameter encoded by orjson.

The rewrite is made from the statement's own text and the table's column types (read from
PostgreSQL's catalog once per store: ``Columns``). A statement it does not understand, a parameter
whose type it cannot tell, or a value that JSON would not carry exactly (a JSON column given text,
a float that is not finite, an integer beyond 64 bits) keeps the old way: ``plan`` answers None and
the caller runs ``executemany``. An UPDATE whose rows name the same row twice keeps it too (one
statement would change that row once).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from enum import Enum
from typing import Any

import orjson

Columns = Mapping[str, Mapping[str, str]]
"""Column types by table and column (``format_type`` names: ``text``, ``double precision``, …)."""

COLUMNS_SQL = (
    "SELECT c.relname AS table_name, a.attname AS column_name, format_type(a.atttypid, a.atttypmod) AS type "
    "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
    "WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped"
)

def column_types(dbapi: Any) -> dict[str, dict[str, str]]:
    """The column types of the store's tables, read on a DB-API connection outside any
    transaction of ours."""
    with dbapi.cursor() as cur:
        cur.execute(COLUMNS_SQL)
        found: dict[str, dict[str, str]] = {}
        for table, column, kind in cur.fetchall():
            found.setdefault(table, {})[column] = kind
    dbapi.rollback()
    return found


_PARAM = re.compile(r"(?<![:\w]):([a-zA-Z_]\w*)")
_INSERT = re.compile(r"^INSERT INTO (\w+) \(([^()]*)\) VALUES \(([^()]*)\)( RETURNING [\w, ]+)?$", re.S)
_UPDATE = re.compile(r"^UPDATE (\w+) SET (.*?) WHERE (.*?)( RETURNING [\w, *]+)?$", re.S)
_EQUALS = re.compile(r"(?<![.\w])(\w+) = :(\w+)(?=,|\)| AND | WHERE | RETURNING |$)")
"""``column = :param`` standing alone (not inside a larger expression): the parameter has the
column's type."""
_COALESCE = re.compile(r"COALESCE\(:(\w+), (\w+)\)")
_JSON = "jsonb"
_PREFIX = "_p_"
_ORDINAL = "_p__o"
_OWN = frozenset({"rows", "count"})
_AS_IS = frozenset({str, bool, type(None)})
"""The one-statement form's own parameters."""


class Plan:
    """How one statement goes for many rows: its one-statement text (``sql``, with the parameter
    ``:rows``), the parameters it reads and their types, the parameters whose values name the row
    an UPDATE changes, and for an INSERT that returns rows, which parameters it can match them by."""

    __slots__ = ("_fields", "keys", "matches", "params", "sql", "types", "update")

    def __init__(self, sql: str, params: tuple[str, ...], types: dict[str, str], keys: tuple[str, ...],
                 matches: tuple[tuple[str, str], ...], update: bool) -> None:
        self.sql, self.params, self.types, self.keys, self.matches, self.update = sql, params, types, keys, matches, update
        self._fields = tuple((name, _PREFIX + name, types[name] == _JSON) for name in params)

    def rows(self, rows: Sequence[Mapping[str, Any]], *, ordinal: bool) -> str | None:
        """The ``:rows`` parameter (JSON text) for these parameter rows, or None when one of them
        cannot go this way (see the module's docstring)."""
        if self.keys and len({tuple(_key(r.get(k)) for k in self.keys) for r in rows}) != len(rows):
            return None  # an UPDATE naming one row twice
        fields = self._fields
        out: list[dict[str, Any]] = []
        for index, row in enumerate(rows):
            item: dict[str, Any] = {_ORDINAL: index} if ordinal else {}
            for name, key, json in fields:
                value: Any = row.get(name)
                kind = type(value)
                if kind in _AS_IS:
                    if json and kind is str:
                        return None  # text for a JSON column: one statement per row decides
                elif kind is float:
                    if not math.isfinite(value):
                        return None
                elif kind is dict or kind is list:
                    if not json:
                        return None
                elif kind is int:
                    if not -(2**63) <= value < 2**63:
                        return None
                elif kind is Decimal:
                    value = str(value)
                elif isinstance(value, Enum) and not json:
                    value = value.value
                else:
                    return None
                item[key] = value
            out.append(item)
        try:
            # as ``codec.dumps`` writes a JSON column (``default=str``: a Decimal inside a value)
            return orjson.dumps(out, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        except TypeError:  # what orjson refuses inside a JSON value (an integer beyond 64 bits)
            return None

    def match(self, rows: Sequence[Mapping[str, Any]]) -> tuple[str, str] | None:
        """(parameter, returned column) that tells which row an INSERT's RETURNING row belongs to:
        the first parameter whose values are all text and different."""
        for param, column in self.matches:
            values = [r.get(param) for r in rows]
            if all(type(v) is str for v in values) and len(set(values)) == len(values):
                return param, column
        return None


def _key(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)


@functools.lru_cache(maxsize=256)
def _plan_for(sql: str, columns_id: int) -> Plan | None:
    columns = _COLUMN_SETS[columns_id]
    insert = _INSERT.match(sql)
    if insert is not None:
        return _insert_plan(columns, *insert.groups())
    update = _UPDATE.match(sql)
    if update is not None:
        return _update_plan(columns, *update.groups())
    return None


_COLUMN_SETS: dict[int, Columns] = {}


def plan(sql: str, columns: Columns | None) -> Plan | None:
    """The plan for running ``sql`` (one row's statement, ``:name`` parameters) over many rows in
    one statement, or None when it keeps ``executemany``."""
    if not columns:
        return None
    _COLUMN_SETS.setdefault(id(columns), columns)
    return _plan_for(sql, id(columns))


def _insert_plan(columns: Columns, table: str, names: str, values: str, returning: str | None) -> Plan | None:
    types = columns.get(table)
    cols = [c.strip() for c in names.split(",")]
    items = [v.strip() for v in values.split(",")]
    if types is None or len(cols) != len(items):
        return None
    params: dict[str, str] = {}
    for col, item in zip(cols, items, strict=True):
        for name in _PARAM.findall(item):
            if item != ":" + name or col not in types:
                return None  # a parameter inside an expression: its type is not the column's
            params[name] = types[col]
    if not params or _OWN & set(params):
        return None
    select = ", ".join(_PARAM.sub(lambda m: f"v.{_PREFIX}{m.group(1)}", item) for item in items)
    matches: tuple[tuple[str, str], ...] = ()
    if returning:
        matches = tuple((item[1:], col) for col, item in zip(cols, items, strict=True) if item.startswith(":"))
        returned = [c.strip() for c in returning[len(" RETURNING "):].split(",")]
        returning = " RETURNING " + ", ".join(dict.fromkeys([*returned, *(col for _, col in matches)]))
    # in the rows' order (events of a run are read in the order of their ids)
    sql = (f"INSERT INTO {table} ({', '.join(cols)}) SELECT {select} FROM {_recordset(params, ordinal=True)} "
           f"ORDER BY v.{_ORDINAL}{returning or ''}")
    return Plan(sql, tuple(params), params, (), matches, update=False)


def _update_plan(columns: Columns, table: str, sets: str, where: str, returning: str | None) -> Plan | None:
    types = columns.get(table)
    if types is None:
        return None
    params: dict[str, str] = {}
    for text in (sets, where):
        for col, name in _EQUALS.findall(text):
            if col in types:
                params.setdefault(name, types[col])
        for name, col in _COALESCE.findall(text):
            if col in types:
                params.setdefault(name, types[col])
    used = set(_PARAM.findall(sets + " " + where))
    if not used or used - set(params) or used & _OWN:
        return None
    keys = tuple(sorted(name for col, name in _EQUALS.findall(where) if col in types))
    if not keys:
        return None

    def sub(text: str) -> str:
        return _PARAM.sub(lambda m: f"v.{_PREFIX}{m.group(1)}", text)

    returned = ""
    if returning:
        fields = [c.strip() for c in returning[len(" RETURNING "):].split(",")]
        returned = " RETURNING " + ", ".join(f"{table}.*" if f == "*" else f"{table}.{f}" for f in fields)
        returned += f", v.{_ORDINAL}"
    wanted = {name: params[name] for name in sorted(used)}
    sql = f"UPDATE {table} SET {sub(sets)} FROM {_recordset(wanted, ordinal=bool(returning))} WHERE {sub(where)}{returned}"
    return Plan(sql, tuple(wanted), wanted, keys, (), update=True)


def _recordset(params: Mapping[str, str], *, ordinal: bool = False) -> str:
    fields = [f"{_PREFIX}{name} {kind}" for name, kind in params.items()]
    if ordinal:
        fields.append(f"{_ORDINAL} integer")
    # ``LIMIT :count`` (the number of rows) keeps the planner's estimate near the truth: a set
    # function counts as 100 rows, and an UPDATE joined to 100 rows scanned its whole table
    return f"(SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x({', '.join(fields)}) LIMIT :count) v"


ORDINAL = _ORDINAL
