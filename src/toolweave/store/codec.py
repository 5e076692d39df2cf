"""How values go into SQL parameters and come out of rows: JSON columns as text (orjson, the
standard library for what orjson refuses), booleans and decimals by column name, and per statement
the plan of which columns to decode (kept until the schema is upgraded).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from enum import Enum
from typing import Any

import orjson

JSON_COLUMNS = frozenset(
    {
        "tool_shas", "origin", "job_inputs", "final_outputs", "error", "generation_ids", "outputs",
        "request_payload", "response_payload", "data", "target", "payload", "value", "body", "work_outputs",
        "work_error", "item", "child_outputs", "child_error", "random_inputs", "answer", "approvers", "budget",
    }
)
BOOL_COLUMNS = frozenset({"cancel_requested", "using_fallback", "skipped_by_error", "credits"})
DECIMAL_COLUMNS = frozenset({"cost_usd", "confirm_above"})


_PLAIN = frozenset({str, int, float, type(None), bool})


def dumps(value: Any) -> str:
    """JSON text for a column: orjson (a tenth of the stdlib's time, which showed in every step),
    the standard library for what orjson refuses (integers beyond 64 bits)."""
    try:
        return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(value, separators=(",", ":"), default=str)


def loads(text: str | bytes) -> Any:
    try:
        return orjson.loads(text)
    except ValueError:  # what orjson does not read (NaN, integers beyond 64 bits)
        return json.loads(text)


def _encode_value(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return dumps(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    return value


def _encode(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v if type(v) in _PLAIN else _encode_value(v) for k, v in params.items()}


_Decoders = tuple[tuple[str, Callable[[Any], Any]], ...]


_ROW_PLANS: dict[str, tuple[tuple[str, ...], _Decoders]] = {}
"""Column names and decoders by statement: the same SQL gives the same columns (the cache is
emptied when the schema is upgraded)."""


def _row_plan(sql: str, description: Sequence[Any]) -> tuple[tuple[str, ...], _Decoders]:
    found = _ROW_PLANS.get(sql)
    if found is not None and len(found[0]) == len(description):
        return found
    names = tuple(d[0] for d in description)
    decoders: list[tuple[str, Callable[[Any], Any]]] = []
    for name in names:
        if name in JSON_COLUMNS:
            decoders.append((name, _json_value))
        elif name in BOOL_COLUMNS:
            decoders.append((name, bool))
        elif name in DECIMAL_COLUMNS:
            decoders.append((name, Decimal))
    if len(_ROW_PLANS) < 1024:  # dynamic statements (IN lists) stay few
        _ROW_PLANS[sql] = (names, tuple(decoders))
    return names, tuple(decoders)


def _json_value(value: Any) -> Any:
    return loads(value) if isinstance(value, str) else value
