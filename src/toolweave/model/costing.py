"""Costs that depend on a generation's inputs or on what its backend reported. Pure: no I/O.

``table_price`` answers before a run (so an estimate can use it); ``usage_cost`` reads a response.
The engine's own ``generation_cost`` covers the costing models that need neither (static, per
second, per output unit).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from toolweave.model.definitions import CostingModel, PriceTable, RateSource
from toolweave.model.paths import PathError, follow_path


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def table_price(table: PriceTable, inputs: Mapping[str, Any]) -> Decimal | None:
    """The price of one run with these inputs; None when the table lists no such combination and
    has no ``default``, or when it would be below 0 (a negative ``multiplyBy`` input)."""
    node: Any = table.prices
    for name in table.by:
        if not isinstance(node, Mapping):
            node = None
            break
        node = node.get(str(inputs.get(name)))
    price = _decimal(node) if not isinstance(node, Mapping) else None
    if price is None:
        price = table.default
    if price is None or price < 0:
        return None
    if table.multiply_by is not None:
        factor = _decimal(inputs.get(table.multiply_by))
        if factor is not None:
            if factor < 0:  # a count below 0 (the user's input) prices nothing: no price, not a credit
                return None
            price *= factor
    return price


def usage_cost(model: CostingModel, response: Any) -> Decimal | None:
    """The cost of a ``usage`` costing model from a response; None when it reports none of it."""
    total: Decimal | None = None
    for item in model.usage or []:
        try:
            amount = _decimal(follow_path(response, item.path))
        except PathError:
            amount = None
        if amount is None:
            continue
        total = (total or Decimal(0)) + amount * item.price / item.per
    return total


def input_cost(model: CostingModel | None, inputs: Mapping[str, Any]) -> Decimal | None:
    """A cost known from the inputs alone: static, or a price table. None otherwise."""
    if model is None:
        return None
    if model.rate_source is RateSource.STATIC and model.static_cost is not None:
        return model.static_cost.amount
    if model.rate_source is RateSource.TABLE and model.price_table is not None:
        return table_price(model.price_table, inputs)
    return None
