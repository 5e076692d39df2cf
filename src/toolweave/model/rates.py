"""Default per-second GPU rates (USD) by machine class, for machine-rate costing: a module of its
own so that settings can read them without loading the definition models."""

from __future__ import annotations

from decimal import Decimal

DEFAULT_GPU_RATES: dict[str, Decimal] = {
    "CPU": Decimal("0.0000520"),
    "T4": Decimal("0.00018"),
    "L4": Decimal("0.00032"),
    "A10G": Decimal("0.000337"),
    "L40S": Decimal("0.000596"),
    "A100": Decimal("0.00114"),
    "A100-80GB": Decimal("0.001708"),
    "H100": Decimal("0.002338"),
}
