"""Credits: the kinds of ledger entries and the fixed-point unit amounts are kept in. Pure: no I/O.

Amounts are in the unit of the tools' costs (``costingModel``: USD by convention). The ledger keeps
them as whole numbers of ``UNIT`` (10⁻⁸), so both stores add them up exactly in SQL (SQLite has no
exact decimal type: a NUMERIC column there is a float); in Python they are ``Decimal``.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from enum import StrEnum

UNIT = Decimal("0.00000001")
"""The smallest amount the ledger keeps; a cost is rounded to it (half to even)."""
MAX_AMOUNT = Decimal("1000000000")
"""The largest amount one entry may move (a grant of more is refused as a typo)."""


class LedgerKind(StrEnum):
    """What a ledger entry records. Each changes the balance (``amount``) and the amount held
    (``held``); what an account can spend is their difference."""

    GRANT = "grant"
    """Credits given to the account (``amount`` > 0)."""
    HOLD = "hold"
    """A run's estimate set aside at submit (``held`` > 0)."""
    CHARGE = "charge"
    """A generation's actual cost as it ends: taken from the balance and from its run's hold."""
    RELEASE = "release"
    """At a run's end, what is left of its hold (or, when it cost more, the excess) is settled."""
    REFUND = "refund"
    """Credits given back by an administrator (``amount`` > 0), e.g. for a run that went wrong."""


def to_units(amount: Decimal) -> int:
    """``amount`` in whole ``UNIT``s (rounded half to even)."""
    return int((amount / UNIT).to_integral_value(ROUND_HALF_EVEN))


def from_units(units: int) -> Decimal:
    return (Decimal(int(units)) * UNIT).normalize() if units else Decimal(0)


def money_text(amount: Decimal) -> str:
    """``12.5`` → ``"12.50"``, ``0.0125`` → ``"0.0125"``: at least two decimals, never an exponent."""
    text = format(amount.normalize(), "f")
    whole, _, decimals = text.partition(".")
    return f"{whole}.{decimals.ljust(2, '0')}"


def parse_amount(text: object, *, what: str = "the amount", positive: bool = True) -> Decimal:
    """A decimal amount from user input, or ``ValueError`` saying what is wrong with it."""
    if isinstance(text, bool) or text is None:
        raise ValueError(f"{what} must be a decimal number such as 10 or 2.50")
    try:
        value = Decimal(str(text).strip())
    except (InvalidOperation, ValueError):
        raise ValueError(f"{what} must be a decimal number such as 10 or 2.50, not {str(text)[:40]!r}") from None
    if not value.is_finite():
        raise ValueError(f"{what} must be a finite number")
    if positive and value <= 0:
        raise ValueError(f"{what} must be more than 0")
    if abs(value) > MAX_AMOUNT:
        raise ValueError(f"{what} may be at most {MAX_AMOUNT}")
    if value != value.quantize(UNIT, rounding=ROUND_HALF_EVEN):
        raise ValueError(f"{what} may have at most 8 decimals")
    return value
