"""Estimates before a run (``accounting.estimate``): each costing model, history and its fallback,
map steps, nested jobs, and the exact arithmetic of the ledger's units."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from toolweave.accounting.estimate import History, estimate
from toolweave.model.credits import from_units, money_text, parse_amount, to_units
from toolweave.model.definitions import JobDefinition, ToolDefinition

RATES = {"T4": Decimal("0.00018")}


def tool(tool_id: str, costing: dict[str, Any] | None, inputs: dict[str, Any] | None = None) -> ToolDefinition:
    return ToolDefinition.model_validate({
        "toolId": tool_id, "service": "builtin", "inputSchema": inputs or {"n": {"type": "integer", "default": 1}},
        "outputSchema": {"image": {"type": "image"}}, **({"costingModel": costing} if costing else {}),
    })


def one_step(t: ToolDefinition, **mapping: Any) -> JobDefinition:
    return JobDefinition.model_validate({
        "jobId": "j", "inputSchema": {"n": {"type": "integer", "default": 1}, "items": {"type": "json"}},
        "steps": [{"stepId": "s", "toolId": t.tool_id,
                   "inputMappings": [{"sourceJobInput": "n", "targetInputName": "n"}], **mapping}],
    })


def test_static_cost_is_its_amount() -> None:
    t = tool("t", {"rateSource": "static", "staticCost": {"amount": "0.0125"}})
    found = estimate(one_step(t), {"t": t}, {}, {"n": 1}, {}, RATES)
    assert found.total == Decimal("0.0125") and not found.unknown
    assert found.steps[0].basis == "static cost"


def test_machine_rate_uses_the_median_duration_of_past_generations() -> None:
    t = tool("t", {"rateSource": "machine", "machineClass": "T4"})
    rows = [{"duration_ms": ms, "cost_usd": None} for ms in (1000, 9000, 3000, 100000, 2000)]
    found = estimate(one_step(t), {"t": t}, {}, {"n": 1}, {"t": History.of(rows)}, RATES)
    assert found.total == Decimal("0.00018") * 3  # the median is 3 s, whatever the outlier
    assert "median duration 3 s of its last 5" in found.steps[0].basis


def test_machine_rate_without_history_uses_the_stated_fallback() -> None:
    t = tool("t", {"rateSource": "machine", "rate": "0.001"})
    found = estimate(one_step(t), {"t": t}, {}, {"n": 1}, {}, RATES, fallback_seconds=42)
    assert found.total == Decimal("0.042")
    assert "42 s (no history: setting estimate_fallback_seconds)" in found.steps[0].basis


def test_price_table_reads_the_inputs_the_step_is_given() -> None:
    t = tool("t", {"rateSource": "table", "priceTable": {"by": ["n"], "prices": {"1": "0.04", "4": "0.12"}}})
    assert estimate(one_step(t), {"t": t}, {}, {"n": 4}, {}, RATES).total == Decimal("0.12")
    assert estimate(one_step(t), {"t": t}, {}, {"n": 1}, {}, RATES).total == Decimal("0.04")
    missing = estimate(one_step(t), {"t": t}, {}, {"n": 7}, {}, RATES)
    assert missing.unknown and missing.total == 0


def test_usage_cost_is_the_median_of_past_costs_or_unknown() -> None:
    t = tool("t", {"rateSource": "usage", "usage": [{"path": "usage.tokens", "price": "0.00001"}]})
    none = estimate(one_step(t), {"t": t}, {}, {"n": 1}, {}, RATES)
    assert none.unknown and none.total == 0 and "reported by the service" in none.steps[0].basis
    rows = [{"duration_ms": 5, "cost_usd": Decimal(c)} for c in ("0.01", "0.03", "0.02")]
    known = estimate(one_step(t), {"t": t}, {}, {"n": 1}, {"t": History.of(rows)}, RATES)
    assert known.total == Decimal("0.02") and not known.unknown


def test_free_tool_costs_nothing_and_is_known() -> None:
    t = tool("t", None)
    found = estimate(one_step(t), {"t": t}, {}, {"n": 1}, {}, RATES)
    assert found.total == 0 and not found.unknown


def test_a_map_step_counts_each_item_of_a_job_input_list() -> None:
    t = tool("t", {"rateSource": "static", "staticCost": {"amount": "0.5"}})
    job = JobDefinition.model_validate({
        "jobId": "j", "inputSchema": {"items": {"type": "json"}},
        "steps": [{"stepId": "s", "toolId": "t", "map": {"over": {"sourceJobInput": "items"}},
                   "inputMappings": [{"sourceItem": True, "targetInputName": "n"}]}],
    })
    found = estimate(job, {"t": t}, {}, {"items": [1, 2, 3]}, {}, RATES)
    assert found.total == Decimal("1.5") and found.steps[0].calls == 3
    assert found.per_step() == {"s": "0.5"}  # a ceiling compares one item at a time


def test_a_chain_sums_its_steps_and_a_nested_job_counts_its_own() -> None:
    t = tool("t", {"rateSource": "static", "staticCost": {"amount": "0.25"}})
    inner = JobDefinition.model_validate({
        "jobId": "inner", "inputSchema": {"n": {"type": "integer", "default": 1}},
        "steps": [{"stepId": "a", "toolId": "t", "inputMappings": [{"sourceJobInput": "n", "targetInputName": "n"}]},
                  {"stepId": "b", "toolId": "t", "inputMappings": [{"sourceStepId": "a", "sourceOutputName": "image",
                                                                   "targetInputName": "n"}]}],
    })
    outer = JobDefinition.model_validate({
        "jobId": "outer", "inputSchema": {"n": {"type": "integer", "default": 1}},
        "steps": [{"stepId": "first", "toolId": "t", "inputMappings": [{"sourceJobInput": "n", "targetInputName": "n"}]},
                  {"stepId": "nest", "jobId": "inner", "inputMappings": [{"sourceJobInput": "n", "targetInputName": "n"}]}],
    })
    found = estimate(outer, {"t": t}, {"inner": inner}, {"n": 1}, {}, RATES)
    assert found.total == Decimal("0.75")
    assert [s.step_id for s in found.steps] == ["first", "nest/a", "nest/b"]
    assert found.per_step() == {"first": "0.25", "nest": "0.50"}


@pytest.mark.parametrize("text", ["0.1", "0.00000001", "12345.6789", "1000000000"])
def test_units_are_exact(text: str) -> None:
    amount = Decimal(text)
    assert from_units(to_units(amount)) == amount
    assert sum(from_units(to_units(Decimal("0.1"))) for _ in range(10)) == Decimal(1)  # never a float


@pytest.mark.parametrize(("text", "message"), [
    ("abc", "decimal number"), ("-1", "more than 0"), ("0", "more than 0"), ("NaN", "finite"),
    ("0.000000001", "at most 8 decimals"), ("1e12", "at most 1000000000"),
])
def test_bad_amounts_are_named(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_amount(text)


def test_money_text_never_has_an_exponent() -> None:
    assert money_text(Decimal("10")) == "10.00"
    assert money_text(Decimal("0.0125")) == "0.0125"
    assert money_text(Decimal("1E+3")) == "1000.00"
    assert money_text(Decimal("-2.5")) == "-2.50"
